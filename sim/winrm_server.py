"""A WS-Management (WinRM) endpoint that simulates Exchange servers on 127.0.0.1.

Real, unmodified pywinrm talks to it exactly as it talks to Windows, so the
bot's whole remote path - HTTP, NTLM authentication, NTLM message encryption,
the five SOAP calls of a command, output decoding and error handling - is
exercised by ``submitwatch demo``, the test suite and the benchmarks without a
Windows machine.

What is simulated (and why it is shaped this way):

* **One HTTP server, many Exchange servers.**  ``url_for("EX01")`` is
  ``http://127.0.0.1:PORT/EX01/wsman``; the path selects the simulated server.
  That keeps 500 simulated servers to one listening socket and a thread per
  *connection*, not per server.
* **Authentication.**  ``auth="ntlm"`` does the HTTP Negotiate handshake with
  pyspnego's NTLM acceptor and keeps the security context per TCP connection
  (NTLM authenticates connections, not requests).  Bodies must then be
  NTLM-sealed ``multipart/encrypted`` messages, as pywinrm sends over http by
  default; plaintext bodies are refused like a server with
  ``AllowUnencrypted=false`` does.  ``auth="kerberos"`` takes Kerberos only
  (tickets from a real KDC for ``HTTP/<service host>``, accepted with the keytab
  KRB5_KTNAME names, bodies Kerberos-sealed) and refuses NTLM, as a server whose
  domain turned NTLM off; ``auth="negotiate"`` takes either, by the token's kind
  (:mod:`sim.kerberos_server`).  ``auth="basic"`` checks HTTP Basic and
  accepts plaintext, like a lab server with Basic and AllowUnencrypted on.
* **Shells and commands.**  Create/Command/Receive/Signal/Delete with the
  responses pywinrm parses.  The shell codepage (``WINRS_CODEPAGE``) is
  honoured: output is encoded in that codepage with ``?`` for what it cannot
  represent, as Windows console programs do, so only a bot that asks for
  65001 gets non-ASCII account names intact.  Output is returned in chunks of
  ``chunk_size`` bytes over several Receive calls.
* **Commands.**  ``wevtutil gli`` and ``wevtutil qe`` against
  :class:`sim.eventlog.EventLog`; the command line goes through cmd.exe
  style checks and Windows argv splitting, so quoting mistakes show up.
  ``powershell ... -EncodedCommand <base64>`` carrying the bot's SMTP Receive
  protocol log read (bot/exchange/protocollog.py) is answered from the
  server's :class:`sim.protocollog.ProtocolLogWriter` folders, record for
  record as the script would print it (:func:`sim.protocollog.answer_read`);
  no other PowerShell is run.
* **Faults**, injected per server with :meth:`WinRMSimulator.inject`, and a
  per-request delay for latency in benchmarks.

The server side of NTLM (credentials, handshake, message encryption) lives in
:mod:`sim.ntlm_server`, the command line (cmd.exe, argv, ``wevtutil``) in
:mod:`sim.wevtutil`; this module is the HTTP and WS-Management layer.

NTLM caveat: pyspnego's acceptor reads users from the file named by the
``NTLM_USER_FILE`` environment variable, which is process-global.  Running
simulators share one generated file (see :func:`sim.ntlm_server.register_users`);
each simulator still only accepts its own users.  The variable is restored when
the last NTLM simulator stops.  Do not run an NTLM simulator in a process that
needs its own ``NTLM_USER_FILE``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import contextlib
import copy
import dataclasses
import ntpath
import re
import signal
import socket
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape, quoteattr

import defusedxml.ElementTree as SafeET

from sim.eventlog import EventLog, seed_demo
from sim.kerberos_server import KerberosConnection, is_ntlm_token
from sim.ntlm_server import (
    NtlmConnection,
    register_users,
    unregister_users,
)
from sim.protocollog import (
    DEFAULT_INSTALL_PATH,
    ProtocolLogWriter,
    answer_read,
    default_folder,
    demo_protocol_logs,
)
from sim.wevtutil import WindowsTraits, codec_for, run_encoded, split_windows_args

__all__ = [
    "DEFAULT_USER",
    "DEFAULT_PASSWORD",
    "FAULTS",
    "first_half",
    "OPERATION_TIMEOUT_CODE",
    "PROTOCOL_LOG_ROLES",
    "ProtocolLogs",
    "ServerStats",
    "WindowsTraits",
    "WinRMSimulator",
    "main",
]

DEFAULT_USER = "CONTOSO\\svc-submitwatch"
DEFAULT_PASSWORD = "Sim-Passw0rd!"

#: WSManFault code of "operation timed out" on Receive; pywinrm silently retries it.
OPERATION_TIMEOUT_CODE = 2150858793
#: WSManFault code of "the shell was not found on the server".
SHELL_NOT_FOUND_CODE = 2150858843
#: WSManFault code of "access denied": what Windows answers when RootSDDL does not let the account
#: use the cmd shell (pywinrm issues #336, #362).
ACCESS_DENIED_CODE = 5
#: WSManFault code of a quota violation; subcode w:QuotaLimit is what identifies it.
QUOTA_LIMIT_CODE = 2150859173
#: Code used for faults the simulator raises for requests it does not support (unsupported action,
#: resource URI or codepage).  Not a verified Windows code: do not make the bot depend on it.
_PLACEHOLDER_CODE = 2150858752

FaultName = Literal["unauthorized", "wsman_fault", "operation_timeout", "exit_code", "garbage", "invalid_text", "hang",
                    "flood"]

#: How a simulator authenticates: NTLM (Negotiate, message encryption required), Kerberos only
#: (a server whose domain refuses NTLM), either by the token's kind (Windows' default), Basic.
AUTHS = ("ntlm", "kerberos", "negotiate", "basic")
_NTLM_AUTHS = ("ntlm", "negotiate")

#: Fault name -> the WS-Man action that triggers it by default (None: the next SOAP request).
FAULTS: Mapping[str, str | None] = {
    "unauthorized": None,  # HTTP 401 without a challenge: pywinrm raises InvalidCredentialsError
    "wsman_fault": None,  # HTTP 500 + WSManFault "Access is denied." (code 5): WSManFaultError
    "operation_timeout": "Receive",  # HTTP 500 + WSManFault 2150858793: pywinrm retries the Receive
    "exit_code": "Command",  # the command exits 5 with CLIXML on stderr
    "garbage": "Command",  # stdout is a junk line followed by truncated XML
    "invalid_text": "Command",  # stdout carries bytes its encoding does not allow
    "hang": None,  # no answer until the client's read timeout fires
    "flood": "Command",  # after the events, ``bytes`` of padding stream without end in sight
}
_OUTPUT_FAULTS = frozenset({"exit_code", "garbage", "invalid_text", "flood"})
_VERBS = ("Create", "Command", "Receive", "Signal", "Delete")

# XML namespaces of WS-Management / WinRS.
NS_S = "http://www.w3.org/2003/05/soap-envelope"
NS_A = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_W = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
NS_RSP = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
NS_F = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"
RESOURCE_CMD = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
_ACTIONS = {
    "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create": "Create",
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command": "Command",
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive": "Receive",
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal": "Signal",
    "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete": "Delete",
}
_STATE_DONE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"
_STATE_RUNNING = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Running"

_SOAP_CONTENT_TYPE = "application/soap+xml;charset=UTF-8"

_MAX_BODY = 16 * 1024 * 1024
#: The transport services whose SMTP Receive protocol log folder a server can have.
PROTOCOL_LOG_ROLES = ("FrontEnd", "Hub")
#: What ``protocol_logs=`` takes per server: the FrontEnd folder's writer, or role -> writer.
ProtocolLogs = ProtocolLogWriter | Mapping[str, ProtocolLogWriter]
_POWERSHELL = ("powershell", "powershell.exe")
#: cmd.exe's operators and escape: a line holding one is left to the cmd.exe emulation.
_CMD_SPECIAL = frozenset("&|<>^")
_CLIXML_ACCESS_DENIED = (
    "#< CLIXML\r\n"
    '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
    '<S S="Error">Failed to read events. Access is denied._x000D__x000A_</S></Objs>'
)


# --------------------------------------------------------------------------------------------------
# Per-server state
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ServerStats:
    """What one simulated server saw.  :meth:`WinRMSimulator.stats` returns a snapshot copy."""

    http_requests: int = 0  # every HTTP request, handshake legs included
    connections: int = 0  # TCP connections that sent this server at least one request
    auth_successes: int = 0
    auth_failures: int = 0
    soap_requests: int = 0
    encrypted_requests: int = 0  # SOAP bodies that arrived NTLM-sealed
    unencrypted_requests: int = 0  # SOAP bodies that arrived in plaintext and were accepted
    rejected_unencrypted: int = 0  # plaintext bodies refused (AllowUnencrypted=false)
    actions: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    shells_created: int = 0
    shells_open: int = 0
    max_shells_open: int = 0
    commands_run: int = 0
    command_lines: list[str] = dataclasses.field(default_factory=list)  # the most recent 200
    codepages: list[int] = dataclasses.field(default_factory=list)  # per shell, the most recent 200
    idle_timeouts: list[float] = dataclasses.field(default_factory=list)  # per shell asked for, seconds
    shells_expired: int = 0  # shells the server deleted after their idle timeout
    quota_refusals: int = 0  # Create refused: the user had max_shells_per_user shells open
    stdout_bytes_sent: int = 0
    protocol_log_reads: int = 0  # the bot's protocol log reads answered (folder errors too)
    faults: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # injected faults fired


@dataclasses.dataclass
class _Fault:
    name: str
    remaining: int | None  # None: forever
    on: str | None  # WS-Man verb, or None for any
    params: dict[str, Any]


@dataclasses.dataclass
class _Command:
    id: str
    stdout: bytes
    stderr: bytes
    exit_code: int
    sent: int = 0  # stdout bytes already returned
    done: bool = False
    padding: bytes = b""  # the "flood" fault: this unit repeats after stdout ...
    padding_bytes: int = 0  # ... for this many bytes in all, produced as they are sent

    @property
    def length(self) -> int:
        return len(self.stdout) + self.padding_bytes

    def chunk(self, start: int, size: int) -> bytes:
        head = self.stdout[start : start + size]
        rest = min(size - len(head), self.length - start - len(head))
        if rest <= 0 or not self.padding:
            return head
        offset = max(0, start - len(self.stdout)) % len(self.padding)
        reps = (offset + rest) // len(self.padding) + 1
        return head + (self.padding * reps)[offset : offset + rest]


@dataclasses.dataclass
class _Shell:
    id: str
    codepage: int
    owner: str  # the authenticated user: MaxShellsPerUser counts per user
    idle_timeout: float  # seconds without a request after which the server deletes the shell
    last_used: float
    commands: dict[str, _Command] = dataclasses.field(default_factory=dict)


class _ServerState:
    """Everything about one simulated server; guarded by ``lock`` (the log has its own lock)."""

    _HISTORY = 200

    def __init__(self, name: str, log: EventLog) -> None:
        self.name = name
        self.log = log
        #: The host name its Kerberos service principal names (HTTP/<host>), and why the last
        #: Kerberos handshake failed, in the acceptor's words.
        self.service_host = f"{name.lower()}.contoso.local"
        self.last_auth_error = ""
        self.lock = threading.Lock()
        self.stats = ServerStats()
        self.shells: dict[str, _Shell] = {}
        self.faults: list[_Fault] = []
        self.request_delay: float | None = None  # None: the simulator's default
        self.chunk_size: int | None = None
        self.traits = WindowsTraits()
        self.root_sddl_allows = True  # False: the account is not in WinRM's RootSDDL
        self.max_shells_per_user = 30  # MS-WSMV's default MaxShellsPerUser
        self.default_idle_timeout = 7200.0  # seconds; what 2016+ servers report
        # SMTP Receive protocol logs: role -> (writer, its folder; None: under install_path).
        self.protocol_logs: dict[str, tuple[ProtocolLogWriter, str | None]] = {}
        self.install_path: str | None = DEFAULT_INSTALL_PATH  # ExchangeInstallPath (machine)
        self.protocol_log_denied: set[str] = set()  # roles whose folder the account cannot list

    def expire_shells(self, now: float) -> None:
        """Delete the shells idle for longer than their timeout, as WinRM does (under lock)."""
        for shell_id, shell in list(self.shells.items()):
            if now - shell.last_used > shell.idle_timeout:
                del self.shells[shell_id]
                self.stats.shells_open -= 1
                self.stats.shells_expired += 1

    def bump(self, **fields: int) -> None:
        with self.lock:
            for key, inc in fields.items():
                setattr(self.stats, key, getattr(self.stats, key) + inc)

    def take_fault(self, verb: str, kinds: Iterable[str]) -> _Fault | None:
        """Consume one pending fault of ``kinds`` that triggers on ``verb``."""
        kinds = set(kinds)
        with self.lock:
            for fault in self.faults:
                if fault.name in kinds and (fault.on is None or fault.on == verb):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self.faults.remove(fault)
                    self.stats.faults[fault.name] += 1
                    return fault
        return None


@dataclasses.dataclass
class _Outcome:
    """What to answer to one SOAP request."""

    status: int = 200
    body: bytes = b""
    special: Literal["hang", "unauthorized"] | None = None
    hang_seconds: float = 0.0


# --------------------------------------------------------------------------------------------------
# SOAP helpers
# --------------------------------------------------------------------------------------------------


def _envelope(action: str, relates_to: str, body: str) -> bytes:
    """A response envelope shaped like the ones Windows sends."""
    return (
        f'<s:Envelope xml:lang="en-US" xmlns:s="{NS_S}" xmlns:a="{NS_A}" '
        'xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" '
        f'xmlns:w="{NS_W}" xmlns:rsp="{NS_RSP}" xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd">'
        f"<s:Header><a:Action>{escape(action)}</a:Action>"
        f"<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>"
        "<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
        f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo></s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def _fault(
    relates_to: str,
    machine: str,
    *,
    wsman_code: int,
    reason: str,
    subcode: str = "w:InternalError",
    code: str = "s:Receiver",
    status: int = 500,
) -> _Outcome:
    body = (
        f"<s:Fault><s:Code><s:Value>{escape(code)}</s:Value>"
        f"<s:Subcode><s:Value>{escape(subcode)}</s:Value></s:Subcode></s:Code>"
        f'<s:Reason><s:Text xml:lang="en-US">{escape(reason)}</s:Text></s:Reason>'
        f'<s:Detail><f:WSManFault xmlns:f="{NS_F}" Code="{wsman_code}" Machine={quoteattr(machine)}>'
        f"<f:Message>{escape(reason)}</f:Message></f:WSManFault></s:Detail></s:Fault>"
    )
    return _Outcome(status, _envelope("http://schemas.dmtf.org/wbem/wsman/1/wsman/fault", relates_to, body))


def _refusal(state: _ServerState, verb: str | None, action: str, header: Element,
             message_id: str) -> _Outcome | None:
    """What the service refuses before any shell is looked at: an unknown action, a resource
    other than the cmd shell, an account that RootSDDL does not list."""
    machine = state.log.computer
    if verb is None:
        return _fault(message_id, machine, wsman_code=_PLACEHOLDER_CODE, subcode="a:ActionNotSupported",
                      code="s:Sender", reason=f"The action {action!r} is not supported by the simulator.")
    if _text(header.find(f"{{{NS_W}}}ResourceURI")) != RESOURCE_CMD:
        return _fault(message_id, machine, wsman_code=_PLACEHOLDER_CODE, subcode="w:DestinationUnreachable",
                      code="s:Sender", reason="The simulator only serves the WinRS cmd resource URI.")
    if not state.root_sddl_allows:
        # Authenticated, but RootSDDL (which governs the cmd shell) does not list the account.
        return _fault(message_id, machine, wsman_code=ACCESS_DENIED_CODE, subcode="w:AccessDenied",
                      code="s:Sender", reason="Access is denied. ")
    return None


def is_wide(stdout: bytes) -> bool:
    """Whether output holds wevtutil's /uni:true text (UTF-16LE), by its BOM or zero bytes."""
    return stdout[:2] == b"\xff\xfe" or b"<\x00" in stdout


