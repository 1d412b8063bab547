"""Read 1018/1020 events from one Exchange server over WinRM, with real pywinrm.

One poll opens one remote shell, asks `wevtutil gli Application` how the log stands, then pages
through matching events with `wevtutil qe ... /uni:true` (raw XML in UTF-16LE, so every name
arrives exact whatever the server's code pages: bot/sources/decode.py), and closes the shell.

Shells never pile up on the server: each is opened with a short idle timeout, so one whose
Delete failed is gone within minutes instead of hours, and its deletion is tried once more at
the next poll. (WinRM refuses new shells past MaxShellsPerUser: 30 by default, fewer on some
servers; a leak per minute would stop every poll within half an hour.)

One command's output is bounded in bytes (polling.max_output) and in time (the read deadline
covers the whole output, not only each operation timeout): past either, reading stops, the
command is terminated, and what arrived is returned marked as cut, so the complete events before
the cut are kept and the cursor moves only past them.

The authenticated, encrypted HTTP connection is kept from one poll to the next: NTLM
authenticates a connection, and doing it again every poll cost three of nine round trips, the
client's CPU, and a logon event on the server each minute. HTTP.sys drops a connection idle for
120 s; the next poll then authenticates once on a new one, silently.
Every failure becomes a SourceError whose message a person can act on, with anything the server
said made inert (bot/sources/decode.py).
"""
from __future__ import annotations

import math
import re
import time
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
from winrm.exceptions import (
    InvalidCredentialsError,
    WinRMError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)
from winrm.protocol import Protocol

from bot.core import kerberos
from bot.core.config import PollingConfig, ServerConfig
from bot.core.model import EVENT_IDS, PROVIDERS, Problem
from bot.sources import decode as output
from bot.sources.base import Answer, SourceError
from bot.sources.parse import LogInfo, ParseFailure, parse_log_info

#: The shell's code page: what stderr and cmd.exe's own messages are written in. The events
#: themselves are asked for in UTF-16 (/uni:true), which no code page setting affects.
UTF8_CODEPAGE = 65001
#: A shell left behind (its Delete failed) is deleted by the server after this long without a
#: request. Longer than any wait inside one poll (see idle_timeout), far below WinRM's default.
SHELL_IDLE_TIMEOUT = 120
#: HTTP.sys closes a connection idle for 120 s (its default IdleConnectionTimeout). A connection
#: kept longer than this is not tried: sent on a closed connection, a request is answered 401,
#: requests_ntlm signs in again and resends a body sealed for the old connection, which fails,
#: and a new connection signs in once more. Starting afresh costs one sign-in instead of two.
KEEP_IDLE_LIMIT = 110.0
#: Where Windows keeps the ANSI code page (value ACP), read only when output is not UTF-16/UTF-8.
NLS_KEY = "HKLM\\SYSTEM\\CurrentControlSet\\Control\\Nls\\CodePage"
SETUP_DOC = "docs/windows-setup.md"
_CLIXML_TEXT = re.compile(r"<S S=\"Error\">(.*?)</S>", re.S)
_ACCESS_DENIED = 5
#: The transports pywinrm's Protocol takes (bot.core.config allows some of them: config.TRANSPORTS).
WinRMTransport = typing.Literal["auto", "basic", "certificate", "ntlm", "kerberos", "credssp",
                                "plaintext", "ssl"]


def event_query(cursor: int, lookback_ms: int | None = None) -> str:
    """The XPath for new submit-permission events above the cursor.

    Provider and ID are filtered together: ID 1020 is reused by unrelated providers.
    """
    providers = " or ".join(f"@Name='{p}'" for p in PROVIDERS)
    ids = " or ".join(f"EventID={i}" for i in EVENT_IDS)
    query = f"Provider[{providers}] and ({ids}) and EventRecordID > {int(cursor)}"
    if lookback_ms is not None:
        query += f" and TimeCreated[timediff(@SystemTime) <= {int(lookback_ms)}]"
    return f"*[System[{query}]]"


def _is_winrm_transport(name: str) -> typing.TypeGuard[WinRMTransport]:
    return name in typing.get_args(WinRMTransport)


