"""Read 1018/1020 events from one Exchange server over WinRM, with real pywinrm.

One poll opens one remote shell (codepage 65001, so non-ASCII account names arrive intact), asks
`wevtutil gli Application` how the log stands, then pages through matching events with
`wevtutil qe` (raw XML, no PowerShell start-up on the Exchange server), and closes the shell.
The authenticated, encrypted HTTP connection is kept from one poll to the next: NTLM
authenticates a connection, and doing it again every poll cost three of nine round trips, the
client's CPU, and a logon event on the server each minute.
Every failure becomes a SourceError whose message a person can act on.
"""
from __future__ import annotations

import math
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import requests
from winrm.exceptions import (InvalidCredentialsError, WinRMError, WinRMOperationTimeoutError,
                              WinRMTransportError, WSManFaultError)
from winrm.protocol import Protocol

from .config import PollingConfig, ServerConfig
from .model import EVENT_IDS, PROVIDERS
from .parse import LogInfo, ParseFailure, parse_log_info

UTF8_CODEPAGE = 65001
LOG = "Application"
_CLIXML_TEXT = re.compile(r"<S S=\"Error\">(.*?)</S>", re.S)


class SourceError(Exception):
    """Polling a server failed. `retryable` says whether trying again later can help."""

    def __init__(self, message: str, *, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


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


@dataclass
class WinRMSource:
    """Opens shells on one server, one poll at a time, keeping the authenticated connection
    between polls (one source per server; polls of one server never overlap)."""

    server: ServerConfig
    polling: PollingConfig
    clock: Callable[[], float] = time.monotonic
    _kept: Protocol | None = field(default=None, repr=False, compare=False)

    def open(self) -> "Shell":
        with _explained(self.server):
            protocol, self._kept = self._kept, None
            if protocol is not None:
                try:
                    return Shell(self, protocol, self._open_shell(protocol))
                except Exception:  # the server closed the kept connection: authenticate anew
                    protocol.transport.close_session()
            protocol = self._protocol()
            return Shell(self, protocol, self._open_shell(protocol))

    def _open_shell(self, protocol: Protocol) -> str:
        return protocol.open_shell(codepage=UTF8_CODEPAGE, noprofile=True)

    def keep(self, protocol: Protocol) -> None:
        """A poll went well: keep its connection for the next one."""
        self._kept = protocol

    def _protocol(self) -> Protocol:
        protocol = Protocol(
            endpoint=self.server.url,
            transport=self.server.transport,
            username=self.server.username or None,
            password=self.server.password.reveal() if self.server.password else None,
            server_cert_validation="validate" if self.server.validate_certificate else "ignore",
            ca_trust_path=self.server.ca_bundle,  # None: the certifi bundle, not env variables
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

    def __enter__(self) -> "Shell":
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        try:  # pywinrm would close the connection too; keep it for the next poll
            self.protocol.close_shell(self.shell_id, close_session=False)
        except Exception:  # the shell times out on the server anyway; never mask the real error
            self.protocol.transport.close_session()
            return
        if exc_type is None:
            self.source.keep(self.protocol)
        else:  # after a failure, the next poll starts from a fresh connection
            self.protocol.transport.close_session()

    def log_info(self) -> LogInfo:
        return self._log_info(self.run("wevtutil", ["gli", LOG]))

    def query(self, cursor: int, batch_size: int, lookback_ms: int | None = None) -> bytes:
        """Up to batch_size matching events above the cursor, oldest first, as raw XML bytes."""
        return self.run("wevtutil", _query_args(cursor, batch_size, lookback_ms))

    def log_info_and_query(self, cursor: int, batch_size: int,
                           lookback_ms: int | None = None) -> tuple[LogInfo, bytes]:
        """`gli` then the first `qe` in one command line (cmd.exe runs `a & b` in order): the
        log's state is still read before its events, in one round trip instead of two."""
        out = self.run("wevtutil", ["gli", LOG, "&", "wevtutil",
                                    *_query_args(cursor, batch_size, lookback_ms)])
        split = out.find(b"<")  # gli prints plain "name: value" lines; the events are XML
        if split < 0:
            return self._log_info(out), b""
        return self._log_info(out[:split]), out[split:]

    def _log_info(self, out: bytes) -> LogInfo:
        try:
            return parse_log_info(out.decode("utf-8", errors="replace"))
        except ParseFailure as exc:
            raise SourceError(f"{self.source.server.name}: {exc}") from None

    def run(self, command: str, args: list[str]) -> bytes:
        """Run one command; return stdout, or raise SourceError when it failed."""
        name = self.source.server.name
        with _explained(self.source.server):
            command_id = self.protocol.run_command(self.shell_id, command, args)
            try:
                stdout, stderr, code = self._output(command_id)
            except BaseException:
                # Only a command that may still be running needs a terminate Signal. A finished
                # one is released with its shell, which every poll deletes right after: skipping
                # that Signal saves two of a poll's eleven HTTP round trips (docs/benchmarks.md).
                try:
                    self.protocol.cleanup_command(self.shell_id, command_id)
                except Exception:
                    pass
                raise
        if code != 0:
            raise SourceError(f"{name}: `{command} {args[0]}` failed with exit code {code}: "
                              f"{_stderr_text(stderr)}")
        return stdout

    def _output(self, command_id: str) -> tuple[bytes, bytes, int]:
        """Like pywinrm's get_command_output, but gives up after a deadline instead of
        retrying operation timeouts forever (a wedged server must not wedge its poll job)."""
        polling = self.source.polling
        deadline = self.source.clock() + polling.read_timeout + 2 * polling.operation_timeout
        out, err = [], []
        while True:
            try:
                stdout, stderr, code, done = self.protocol.get_command_output_raw(
                    self.shell_id, command_id)
            except WinRMOperationTimeoutError:
                if self.source.clock() > deadline:
                    raise SourceError(f"{self.source.server.name}: the command produced no "
                                      f"output for over {polling.read_timeout:g}s; the server "
                                      "may be overloaded") from None
                continue
            out.append(stdout)
            err.append(stderr)
            if done:
                return b"".join(out), b"".join(err), code


def _query_args(cursor: int, batch_size: int, lookback_ms: int | None) -> list[str]:
    return ["qe", LOG, f'/q:"{event_query(cursor, lookback_ms)}"', "/f:xml",
            f"/c:{int(batch_size)}", "/e:Events", "/rd:false"]


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
    if isinstance(exc, InvalidCredentialsError):
        return (f"the server refused the credentials of {server.username!r} (HTTP 401) at {url}. "
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
        return (f"the WinRM service answered with a fault (HTTP {exc.code}, WSManFault "
                f"{exc.wsman_fault_code}): {(exc.reason or '').strip()[:300]}")
    if isinstance(exc, WinRMTransportError):
        return f"unexpected HTTP {exc.code} from {url}: {exc.response_text[:200]!r}"
    if isinstance(exc, WinRMError):
        return f"WinRM error: {_short(exc)}"
    return f"{type(exc).__name__}: {_short(exc)}"


def _short(exc: BaseException) -> str:
    return str(exc).replace("\n", " ")[:300]


def _stderr_text(stderr: bytes) -> str:
    """stderr, with PowerShell's CLIXML error records reduced to their text."""
    text = stderr.decode("utf-8", errors="replace").strip()
    if text.startswith("#< CLIXML"):
        parts = _CLIXML_TEXT.findall(text)
        text = "".join(parts).replace("_x000D__x000A_", " ").strip() or "(error record without text)"
    return text[:300] or "(nothing on stderr)"