def first_half(stdout: bytes) -> bytes:
    """The first half of a command's output (the "garbage" fault), cut between characters."""
    cut = len(stdout) // 2
    start = stdout.find(b"<\x00")  # where UTF-16 output starts, after any 8-bit gli text
    if 0 <= start < cut:
        cut -= (cut - start) % 2
    return stdout[:cut]


def _text(elem: Element | None) -> str:
    return (elem.text or "").strip() if elem is not None else ""


_XS_DURATION = re.compile(r"P(?:(\d+)D)?T?(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?")


def _duration_seconds(text: str) -> float | None:
    """An xs:duration such as ``PT120S`` or ``PT1H30M`` in seconds (None: not one)."""
    m = _XS_DURATION.fullmatch(text.strip())
    if not m or not any(m.groups()):
        return None
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in m.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


# --------------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------------


class WinRMSimulator:
    """A WS-Management endpoint on 127.0.0.1 serving any number of simulated Exchange servers.

    >>> with WinRMSimulator({"EX01": EventLog()}) as sim:           # doctest: +SKIP
    ...     p = winrm.Protocol(sim.url_for("EX01"), transport="ntlm",
    ...                        username=DEFAULT_USER, password=DEFAULT_PASSWORD)

    Parameters:
        logs: server name -> its Application log.  Names are matched case-insensitively.
        users: accepted ``DOMAIN\\user`` (or ``user@domain``) -> password.  No ``:`` or newlines.
        auth: ``"ntlm"`` (Negotiate, message encryption required) or ``"basic"``.
        request_delay: seconds to wait before answering each HTTP request (simulated latency).
        chunk_size: stdout bytes returned per Receive call.
        allow_unencrypted: accept plaintext SOAP bodies; default True for basic, False for ntlm.
        hang_seconds: how long the ``"hang"`` fault stalls (``stop()`` cuts it short).
        record_wire: keep the last 1000 request bodies as received in :attr:`wire_log`.
        port: TCP port, 0 for an ephemeral one.
        tls: serve HTTPS with this server-side SSL context (port 5986 style); plaintext SOAP
            bodies are then accepted, as Windows accepts them inside TLS.
        clock: seconds, monotonic; what shell idle timeouts and idle connections are measured
            with (tests pass one they move by hand).
        idle_connection_timeout: HTTP.sys closes a keep-alive connection idle this long (120 s
            by default on Windows); :meth:`sweep_idle_connections` does it, and a background
            sweep each ``sweep_every`` seconds of real time (None: only when called).
        protocol_logs: server name -> its SMTP Receive protocol log: a
            :class:`sim.protocollog.ProtocolLogWriter` for the Front End transport's folder, or
            ``{"FrontEnd": writer, "Hub": writer}``.  Each folder is at its default place under
            the server's ExchangeInstallPath (``C:\\Program Files\\Microsoft\\Exchange Server\\
            V15\\``; :meth:`set_install_path`), or where :meth:`set_protocol_log` puts it.
            Every name must be one of ``logs`` (``add_server`` replaces a server with none).
            The bot's read command is answered from them; the test keeps writing to the writers
            (``sim.protocollog.log_refusal``) while the simulator runs: each writer's own lock
            guards it, as each EventLog's guards the log.
    """

    def __init__(
        self,
        logs: Mapping[str, EventLog] | None = None,
        *,
        users: Mapping[str, str] | None = None,
        auth: Literal["ntlm", "kerberos", "negotiate", "basic"] = "ntlm",
        request_delay: float = 0.0,
        chunk_size: int = 64 * 1024,
        allow_unencrypted: bool | None = None,
        hang_seconds: float = 300.0,
        record_wire: bool = False,
        port: int = 0,
        tls: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
        idle_connection_timeout: float = 120.0,
        sweep_every: float | None = 1.0,
        protocol_logs: Mapping[str, ProtocolLogs] | None = None,
    ) -> None:
        if auth not in AUTHS:
            raise ValueError(f"auth must be one of {AUTHS}, not {auth!r}")
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        users = dict(users if users is not None else {DEFAULT_USER: DEFAULT_PASSWORD})
        for name, pw in users.items():
            if any(c in name + pw for c in ":\r\n") or not name:
                raise ValueError(f"user names and passwords may not be empty or contain ':' or newlines: {name!r}")
        self.users = users
        self._users_ci = {name.lower(): pw for name, pw in users.items()}
        self.auth = auth
        self.request_delay = float(request_delay)
        self.chunk_size = int(chunk_size)
        self.tls = tls
        if allow_unencrypted is None:
            allow_unencrypted = auth == "basic" or tls is not None
        self.allow_unencrypted = bool(allow_unencrypted)
        self.hang_seconds = float(hang_seconds)
        self.record_wire = record_wire
        #: (server, Content-Type, raw body) of recent requests, when ``record_wire`` is set.
        self.wire_log: collections.deque[tuple[str, str, bytes]] = collections.deque(maxlen=1000)
        self._port = port
        self.clock = clock
        self.idle_connection_timeout = float(idle_connection_timeout)
        self.sweep_every = sweep_every
        self._servers: dict[str, _ServerState] = {}
        self._servers_lock = threading.Lock()
        for name, log in (logs or {}).items():
            self.add_server(name, log)
        for name, value in (protocol_logs or {}).items():
            for role, writer in ({"FrontEnd": value} if isinstance(value, ProtocolLogWriter)
                                 else value).items():
                self.set_protocol_log(name, writer, role=role)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._conns: dict[socket.socket, list] = {}  # -> [last request's clock time, busy]
        self._conns_lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> WinRMSimulator:
        """Bind 127.0.0.1 and serve in a daemon thread.  Idempotent."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        if self.auth in _NTLM_AUTHS:
            register_users(id(self), self.users)
        try:
            httpd = _HTTPServer(("127.0.0.1", self._port), _Handler)
        except BaseException:
            if self.auth in _NTLM_AUTHS:
                unregister_users(id(self))
            raise
        httpd.simulator = self
        if self.tls is not None:
            httpd.socket = self.tls.wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"winrm-sim-{self.port}", daemon=True
        )
        self._thread.start()
        if self.sweep_every:
            threading.Thread(target=self._sweep_loop, name=f"winrm-sim-sweep-{self.port}", daemon=True).start()
        return self

    def _sweep_loop(self) -> None:
        while not self._stopping.wait(self.sweep_every):
            self.sweep_idle_connections()

    def sweep_idle_connections(self) -> int:
        """Close keep-alive connections idle for over ``idle_connection_timeout`` (by the
        simulator's clock), as HTTP.sys does; returns how many were closed."""
        now = self.clock()
        with self._conns_lock:
            idle = [conn for conn, (last, busy) in self._conns.items()
                    if not busy and now - last > self.idle_connection_timeout]
        for conn in idle:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return len(idle)

    def stop(self) -> None:
        """Stop serving, wake stalled requests and close every open connection.  Idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:  # idle keep-alive connections would otherwise outlive the server
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.auth in _NTLM_AUTHS:
            unregister_users(id(self))

    def __enter__(self) -> WinRMSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("simulator is not running")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    # -- servers ------------------------------------------------------------------------------------

    def add_server(self, name: str, log: EventLog | None = None) -> EventLog:
        """Add (or replace) a simulated server; returns its log.  Safe while running."""
        if not name or "/" in name:
            raise ValueError(f"invalid server name {name!r}")
        log = log if log is not None else EventLog(f"{name}.contoso.local")
        with self._servers_lock:
            self._servers[name.lower()] = _ServerState(name, log)
        return log

    @property
    def servers(self) -> list[str]:
        with self._servers_lock:
            return [s.name for s in self._servers.values()]

    def _state(self, server: str) -> _ServerState:
        with self._servers_lock:
            try:
                return self._servers[server.lower()]
            except KeyError:
                raise KeyError(f"unknown simulated server {server!r}") from None

    def log(self, server: str) -> EventLog:
        return self._state(server).log

    def url_for(self, server: str, host: str | None = None) -> str:
        """``http://127.0.0.1:PORT/<server>/wsman``: the endpoint pywinrm should use for ``server``
        (with ``host`` in place of 127.0.0.1: a name that resolves here, as Kerberos needs)."""
        state = self._state(server)
        base = self.base_url if host is None else self.base_url.replace("127.0.0.1", host, 1)
        return f"{base}/{quote(state.name, safe='')}/wsman"

    def set_service_host(self, server: str, host: str) -> None:
        """``server``'s Kerberos service is HTTP/``host``: its key must be in the keytab
        KRB5_KTNAME names (sim.kerberos_server)."""
        self._state(server).service_host = host

    def service_host(self, server: str) -> str:
        return self._state(server).service_host

    def last_auth_error(self, server: str) -> str:
        return self._state(server).last_auth_error

    # -- statistics ---------------------------------------------------------------------------------

    def stats(self, server: str) -> ServerStats:
        """A snapshot of what ``server`` has seen."""
        state = self._state(server)
        with state.lock:
            return copy.deepcopy(state.stats)

    def all_stats(self) -> dict[str, ServerStats]:
        return {name: self.stats(name) for name in self.servers}

    def reset_stats(self, server: str | None = None) -> None:
        """Zero the counters (``shells_open`` keeps counting the shells still open)."""
        for name in [server] if server else self.servers:
            state = self._state(name)
            with state.lock:
                state.stats = ServerStats(shells_open=len(state.shells), max_shells_open=len(state.shells))

    # -- fault injection and tuning -----------------------------------------------------------------

    def inject(self, server: str, fault: FaultName, times: int | None = 1, *, on: str | None = None, **params: Any) -> None:
        """Make ``server`` misbehave for its next ``times`` matching requests (``None``: until cleared).

        ``on`` restricts a transport fault to one WS-Man verb ("Create", "Command",
        "Receive", "Signal", "Delete", or "any"); the default is :data:`FAULTS`.
        Faults of output kind (exit_code, garbage, invalid_text, flood) always act on Command.
        Parameters:

        * ``wsman_fault``: ``code`` (WSManFault code, default 5), ``reason``
          (default "Access is denied."), ``subcode`` (default "w:AccessDenied").
        * ``hang``: ``seconds`` (default ``hang_seconds``).
        * ``exit_code``: ``code`` (default 5), ``stderr`` (default a CLIXML error record).
        * ``invalid_text``: ``payload`` (bytes inserted after the first ``<Data>``; default a lone
          surrogate in UTF-16 output, ``b"\\xff\\xfe\\xc3("`` in 8-bit output).
        * ``flood``: ``bytes`` of padding streamed after the events (default 500 MB, made as sent).
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {sorted(FAULTS)}")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        if fault in _OUTPUT_FAULTS:
            if on not in (None, "Command"):
                raise ValueError(f"{fault} changes command output and can only trigger on Command")
            trigger: str | None = "Command"
        elif on is None:
            trigger = FAULTS[fault]
        elif on == "any":
            trigger = None
        elif on in _VERBS:
            trigger = on
        else:
            raise ValueError(f"on must be one of {_VERBS} or 'any', not {on!r}")
        state = self._state(server)
        with state.lock:
            state.faults.append(_Fault(fault, times, trigger, dict(params)))

    def clear_faults(self, server: str | None = None) -> None:
        for name in [server] if server else self.servers:
            state = self._state(name)
            with state.lock:
                state.faults.clear()

    def pending_faults(self, server: str) -> list[str]:
        state = self._state(server)
        with state.lock:
            return [f.name for f in state.faults]

    def set_request_delay(self, server: str, seconds: float | None) -> None:
        """Per-server latency; ``None`` falls back to the simulator-wide ``request_delay``."""
        self._state(server).request_delay = seconds

    def set_traits(self, server: str, traits: WindowsTraits) -> None:
        """How this server writes command output (code pages, /uni, framing)."""
        with self._state(server).lock:
            self._state(server).traits = traits

    def deny_shell_access(self, server: str, denied: bool = True) -> None:
        """The account is not in WinRM's RootSDDL: it authenticates, and every request for the
        cmd shell is answered "Access is denied" (WS-Management fault 5), as Windows does."""
        self._state(server).root_sddl_allows = not denied

    def set_shell_quota(self, server: str, max_shells_per_user: int,
                        default_idle_timeout: float | None = None) -> None:
        """MaxShellsPerUser, and the idle timeout of shells that ask for none (seconds)."""
        state = self._state(server)
        state.max_shells_per_user = int(max_shells_per_user)
        if default_idle_timeout is not None:
            state.default_idle_timeout = float(default_idle_timeout)

    def open_shells(self, server: str) -> int:
        """Shells open on the server now (idle ones past their timeout are deleted first)."""
        state = self._state(server)
        with state.lock:
            state.expire_shells(self.clock())
            return len(state.shells)

    # -- SMTP Receive protocol logs -----------------------------------------------------------------

    def set_protocol_log(self, server: str, writer: ProtocolLogWriter | None, *,
                         role: str = "FrontEnd", folder: str | None = None) -> None:
        """Give ``server`` a protocol log folder for ``role`` ("FrontEnd" or "Hub") holding
        ``writer``'s files (None: the server has no such folder).  ``folder`` is where it is,
        as ``Set-FrontendTransportService -ReceiveProtocolLogPath`` (or ``Set-TransportService``)
        would put it; None: the default under ExchangeInstallPath.  Safe while running."""
        if role not in PROTOCOL_LOG_ROLES:
            raise ValueError(f"role must be one of {PROTOCOL_LOG_ROLES}, not {role!r}")
        if writer is not None and not isinstance(writer, ProtocolLogWriter):
            raise TypeError("a protocol log is a sim.protocollog.ProtocolLogWriter")
        state = self._state(server)
        with state.lock:
            if writer is None:
                state.protocol_logs.pop(role, None)
            else:
                state.protocol_logs[role] = (writer, folder)

    def protocol_log(self, server: str, role: str = "FrontEnd") -> ProtocolLogWriter | None:
        """The writer behind ``server``'s ``role`` folder (None: it has none)."""
        state = self._state(server)
        with state.lock:
            entry = state.protocol_logs.get(role)
        return entry[0] if entry else None

    def protocol_log_folder(self, server: str, role: str = "FrontEnd") -> str | None:
        """Where ``server``'s ``role`` folder is (None: it has none, or it is under an
        ExchangeInstallPath that is not set)."""
        state = self._state(server)
        with state.lock:
            entry, install = state.protocol_logs.get(role), state.install_path
        if entry is None:
            return None
        if entry[1] is not None:
            return entry[1]
        return default_folder(install, role) if install is not None else None

    def set_install_path(self, server: str, path: str | None) -> None:
        """The machine environment variable ExchangeInstallPath (None: not set); the default
        protocol log folders are under it."""
        state = self._state(server)
        with state.lock:
            state.install_path = path

    def deny_protocol_log(self, server: str, denied: bool = True, *,
                          role: str | None = None) -> None:
        """The account may not list ``server``'s protocol log folder (``role``; None: both):
        the read answers as the script does when Get-ChildItem fails, ``E - "Access to the path
        '<folder>' is denied."`` and ``X 0 error``.  ``denied=False`` grants it again."""
        roles = PROTOCOL_LOG_ROLES if role is None else (role,)
        if any(r not in PROTOCOL_LOG_ROLES for r in roles):
            raise ValueError(f"role must be one of {PROTOCOL_LOG_ROLES}, not {role!r}")
        state = self._state(server)
        with state.lock:
            if denied:
                state.protocol_log_denied.update(roles)
            else:
                state.protocol_log_denied.difference_update(roles)

    def set_chunk_size(self, server: str, size: int | None) -> None:
        """Per-server stdout bytes per Receive; ``None`` falls back to ``chunk_size``."""
        if size is not None and size < 1:
            raise ValueError("size must be >= 1")
        self._state(server).chunk_size = size

    # -- internals used by the handler --------------------------------------------------------------

    def _route(self, path: str) -> _ServerState | None:
        m = re.fullmatch(r"/([^/]+)/wsman/?", urlsplit(path).path, re.IGNORECASE)
        if not m:
            return None
        with self._servers_lock:
            return self._servers.get(unquote(m.group(1)).lower())

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _track(self, conn: socket.socket, alive: bool) -> None:
        with self._conns_lock:
            if alive:
                self._conns[conn] = [self.clock(), False]
            else:
                self._conns.pop(conn, None)

    def _busy(self, conn: socket.socket, busy: bool) -> None:
        with self._conns_lock:
            if conn in self._conns:
                self._conns[conn] = [self.clock(), busy]

    def _check_password(self, user: str, password: str) -> bool:
        expected = self._users_ci.get(user.lower())
        return expected is not None and expected == password

    def _knows_user(self, principal: str) -> bool:
        return principal.lower() in self._users_ci

    # -- SOAP dispatch ------------------------------------------------------------------------------

    def _dispatch(self, state: _ServerState, soap: bytes, user: str = "") -> _Outcome:
        """Answer one decrypted SOAP request from ``user``: an injected fault, a refusal, or
        the verb's answer (Create a shell; Delete, Command, Receive, Signal within one)."""
        try:
            root = SafeET.fromstring(soap)
        except Exception:  # malformed XML, or a DTD/entity trick defusedxml refuses
            return _Outcome(400, b"")
        header = root.find(f"{{{NS_S}}}Header")
        body = root.find(f"{{{NS_S}}}Body")
        if root.tag != f"{{{NS_S}}}Envelope" or header is None:
            return _Outcome(400, b"")
        action = _text(header.find(f"{{{NS_A}}}Action"))
        message_id = _text(header.find(f"{{{NS_A}}}MessageID"))
        verb = _ACTIONS.get(action)
        with state.lock:
            state.stats.soap_requests += 1
            state.stats.actions[verb or action] += 1
        refused = self._injected_fault(state, verb, message_id) or _refusal(
            state, verb, action, header, message_id)
        if refused is not None:
            return refused
        options = {
            opt.get("Name", ""): _text(opt)
            for opt in header.findall(f"{{{NS_W}}}OptionSet/{{{NS_W}}}Option")
        }
        now = self.clock()
        with state.lock:
            state.expire_shells(now)
        if verb == "Create":
            return self._create(state, message_id, options, body, user, now)
        return self._in_shell(state, verb or "", header, body, message_id, options, now)

    def _injected_fault(self, state: _ServerState, verb: str | None, message_id: str) -> _Outcome | None:
        """The answer of a transport fault a test injected for this verb, if one is pending."""
        fault = state.take_fault(verb or "", ("unauthorized", "wsman_fault", "operation_timeout", "hang"))
        if fault is None:
            return None
        machine = state.log.computer
        if fault.name == "hang":
            return _Outcome(special="hang", hang_seconds=float(fault.params.get("seconds", self.hang_seconds)))
        if fault.name == "unauthorized":
            return _Outcome(401, special="unauthorized")
        if fault.name == "operation_timeout":
            return _fault(message_id, machine, wsman_code=OPERATION_TIMEOUT_CODE, subcode="w:TimedOut",
                          reason="The WS-Management service cannot complete the operation within the time "
                          "specified in OperationTimeout.")
        return _fault(message_id, machine, wsman_code=int(fault.params.get("code", 5)),
                      subcode=str(fault.params.get("subcode", "w:AccessDenied")), code="s:Sender",
                      reason=str(fault.params.get("reason", "Access is denied.")))

    def _in_shell(self, state: _ServerState, verb: str, header: Element, body: Element | None,
                  message_id: str, options: Mapping[str, str], now: float) -> _Outcome:
        """Delete, Command, Receive or Signal: requests that name an open shell."""
        machine = state.log.computer
        shell_id = ""
        for sel in header.findall(f"{{{NS_W}}}SelectorSet/{{{NS_W}}}Selector"):
            if sel.get("Name") == "ShellId":
                shell_id = _text(sel)
        with state.lock:
            shell = state.shells.get(shell_id)
            if shell is not None:
                shell.last_used = now
        if shell is None:
            return _fault(
                message_id, machine, wsman_code=SHELL_NOT_FOUND_CODE, subcode="w:InvalidSelectors", code="s:Sender",
                reason=f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the shell was "
                "not found on the server. Possible causes are: the specified ShellId is incorrect or the shell no "
                "longer exists on the server. Provide the correct ShellId or create a new shell and retry the operation.",
            )
        if verb == "Delete":
            with state.lock:
                if state.shells.pop(shell_id, None) is not None:
                    state.stats.shells_open -= 1
            return _Outcome(200, _envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse", message_id, ""))
        if verb == "Command":
            return self._command(state, shell, message_id, options, body)
        return self._to_command(state, shell, verb, body, message_id)

    def _to_command(self, state: _ServerState, shell: _Shell, verb: str, body: Element | None,
                    message_id: str) -> _Outcome:
        """Receive and Signal, which address one command of the shell."""
        target = None
        if body is not None:
            path = f"{{{NS_RSP}}}Receive/{{{NS_RSP}}}DesiredStream" if verb == "Receive" else f"{{{NS_RSP}}}Signal"
            target = body.find(path)
        command_id = (target.get("CommandId") or "") if target is not None else ""
        with state.lock:
            command = shell.commands.get(command_id)
        if command is None:
            return _fault(message_id, state.log.computer, wsman_code=SHELL_NOT_FOUND_CODE,
                          subcode="w:InvalidSelectors", code="s:Sender",
                          reason=f"The command with CommandId {command_id!r} was not found in shell {shell.id}.")
        if verb == "Signal":
            with state.lock:
                shell.commands.pop(command_id, None)
            return _Outcome(200, _envelope("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SignalResponse",
                                           message_id, "<rsp:SignalResponse/>"))
        return self._receive(state, command, message_id)

    def _create(self, state: _ServerState, message_id: str, options: Mapping[str, str],
                body: Element | None, user: str, now: float) -> _Outcome:
        raw_codepage = options.get("WINRS_CODEPAGE", "437")
        codec = codec_for(int(raw_codepage)) if raw_codepage.isdigit() else None
        if codec is None:
            return _fault(message_id, state.log.computer, wsman_code=_PLACEHOLDER_CODE, subcode="w:InvalidOptions", code="s:Sender",
                          reason=f"The WinRS codepage {raw_codepage!r} is not valid.")
        asked = _text(body.find(f"{{{NS_RSP}}}Shell/{{{NS_RSP}}}IdleTimeOut")) if body is not None else ""
        idle_timeout = _duration_seconds(asked) if asked else state.default_idle_timeout
        if idle_timeout is None:
            return _fault(message_id, state.log.computer, wsman_code=_PLACEHOLDER_CODE, subcode="w:InvalidOptions", code="s:Sender",
                          reason=f"The IdleTimeOut {asked!r} is not a valid xs:duration.")
        shell = _Shell(str(uuid.uuid4()).upper(), int(raw_codepage), user.lower(), idle_timeout, now)
        with state.lock:
            mine = sum(1 for s in state.shells.values() if s.owner == shell.owner)
            if mine >= state.max_shells_per_user:
                state.stats.quota_refusals += 1
                quota = state.max_shells_per_user
            else:
                quota = None
                state.shells[shell.id] = shell
        if quota is not None:  # Windows' words for MaxShellsPerUser exceeded
            return _fault(message_id, state.log.computer, wsman_code=QUOTA_LIMIT_CODE, subcode="w:QuotaLimit",
                          code="s:Receiver", reason=(
                              "The WS-Management service cannot process the request. This user is allowed a "
                              f"maximum number of {quota} concurrent shells, which has been exceeded. Close "
                              "existing shells or raise the quota for this user. "))
        with state.lock:
            st = state.stats
            st.shells_created += 1
            st.shells_open += 1
            st.max_shells_open = max(st.max_shells_open, st.shells_open)
            st.codepages.append(shell.codepage)
            del st.codepages[: -_ServerState._HISTORY]
            st.idle_timeouts.append(idle_timeout)
            del st.idle_timeouts[: -_ServerState._HISTORY]
        body = (
            "<x:ResourceCreated>"
            f"<a:Address>http://{escape(state.log.computer)}:5985/wsman</a:Address>"
            f"<a:ReferenceParameters><w:ResourceURI>{RESOURCE_CMD}</w:ResourceURI>"
            f'<w:SelectorSet><w:Selector Name="ShellId">{shell.id}</w:Selector></w:SelectorSet>'
            "</a:ReferenceParameters></x:ResourceCreated>"
            f"<rsp:Shell><rsp:ShellId>{shell.id}</rsp:ShellId><rsp:ResourceUri>{RESOURCE_CMD}</rsp:ResourceUri>"
            f"<rsp:IdleTimeOut>PT{idle_timeout:.3f}S</rsp:IdleTimeOut><rsp:InputStreams>stdin</rsp:InputStreams>"
            "<rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>"
        )
        return _Outcome(200, _envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse", message_id, body))

    def _command(self, state: _ServerState, shell: _Shell, message_id: str, options: Mapping[str, str], body: Element | None) -> _Outcome:
        cmdline = body.find(f"{{{NS_RSP}}}CommandLine") if body is not None else None
        program = _text(cmdline.find(f"{{{NS_RSP}}}Command")) if cmdline is not None else ""
        arguments = [(a.text or "") for a in cmdline.findall(f"{{{NS_RSP}}}Arguments")] if cmdline is not None else []
        # WinRS joins Command and every Arguments element with spaces into one command line.
        line = " ".join([program, *arguments]) if arguments else program
        skip_cmd = options.get("WINRS_SKIP_CMD_SHELL", "FALSE").upper() == "TRUE"
        with state.lock:
            state.stats.commands_run += 1
            state.stats.command_lines.append(line)
            del state.stats.command_lines[: -_ServerState._HISTORY]

        argv = self._powershell_argv(line)
        if argv is not None:
            stdout, stderr, exit_code = self._read_protocol_log(state, argv)
        else:
            stdout, stderr, exit_code = run_encoded(state.log, line, codepage=shell.codepage, traits=state.traits,
                                                    skip_cmd_shell=skip_cmd)
        padding, padding_bytes = b"", 0

        fault = state.take_fault("Command", _OUTPUT_FAULTS)
        wide = is_wide(stdout)
        if fault is not None:
            if fault.name == "exit_code":
                stdout, exit_code = b"", int(fault.params.get("code", 5))
                stderr = str(fault.params.get("stderr", _CLIXML_ACCESS_DENIED)).encode("utf-8")
            elif fault.name == "garbage":
                junk = "\x1b[0m*** not XML: the quick brown fox ***\r\n".encode("utf-16-le" if wide else "ascii")
                stdout = junk + first_half(stdout)
            elif fault.name == "invalid_text":
                # In UTF-16 output the damage is a lone surrogate: bytes no decoder accepts.
                payload = bytes(fault.params.get("payload", b"\x00\xd8A\x00" if wide else b"\xff\xfe\xc3("))
                tag = "<Data>".encode("utf-16-le" if wide else "ascii")
                at = stdout.find(tag)
                at = 0 if at < 0 else at + len(tag)
                stdout = stdout[:at] + payload + stdout[at:]
            elif fault.name == "flood":
                end = stdout.rfind("</Events>".encode("utf-16-le" if wide else "ascii"))
                stdout = stdout[:end] if end >= 0 else stdout
                padding = " ".encode("utf-16-le" if wide else "ascii")
                padding_bytes = int(fault.params.get("bytes", 500 * 1024 * 1024))

        command = _Command(str(uuid.uuid4()).upper(), stdout, stderr, exit_code, padding=padding,
                           padding_bytes=padding_bytes)
        with state.lock:
            shell.commands[command.id] = command
        return _Outcome(200, _envelope(
            "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandResponse", message_id,
            f"<rsp:CommandResponse><rsp:CommandId>{command.id}</rsp:CommandId></rsp:CommandResponse>",
        ))

    @staticmethod
    def _powershell_argv(line: str) -> list[str] | None:
        """argv of ``powershell ... -EncodedCommand <base64>`` (None: any other command line,
        left to the cmd.exe and wevtutil emulation as before, which knows no powershell).  The
        encoded command is letters, digits, ``+/=``: cmd.exe passes such a line on unchanged,
        with or without it; a line with cmd.exe's operators is left to that emulation."""
        if any(ch in _CMD_SPECIAL for ch in line):
            return None
        argv = split_windows_args(line)
        if argv and ntpath.basename(argv[0]).lower() in _POWERSHELL and "-EncodedCommand" in argv[1:]:
            return argv
        return None

    def _read_protocol_log(self, state: _ServerState, argv: list[str]) -> tuple[bytes, bytes, int]:
        """The bot's protocol log read on this server: what the script prints on stdout (exit
        code 0, even when the folder cannot be read: the script says so in its records), or
        exit code 1 for a script the simulator does not know."""
        with state.lock:
            entries = dict(state.protocol_logs)
            install = state.install_path
            denied_roles = set(state.protocol_log_denied)
        folders: dict[str, Mapping[str, bytes]] = {}
        denied: list[str] = []
        writers: dict[int, ProtocolLogWriter] = {}
        for role, (writer, folder) in sorted(entries.items()):
            path = folder if folder is not None else (
                default_folder(install, role) if install is not None else None)
            if path is None:
                continue
            folders[path] = writer.files  # read in place, under the writer's lock (below)
            writers[id(writer)] = writer
            if role in denied_roles:
                denied.append(path)
        try:
            with contextlib.ExitStack() as held:
                for key in sorted(writers):  # one order, so two readers never deadlock
                    held.enter_context(writers[key].lock)
                stdout = answer_read(argv[0], argv[1:], folders, install_path=install, denied=denied)
        except ValueError as exc:
            return b"", (f"SubmitWatch simulator: only the protocol log read is run by powershell "
                         f"here ({exc}).\r\n").encode("ascii", "replace"), 1
        state.bump(protocol_log_reads=1)
        return stdout, b"", 0

    def _receive(self, state: _ServerState, command: _Command, message_id: str) -> _Outcome:
        chunk_size = state.chunk_size or self.chunk_size
        with state.lock:
            start = command.sent
            chunk = command.chunk(start, chunk_size)
            command.sent = start + len(chunk)
            state.stats.stdout_bytes_sent += len(chunk)
            finished = command.sent >= command.length
            first_done = finished and not command.done
            command.done = command.done or finished
        cid = command.id
        parts = []
        if chunk:
            parts.append(f'<rsp:Stream Name="stdout" CommandId="{cid}">{base64.b64encode(chunk).decode("ascii")}</rsp:Stream>')
        if finished:
            parts.append(f'<rsp:Stream Name="stdout" CommandId="{cid}" End="true"></rsp:Stream>')
            err = base64.b64encode(command.stderr).decode("ascii") if first_done else ""
            parts.append(f'<rsp:Stream Name="stderr" CommandId="{cid}" End="true">{err}</rsp:Stream>')
            parts.append(f'<rsp:CommandState CommandId="{cid}" State="{_STATE_DONE}"><rsp:ExitCode>{command.exit_code}</rsp:ExitCode></rsp:CommandState>')
        else:
            parts.append(f'<rsp:CommandState CommandId="{cid}" State="{_STATE_RUNNING}"/>')
        body = f'<rsp:ReceiveResponse SequenceID="0">{"".join(parts)}</rsp:ReceiveResponse>'
        return _Outcome(200, _envelope("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReceiveResponse", message_id, body))


# --------------------------------------------------------------------------------------------------
# HTTP layer
# --------------------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a stalled ("hang") request must never keep the process alive
    request_queue_size = 1024  # hundreds of simulated servers may connect at once
    simulator: WinRMSimulator


class _BadRequest(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    """One instance per TCP connection, so it can hold that connection's NTLM state."""

    protocol_version = "HTTP/1.1"  # keep-alive: NTLM authenticates the connection
    disable_nagle_algorithm = True  # otherwise small responses wait ~40 ms for delayed ACKs
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.sim = self.server.simulator
        self.sim._track(self.connection, True)
        # The connection's security context: NTLM's, or Kerberos' once a Kerberos token comes
        # (under Basic never authenticated, so sealed bodies are refused there).
        self._security: NtlmConnection | KerberosConnection = NtlmConnection()
        self._basic_user = ""
        self._seen: set[str] = set()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.sim._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # the simulator is a test fixture; request logs would drown test output

    # -- plumbing -----------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes = b"", headers: Iterable[tuple[str, str]] = (), close: bool = False) -> None:
        self.send_response(status)
        mutual = getattr(self._security, "mutual", None)
        if mutual and status < 400:   # Kerberos' AP-REP, once, on the answer after the handshake
            self.send_header("WWW-Authenticate", mutual)
            self._security.mutual = None
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        # Idle from now on, before the client can see the answer: a test that sweeps idle
        # connections right after a poll must find this one idle, not still busy.
        self.sim._busy(self.connection, False)
        if body:
            self.wfile.write(body)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise _BadRequest("chunked bodies are not supported")
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise _BadRequest("bad Content-Length") from None
        if length < 0 or length > _MAX_BODY:
            raise _BadRequest("bad Content-Length")
        return self.rfile.read(length) if length else b""

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        self.sim._busy(self.connection, True)
        try:
            self._post()
        except (ConnectionError, TimeoutError, OSError):
            self.close_connection = True  # the client went away (e.g. it timed out on a "hang")
        finally:
            self.sim._busy(self.connection, False)

    def _refuse(self) -> None:
        self._send(405, headers=[("Allow", "POST")])

    do_GET = do_PUT = do_DELETE = do_HEAD = do_PATCH = _refuse  # noqa: N815

    def _post(self) -> None:
        try:
            body = self._read_body()
        except _BadRequest:
            self._send(400, close=True)
            return
        state = self.sim._route(self.path)
        if state is None:
            self._send(404)
            return
        first = state.name not in self._seen
        self._seen.add(state.name)
        state.bump(http_requests=1, connections=int(first))
        self.sim._pause(state.request_delay if state.request_delay is not None else self.sim.request_delay)

        authenticated = self._basic_auth(state) if self.sim.auth == "basic" else self._negotiate_auth(state)
        if not authenticated:
            return  # the auth step has answered already
        if not body:
            self._send(200)  # pywinrm's empty POST that sets up message encryption
            return

        content_type = self.headers.get("Content-Type", "")
        encrypted = content_type.lower().startswith("multipart/encrypted")
        if self.sim.record_wire:
            self.sim.wire_log.append((state.name, content_type, body))
        if encrypted:
            if not self._security.authenticated or not any(
                    p.lower() in content_type.lower() for p in self._security.protocols):
                self._send(400, close=True)
                return
            try:
                soap = self._security.unseal(body, content_type)
            except Exception:  # bad framing, wrong signature, out-of-sequence message
                self._send(400, close=True)
                return
            state.bump(encrypted_requests=1)
        elif not self.sim.allow_unencrypted:
            state.bump(rejected_unencrypted=1)
            self._send(401, headers=self._challenge_headers())
            return
        else:
            soap = body
            state.bump(unencrypted_requests=1)

        outcome = self.sim._dispatch(state, soap, self._security.principal or self._basic_user)
        if outcome.special == "hang":
            self.sim._pause(outcome.hang_seconds)
            self.close_connection = True  # never answer; the client has long given up
            return
        if outcome.special == "unauthorized":
            self._security.forget()
            self._send(401, close=True)  # no challenge offered: the client cannot retry
            return
        if encrypted:
            self._send(outcome.status, self._security.seal(outcome.body),
                       [("Content-Type", self._security.content_type)])
        else:
            self._send(outcome.status, outcome.body, [("Content-Type", _SOAP_CONTENT_TYPE)] if outcome.body else [])

    # -- authentication -----------------------------------------------------------------------------

    def _challenge_headers(self, token: bytes | None = None) -> list[tuple[str, str]]:
        if self.sim.auth == "basic":
            return [("WWW-Authenticate", 'Basic realm="WSMAN"')]
        value = "Negotiate" + (" " + base64.b64encode(token).decode("ascii") if token else "")
        return [("WWW-Authenticate", value)]

    def _basic_auth(self, state: _ServerState) -> bool:
        scheme, _, blob = self.headers.get("Authorization", "").partition(" ")
        ok = False
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(blob.strip(), validate=True).decode("utf-8").partition(":")
                ok = self.sim._check_password(user, password)
            except (binascii.Error, UnicodeDecodeError):
                ok = False
        if ok:
            self._basic_user = user
            return True
        state.bump(auth_failures=1)
        self._send(401, headers=self._challenge_headers())
        return False

    def _negotiate_auth(self, state: _ServerState) -> bool:
        """One leg of the Negotiate handshake (see :meth:`NtlmConnection.authenticate` and
        :class:`sim.kerberos_server.KerberosConnection`); True to serve the request. Under
        ``auth="kerberos"`` an NTLM token is refused, as by a server whose domain turned NTLM
        off; under ``"negotiate"`` the token's kind picks the connection's mechanism."""
        authorization = self.headers.get("Authorization", "")
        if authorization and not self._security.authenticated and self.sim.auth != "ntlm" and (
                self.sim.auth == "kerberos" or not is_ntlm_token(authorization)):
            if not isinstance(self._security, KerberosConnection):
                self._security = KerberosConnection(self.sim.service_host(state.name))
        step = self._security.authenticate(authorization, self.sim._knows_user)
        if isinstance(self._security, KerberosConnection) and step.outcome == "failed":
            state.last_auth_error = self._security.last_error
        if step.outcome == "authenticated":
            state.bump(auth_successes=1)
        elif step.outcome == "failed":
            state.bump(auth_failures=1)
        if step.may_proceed:
            return True
        self._send(401, headers=self._challenge_headers(step.token))
        return False


# --------------------------------------------------------------------------------------------------
# python -m sim.winrm_server
# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Serve the demo logs until interrupted and print how to connect."""
    parser = argparse.ArgumentParser(prog="python -m sim.winrm_server", description=main.__doc__)
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default: any free port)")
    parser.add_argument("--auth", choices=list(AUTHS), default="ntlm",
                        help="kerberos and negotiate need KRB5_KTNAME naming the services' keytab")
    parser.add_argument("--user", default=DEFAULT_USER)
    parser.add_argument("--password", default=DEFAULT_PASSWORD)
    parser.add_argument("--servers", type=int, default=2, help="number of servers; EX01/EX02 hold the demo stream")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds of latency per HTTP request")
    args = parser.parse_args(argv)

    now = datetime.now(UTC)
    logs = seed_demo(None, now)
    for i in range(3, args.servers + 1):
        log = EventLog(f"EX{i:02d}.contoso.local")
        log.append_noise(20)
        logs[f"EX{i:02d}"] = log
    sim = WinRMSimulator(logs, users={args.user: args.password}, auth=args.auth, request_delay=args.delay, port=args.port,
                         protocol_logs=demo_protocol_logs(now))
    with sim:
        print(f"WinRM simulator ({args.auth}) on {sim.base_url}; user {args.user!r}, password {args.password!r}")
        for name in sim.servers[: args.servers]:
            print(f"  {name}: {sim.url_for(name)}  ({sim.log(name).count} records)")
        sys.stdout.flush()
        done = threading.Event()
        # SIGTERM too, so the NTLM credential file is removed when a supervisor stops us.
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        try:
            done.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