@dataclass
class WinRMSource:
    """Opens shells on one server, one poll at a time, keeping the authenticated connection
    between polls (one source per server; polls of one server never overlap)."""

    server: ServerConfig
    polling: PollingConfig
    clock: Callable[[], float] = time.monotonic
    _kept: Protocol | None = field(default=None, repr=False, compare=False)
    _kept_at: float = field(default=0.0, repr=False, compare=False)
    #: Shells whose Delete failed: deleted once more at the next poll (they expire anyway).
    leftover_shells: list[str] = field(default_factory=list, repr=False, compare=False)
    #: The server's ANSI code page, read once, only if its output is neither UTF-16 nor UTF-8
    #: (None: not asked yet; 0: asked, and it could not be read).
    ansi_codepage: int | None = field(default=None, repr=False, compare=False)

    def open(self) -> Shell:
        with _explained(self.server):
            protocol, self._kept = self._kept, None
            if protocol is not None and self.clock() - self._kept_at > KEEP_IDLE_LIMIT:
                protocol.transport.close_session()  # the server has closed it by now
                protocol = None
            if protocol is not None:
                try:
                    return self._shell(protocol)
                except Exception:  # the server closed the kept connection: authenticate anew
                    protocol.transport.close_session()
            return self._shell(self._protocol())

    def _shell(self, protocol: Protocol) -> Shell:
        self._delete_leftovers(protocol)   # first: they may be what keeps the quota full
        return self.make_shell(protocol, protocol.open_shell(
            codepage=UTF8_CODEPAGE, noprofile=True, idle_timeout=f"PT{self.idle_timeout()}S"))

    def make_shell(self, protocol: Protocol, shell_id: str) -> Shell:
        return Shell(self, protocol, shell_id)

    def idle_timeout(self) -> int:
        # The longest pause between two requests on a shell is one Receive's read timeout.
        return max(SHELL_IDLE_TIMEOUT, int(math.ceil(2 * self.polling.read_timeout)))

    def _delete_leftovers(self, protocol: Protocol) -> None:
        leftovers, self.leftover_shells = self.leftover_shells, []
        for shell_id in leftovers:
            try:
                protocol.close_shell(shell_id, close_session=False)
            except Exception:  # expired already, or still failing: its idle timeout ends it
                pass

    def origin_of(self, computer: str) -> str | None:
        """Every event in an Exchange server's own log was logged by that server."""
        return self.server.name

    def _ticket(self) -> None:
        """SubmitWatch's Kerberos ticket in this process's cache, renewed when near its end:
        pywinrm's Kerberos transport asks the cache (KRB5CCNAME) for a service ticket for
        HTTP/<the url's host>, and speaks Kerberos only, never NTLM."""
        if self.server.kerberos is None:   # bot.core.config gives every Kerberos server one
            raise SourceError(f"{self.server.name}: transport 'kerberos' has no [kerberos] "
                              "identity", retryable=False)
        try:
            kerberos.login_for(self.server.kerberos).ensure(self.server.url)
        except kerberos.KerberosError as exc:
            raise SourceError(f"{self.server.name}: {exc}") from None

    def mechanism(self) -> str:
        """How this source signs in, for `check`: the mechanism and as whom."""
        if self.server.transport == "kerberos" and self.server.kerberos is not None:
            host = urlsplit(self.server.url).hostname or "?"
            return (f"Kerberos as {self.server.kerberos.principal} for HTTP/{host}, "
                    "message encryption on")
        names = {"ntlm": "NTLM", "credssp": "CredSSP", "basic": "Basic",
                 "certificate": "a client certificate"}
        how = names.get(self.server.transport, self.server.transport)
        sealed = ", message encryption on" if self.server.transport in ("ntlm", "credssp") else ""
        return f"{how} as {self.server.username or '(certificate)'}{sealed}"

    def keep(self, protocol: Protocol) -> None:
        """A poll went well: keep its connection for the next one."""
        self._kept, self._kept_at = protocol, self.clock()

    def _protocol(self) -> Protocol:
        transport = self.server.transport
        if not _is_winrm_transport(transport):   # bot.core.config allows only known ones
            raise SourceError(f"{self.server.name}: pywinrm has no transport {transport!r}")
        if transport == "kerberos":
            self._ticket()
        protocol = Protocol(
            endpoint=self.server.url,
            transport=transport,
            username=self.server.username or None,
            password=self.server.password.reveal() if self.server.password else None,
            server_cert_validation="validate" if self.server.validate_certificate else "ignore",
            # None: the certifi bundle, not env variables. pywinrm reads None so (transport.py:
            # `self.ca_trust_path is not None`) but annotates the parameter without it.
            ca_trust_path=self.server.ca_bundle,  # type: ignore[arg-type]
            cert_pem=self.server.cert_pem,
            cert_key_pem=self.server.cert_key_pem,
            # pywinrm wants whole seconds, the read timeout strictly longer.
            operation_timeout_sec=int(math.ceil(self.polling.operation_timeout)),
            read_timeout_sec=int(math.ceil(self.polling.operation_timeout)) + max(
                1, int(math.ceil(self.polling.read_timeout - self.polling.operation_timeout))),
            # Never pick up a proxy from the environment: WinRM goes straight to the server.
            proxy=None,
        )
        # requests would still scan the environment for proxy settings on every request (a
        # tenth of a poll's CPU); this session never uses one. Building the session here also
        # authenticates, as the first request would.
        protocol.transport.build_session().trust_env = False
        return protocol


class Shell:
    """One open remote shell; use as a context manager so it is always closed."""

    def __init__(self, source: WinRMSource, protocol: Protocol, shell_id: str):
        self.source = source
        self.protocol = protocol
        self.shell_id = shell_id

    def __enter__(self) -> Shell:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        try:  # pywinrm would close the connection too; keep it for the next poll
            self.protocol.close_shell(self.shell_id, close_session=False)
        except Exception:  # never mask the real error; the shell is deleted next time or expires
            self.source.leftover_shells = [*self.source.leftover_shells, self.shell_id][-10:]
            self.protocol.transport.close_session()
            return
        if exc_type is None:
            self.source.keep(self.protocol)
        else:  # after a failure, the next poll starts from a fresh connection
            self.protocol.transport.close_session()

    def log_info(self) -> LogInfo:
        return self._log_info(self.run("wevtutil", ["gli", self.source.server.log])[0])

    def query(self, cursor: int, batch_size: int, lookback_ms: int | None = None) -> Answer:
        """Up to batch_size matching events above the cursor, oldest first, decoded."""
        return self._answer(*self.run("wevtutil", self._query_args(cursor, batch_size,
                                                                    lookback_ms)))

    def log_info_and_query(self, cursor: int, batch_size: int,
                           lookback_ms: int | None = None) -> tuple[LogInfo, Answer]:
        """`gli` then the first `qe` in one command line (cmd.exe runs `a & b` in order): the
        log's state is still read before its events, in one round trip instead of two."""
        out, cut = self.run("wevtutil", ["gli", self.source.server.log, "&", "wevtutil",
                                         *self._query_args(cursor, batch_size, lookback_ms)])
        split = output.xml_start(out)  # gli prints plain "name: value" lines; the events are XML
        return self._log_info(out[:split]), self._answer(out[split:], cut)

    def _query_args(self, cursor: int, batch_size: int, lookback_ms: int | None) -> list[str]:
        return query_args(self.source.server.log, cursor, batch_size, lookback_ms)

    def _answer(self, raw: bytes, cut: str | None) -> Answer:
        name = self.source.server.name
        text, problems, encoding = output.decode(raw, name, self.ansi_codepage,
                                                 partial=cut is not None)
        if cut is not None:
            problems.append(Problem(name, "output_cut", cut))
        return Answer(text, problems, cut, encoding)

    def ansi_codepage(self) -> int | None:
        """The server's ANSI code page, asked once (`reg query`, read-only) and remembered,
        as is a failure to read it (None then)."""
        if self.source.ansi_codepage is None:
            try:
                out, _ = self.run("reg", ["query", NLS_KEY, "/v", "ACP"])
                found = output.parse_acp(out.decode("ascii", errors="replace"))
            except SourceError:
                found = None
            self.source.ansi_codepage = found or 0
        return self.source.ansi_codepage or None

    def _log_info(self, out: bytes) -> LogInfo:
        try:
            return parse_log_info(out.decode("utf-8", errors="replace").lstrip("\ufeff"))
        except ParseFailure as exc:
            raise SourceError(f"{self.source.server.name}: {exc}") from None

    def run(self, command: str, args: list[str]) -> tuple[bytes, str | None]:
        """Run one command: (stdout, why it was cut off or None); SourceError when it failed."""
        name = self.source.server.name
        with _explained(self.source.server):
            command_id = self.protocol.run_command(self.shell_id, command, args)
            try:
                stdout, stderr, code, cut = self._output(command_id)
            except BaseException:
                self._terminate(command_id)
                raise
        if cut is not None:  # the command may still be writing: stop it, keep what arrived
            self._terminate(command_id)
            return stdout, cut
        if code != 0:
            raise SourceError(f"{name}: `{command} {args[0]}` failed with exit code {code}: "
                              f"{_stderr_text(stderr)}{_exit_hint(command, code)}")
        return stdout, None

    def _terminate(self, command_id: str) -> None:
        """Signal a command that may still be running to stop. (A finished one is released with
        its shell, which every poll deletes right after: skipping that Signal saves two of a
        poll's eleven HTTP round trips, docs/benchmarks.md.)"""
        try:
            self.protocol.cleanup_command(self.shell_id, command_id)
        except Exception:  # the shell's deletion, or its idle timeout, ends the command too
            pass

    def _output(self, command_id: str) -> tuple[bytes, bytes, int, str | None]:
        """Like pywinrm's get_command_output, but bounded: it gives up after a deadline instead
        of retrying operation timeouts forever (a wedged server must not wedge its poll job),
        and stops reading at polling.max_output bytes or when the deadline passes while output
        still streams (the fourth value says why; the caller keeps what arrived)."""
        polling = self.source.polling
        limit = polling.read_timeout + 2 * polling.operation_timeout
        deadline = self.source.clock() + limit
        late = (f"the server was still sending after {limit:g}s (polling.read_timeout plus "
                "twice polling.operation_timeout); SubmitWatch kept the complete events that "
                "arrived and reads on from there next time")
        out: list[bytes] = []
        err: list[bytes] = []
        size = 0
        while True:
            try:
                stdout, stderr, code, done = self.protocol.get_command_output_raw(
                    self.shell_id, command_id)
            except WinRMOperationTimeoutError:
                if self.source.clock() > deadline and size:
                    return b"".join(out), b"".join(err), 0, late
                if self.source.clock() > deadline:
                    raise SourceError(f"{self.source.server.name}: the command produced no "
                                      f"output for over {polling.read_timeout:g}s; the server "
                                      "may be overloaded") from None
                continue
            out.append(stdout)
            err.append(stderr)
            size += len(stdout)
            if done:
                return b"".join(out), b"".join(err), code, None
            if size > polling.max_output:
                return b"".join(out)[:polling.max_output], b"".join(err), 0, (
                    f"the server sent more than {polling.max_output:,} bytes for one query "
                    "(polling.max_output); SubmitWatch kept the complete events before that "
                    "point and reads on from there next time")
            if self.source.clock() > deadline:
                return b"".join(out), b"".join(err), 0, late


def query_args(log: str, cursor: int, batch_size: int, lookback_ms: int | None) -> list[str]:
    """wevtutil's arguments for one page of events (the log name is checked by bot.core.config)."""
    return ["qe", log, f'/q:"{event_query(cursor, lookback_ms)}"', "/f:xml",
            f"/c:{int(batch_size)}", "/e:Events", "/rd:false", "/uni:true"]


def _exit_hint(command: str, code: int) -> str:
    if command == "wevtutil" and code == _ACCESS_DENIED:
        return (". The account may not read the event log: add it to the local group "
                f"'Event Log Readers' (S-1-5-32-573) on this server ({SETUP_DOC})")
    return ""


@contextmanager
def _explained(server: ServerConfig) -> Iterator[None]:
    """Turn pywinrm/requests exceptions into SourceErrors that say what to do."""
    try:
        yield
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(f"{server.name}: {explain(exc, server)}",
                          retryable=not isinstance(exc, InvalidCredentialsError)) from None


def explain(exc: BaseException, server: ServerConfig) -> str:
    url = server.url
    if server.transport == "kerberos":
        said = _kerberos_failure(exc, server)
        if said:
            return said
    if isinstance(exc, PermissionError) and "NTLM challenge" in str(exc):
        # requests_ntlm's words when the server answers an NTLM token with a bare 401
        return (f"{url} refused NTLM (it answered SubmitWatch's NTLM token with no challenge): "
                "the server, or its domain, takes Kerberos only. Use transport 'kerberos' with a "
                "[kerberos] identity (docs/kerberos.md)")
    if isinstance(exc, InvalidCredentialsError):
        return (f"the server refused the credentials of '{server.username}' (HTTP 401) at {url}. "
                f"Check the password in {server.password_env or 'the configured variable'}, that "
                f"transport {server.transport!r} is enabled on the WinRM listener, and that the "
                "account is in 'Event Log Readers' and 'Remote Management Users'")
    if isinstance(exc, requests.exceptions.SSLError):
        return (f"TLS to {url} failed ({_short(exc)}). Install the CA that issued the server's "
                "certificate and point ca_bundle at it; turning validate_certificate off is a "
                "last resort")
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"connecting to {url} timed out: check the host name, port and firewall"
    if isinstance(exc, requests.exceptions.Timeout):
        return (f"{url} did not answer before polling.read_timeout ran out: the server may be "
                "overloaded or the network slow")
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = _short(exc)
        if "Name or service not known" in text or "getaddrinfo" in text or "NameResolution" in text:
            return f"the host name in {url} does not resolve (DNS): check servers.url"
        if "refused" in text.lower():
            return (f"connection to {url} refused: is WinRM listening there "
                    "(`winrm enumerate winrm/config/listener`) and the port open?")
        return f"cannot reach {url}: {text}"
    if isinstance(exc, WSManFaultError):
        if exc.wsman_fault_code == _ACCESS_DENIED:
            return (f"WinRM let '{server.username}' sign in but refused its command-shell request "
                    "(WS-Management fault 5, Access is denied). pywinrm runs commands in the "
                    "WinRS cmd shell, which WinRM's RootSDDL governs, and its default allows only "
                    "Administrators and Interactive Users. Add the account to 'Remote Management "
                    "Users' (S-1-5-32-580) and give that group Read and Execute in RootSDDL: "
                    f"contrib/windows/Grant-SubmitWatchAccess.ps1 does both ({SETUP_DOC})")
        if (exc.fault_subcode or "").endswith("QuotaLimit"):
            return (f"WinRM refused a new shell: '{server.username}' has as many shells open as "
                    "its quota allows (MaxShellsPerUser; the server said: "
                    f"{(exc.reason or '').strip()[:200]}). SubmitWatch's own shells expire "
                    "within minutes (their idle timeout), so if this lasts, something else uses "
                    "this account's shells: give SubmitWatch its own account, or raise the quota "
                    "above what `winrm get winrm/config/winrs` shows (`winrm set "
                    "winrm/config/winrs @{MaxShellsPerUser=\"50\"}`)")
        return (f"the WinRM service answered with a fault (HTTP {exc.code}, WSManFault "
                f"{exc.wsman_fault_code}): {(exc.reason or '').strip()[:300]}")
    if isinstance(exc, WinRMTransportError):
        return f"unexpected HTTP {exc.code} from {url}: {exc.response_text[:200]!r}"
    if isinstance(exc, WinRMError):
        return f"WinRM error: {_short(exc)}"
    return f"{type(exc).__name__}: {_short(exc)}"


def _kerberos_failure(exc: BaseException, server: ServerConfig) -> str | None:
    """A Kerberos connection's failure in words: the client's GSSAPI error (no ticket to be
    had for HTTP/<host>: pywinrm raises it unwrapped), or the server refusing the ticket."""
    url = server.url
    host = urlsplit(url).hostname or "?"
    text = str(exc)
    if type(exc).__name__ in ("KerberosExchangeError", "GSSError") or "authGSSClient" in text:
        return kerberos.in_words(text, server.kerberos, service=f"HTTP/{host}", host=url)
    if isinstance(exc, InvalidCredentialsError):
        return (f"{host} refused SubmitWatch's Kerberos ticket (HTTP 401) at {url}. Either its "
                f"clock is more than 5 minutes off ({kerberos.clocks(url)}), or the keys of "
                f"HTTP/{host} changed since the ticket was issued (its account's password), or "
                "the server does not take Kerberos on this listener (`winrm get "
                "winrm/config/service/auth`), or the account is not in 'Remote Management "
                "Users' there")
    return None


def _short(exc: BaseException) -> str:
    return str(exc).replace("\n", " ")[:300]


def _stderr_text(stderr: bytes) -> str:
    """stderr, with PowerShell's CLIXML error records reduced to their text."""
    text = stderr.decode("utf-8", errors="replace").strip()
    if text.startswith("#< CLIXML"):
        parts = _CLIXML_TEXT.findall(text)
        text = ("".join(parts).replace("_x000D__x000A_", " ").strip()
                or "(error record without text)")
    return text[:300] or "(nothing on stderr)"
