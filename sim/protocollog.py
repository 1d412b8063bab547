"""Simulated SMTP Receive protocol logs of Exchange transport services.

The data side of the device look-up (bot/exchange/protocollog.py): it writes protocol log files
byte for byte as Exchange 2013's code does (PiratesRE/exchange_diff, Microsoft.Exchange.
Diagnostics `Log`, `LogDirectory`, `LogHeaderFormatter`, `Utf8Csv`; Microsoft.Exchange.Transport
`ProtocolLog`, `ProtocolLogSession`, `AuthCommandHelpers`; DOMAIN.md section 7):

* a file per UTC hour, `RECV<yyyyMMddHH>-<n>.LOG`, chosen by the time a row is *written*
  (Exchange stamps a row when it is queued and writes it on a background timer, so a row
  stamped 10:59:59.9 may land in the 11:00 file); a new instance `-<n+1>` once the file passed
  its size bound (checked before each row, so the row that crosses the bound stays in the old
  file); a UTF-8 byte-order mark and the `#Software`, `#Version`, `#Log-type`, `#Date`,
  `#Fields` lines at the start of each new file (an existing file is appended to without them);
* rows in CRLF, fields escaped as `Utf8Csv.Escape` does: a field holding `,` or `"` is quoted,
  `"` doubled; CR and LF become the two characters `\\r` and `\\n` (without quoting); a
  backslash is left alone; `data` is the client's raw bytes;
* sessions as Verbose logging shows them: connect (`+`), permissions (`*`), banner (`>`),
  EHLO (`<`, the client's own text), AUTH, the failure line (`*`, empty data, the text in
  context), `535 5.7.3` and disconnect (`-`); a connector whose ProtocolLoggingLevel is None
  writes nothing (by default only `Default Frontend <SRV>` logs, at Verbose).

It also answers the bot's read command (`answer_read`): it decodes the `-EncodedCommand`
script the bot sends, takes its parameters, and does what the script does over these files,
record for record, so the remote read can be tested end to end without PowerShell
(sim/winrm_server.py answers it over WS-Management with this).

Pure Python, no I/O except `save`. A writer guards its files with its own ``lock`` (an RLock,
as an EventLog guards its records): writing and reading it from several threads is safe, and a
reader that holds ``writer.lock`` may read ``writer.files`` in place (the simulator does, so a
200 MB folder is not copied per read).
"""

from __future__ import annotations

import base64
import ipaddress
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sim.eventlog import EventLog, SimEvent, demo_stream

__all__ = [
    "DEFAULT_INSTALL_PATH",
    "DEMO_DEVICES",
    "FIELDS",
    "FAILURE_TEXT",
    "ProtocolLogWriter",
    "ReadParams",
    "answer_read",
    "csv_field",
    "decode_read_command",
    "default_folder",
    "demo_protocol_logs",
    "emulate_read",
    "endpoint_text",
    "log_refusal",
    "receive_file_name",
]

FIELDS = ("date-time", "connector-id", "session-id", "sequence-number", "local-endpoint",
          "remote-endpoint", "event", "data", "context")
#: The failure texts (AuthCommandHelpers), `{0}` being the (possibly redacted) user.
FAILURE_TEXT = {
    1018: "Inbound authentication failed because the client {0} doesn't have submit permission.",
    1020: "Inbound authentication failed as we reject well-known account authentication for {0}",
}
LOG_TYPE = "SMTP Receive Protocol Log"
DEFAULT_MAX_FILE_BYTES = 10 * 1024 * 1024
#: Local ports of the default Receive connectors (DOMAIN.md section 6), by name prefix.
_PORTS = (("Default Frontend", 25), ("Client Frontend", 587), ("Outbound Proxy Frontend", 717),
          ("Client Proxy", 465), ("Default", 2525))
_BOM = b"\xef\xbb\xbf"
#: The machine environment variable ExchangeInstallPath on a 2013-2019 server (it ends in `\`).
DEFAULT_INSTALL_PATH = "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\"


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (got naive {value!r})")
    return value.astimezone(UTC)


def _stamp(value: datetime) -> str:
    """`yyyy-MM-ddTHH:mm:ss.fffZ`, as LogRowFormatter writes a DateTime."""
    value = _aware(value, "time")
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def receive_file_name(hour: datetime, instance: int = 1) -> str:
    return f"RECV{_aware(hour, 'hour'):%Y%m%d%H}-{instance}.LOG"


def csv_field(value: str | bytes | None) -> bytes:
    """One field as Utf8Csv.Escape(bytes, escapeLineBreaks=true) writes it."""
    if value is None:
        return b""
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    quote = b"," in raw or b'"' in raw
    raw = raw.replace(b'"', b'""').replace(b"\r", b"\\r").replace(b"\n", b"\\n")
    return b'"' + raw + b'"' if quote else raw


def endpoint_text(address: str, port: int) -> str:
    """.NET IPEndPoint.ToString(): `10.0.0.1:25`, `[2001:db8::1]:25`."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return f"[{address}]:{port}" if ip.version == 6 else f"{address}:{port}"


@dataclass
class _Open:
    name: str
    hour: datetime


class ProtocolLogWriter:
    """The SMTP Receive protocol log folder of one transport service on one server.

    ``logging`` maps connector names (bare, ``Client Frontend EX01``) to their
    ProtocolLoggingLevel, "Verbose" or "None"; a connector not in it has Exchange's default
    (Verbose for ``Default Frontend <SRV>``, None for every other). ``max_file_bytes`` is the
    per-file size bound (ReceiveProtocolLogMaxFileSize, 10 MB by default).
    """

    def __init__(self, server: str = "EX01", *, fqdn: str | None = None,
                 max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
                 version: str = "15.2.1118.7",
                 logging: Mapping[str, str] | None = None,
                 local_address: str = "10.0.0.10",
                 first_session: int = 0x08DE5C2A1B000000) -> None:
        if max_file_bytes < 1:
            raise ValueError("max_file_bytes must be positive")
        self.server = server
        self.fqdn = fqdn or f"{server}.contoso.local"
        self.max_file_bytes = max_file_bytes
        self.version = version
        self.logging = dict(logging or {})
        self.local_address = local_address
        self.files: dict[str, bytearray] = {}
        self._open: _Open | None = None
        self._next_session = first_session
        #: Held while the files change (and by a reader that reads ``files`` in place).
        self.lock = threading.RLock()

    # -- configuration -------------------------------------------------------------------------

    def logging_level(self, connector: str) -> str:
        name = connector.rpartition("\\")[2]
        if name in self.logging:
            return self.logging[name]
        return "Verbose" if name == f"Default Frontend {self.server}" else "None"

    def set_logging(self, connector: str, level: str) -> None:
        """Like ``Set-ReceiveConnector <id> -ProtocolLoggingLevel <level>``."""
        if level not in ("Verbose", "None"):
            raise ValueError("ProtocolLoggingLevel is Verbose or None")
        with self.lock:
            self.logging[connector.rpartition("\\")[2]] = level

    def connector_id(self, connector: str) -> str:
        return connector if "\\" in connector else f"{self.server}\\{connector}"

    def local_endpoint(self, connector: str) -> str:
        name = connector.rpartition("\\")[2]
        port = next((p for prefix, p in _PORTS if name.startswith(prefix)), 25)
        return endpoint_text(self.local_address, port)

    # -- writing -------------------------------------------------------------------------------

    def _file_for(self, written: datetime) -> str:
        hour = written.replace(minute=0, second=0, microsecond=0)
        current = self._open
        if current is not None and current.hour == hour \
                and len(self.files[current.name]) <= self.max_file_bytes:
            return current.name
        # LogDirectory.GenerateLogFileId: the series' last file, unless it reached the bound.
        instances = [int(n.split("-")[1].split(".")[0]) for n in self.files
                     if n.startswith(f"RECV{hour:%Y%m%d%H}-")]
        instance = max(instances, default=0)
        fresh = not instances or len(self.files[receive_file_name(hour, instance)]) \
            >= self.max_file_bytes
        name = receive_file_name(hour, instance + 1 if fresh else instance)
        if fresh:
            self.files[name] = bytearray(_BOM + self._header(written))
        self._open = _Open(name, hour)
        return name

    def _header(self, written: datetime) -> bytes:
        return (f"#Software: Microsoft Exchange Server\r\n#Version: {self.version}\r\n"
                f"#Log-type: {LOG_TYPE}\r\n#Date: {_stamp(written)}\r\n"
                f"#Fields: {','.join(FIELDS)}\r\n").encode("ascii")

    def write_row(self, time: datetime, connector: str, session: str, sequence: int,
                  local: str, remote: str, event: str, data: str | bytes | None = None,
                  context: str | None = None, *, written: datetime | None = None) -> str:
        """Append one row; returns the file it went to. ``written`` is when the background
        writer wrote it (default: its own time), which decides the file."""
        time = _aware(time, "time")
        written = _aware(written, "written") if written is not None else time
        row = b",".join([_stamp(time).encode("ascii"), csv_field(self.connector_id(connector)),
                         csv_field(session), str(sequence).encode("ascii"), csv_field(local),
                         csv_field(remote), event.encode("ascii"), csv_field(data),
                         csv_field(context)])
        with self.lock:
            name = self._file_for(written)
            self.files[name] += row + b"\r\n"
        return name

    def write_raw(self, raw: bytes, *, written: datetime) -> str:
        """Append bytes verbatim (a malformed or cut line) to the file for ``written``."""
        with self.lock:
            name = self._file_for(_aware(written, "written"))
            self.files[name] += raw
        return name

    def write_filler(self, time: datetime, total_bytes: int, *,
                     connector: str | None = None, row_bytes: int = 8192) -> int:
        """Other clients' traffic that is no failure, about ``total_bytes`` of it, stamped and
        written at ``time`` (rolling over into new files at the size bound, as Exchange does):
        rows of ``row_bytes`` each, so a test can fill a folder with hundreds of MB in a
        fraction of a second. (Real rows are shorter: an SMTP line is at most 1,000 octets; what
        is read and skipped is the same.) Returns the bytes written."""
        if not 200 <= row_bytes <= 60_000:
            raise ValueError("row_bytes must be between 200 and 60,000")
        name = connector or f"Default Frontend {self.server}"
        local = self.local_endpoint(name)
        session = self.new_session_id()
        head = len(self._filler_row(time, name, session, 0, local, b""))
        payload = b"X-Filler " + b"x" * max(0, row_bytes - head - 11)
        written, seq = 0, 0
        with self.lock:
            while written < total_bytes:
                row = self._filler_row(time, name, session, seq, local, payload)
                self.files[self._file_for(_aware(time, "time"))] += row
                written += len(row)
                seq += 1
        return written

    def _filler_row(self, time: datetime, connector: str, session: str, seq: int,
                         local: str, payload: bytes) -> bytes:
        """One filler row's bytes (see write_filler): a client's command line, event `<`."""
        return b",".join([_stamp(time).encode("ascii"), csv_field(self.connector_id(connector)),
                          session.encode("ascii"), str(seq).encode("ascii"), csv_field(local),
                          b"192.0.2.1:40000", b"<", payload, b""]) + b"\r\n"

    def new_session_id(self) -> str:
        with self.lock:
            self._next_session += 1
            return f"{self._next_session:016X}"

    def failed_auth(self, time: datetime, connector: str, remote: str | tuple[str, int], *,
                    event_id: int, user: str, ehlo: str | bytes = "mfp.contoso.local",
                    mechanism: str = "LOGIN", session: str | None = None,
                    written: datetime | None = None,
                    attempts: int = 1) -> str | None:
        """One SMTP session that authenticates with valid credentials and is refused (1018 or
        1020), as Verbose logging writes it; the failure line is stamped ``time`` (and
        ``attempts`` failures retry AUTH in the same session, a second apart). Returns the
        session-id, or None when the connector does not log (nothing is written)."""
        if event_id not in FAILURE_TEXT:
            raise ValueError("a refusal is event 1018 or 1020")
        with self.lock:     # one session's rows together (a reader sees all of them or none)
            return self._failed_auth(time, connector, remote, event_id=event_id, user=user,
                                     ehlo=ehlo, mechanism=mechanism, session=session,
                                     written=written, attempts=attempts)

    def _failed_auth(self, time: datetime, connector: str, remote: str | tuple[str, int], *,
                     event_id: int, user: str, ehlo: str | bytes, mechanism: str,
                     session: str | None, written: datetime | None,
                     attempts: int) -> str | None:
        if self.logging_level(connector) != "Verbose":
            return None
        time = _aware(time, "time")
        lag = (_aware(written, "written") - time) if written is not None else timedelta(0)
        session = session or self.new_session_id()
        if isinstance(remote, tuple):
            remote = endpoint_text(*remote)
        local = self.local_endpoint(connector)
        seq = 0

        def row(at: datetime, event: str, data: str | bytes | None = None,
                context: str | None = None) -> None:
            nonlocal seq
            self.write_row(at, connector, session, seq, local, remote, event, data, context,
                           written=at + lag)
            seq += 1

        start = time - timedelta(milliseconds=180)
        row(start, "+")
        row(start, "*", "SMTPSubmit SMTPAcceptAnySender SMTPAcceptAuthoritativeDomainSender "
            "AcceptRoutingHeaders", "Set Session Permissions")
        row(start, ">", f"220 {self.fqdn} Microsoft ESMTP MAIL Service ready at "
            f"{start:%a, %d %b %Y %H:%M:%S} +0000")
        row(start + timedelta(milliseconds=20), "<",
            (b"EHLO " + ehlo) if isinstance(ehlo, bytes) else f"EHLO {ehlo}")
        for text in (f"250-{self.fqdn} Hello [{remote.rpartition(':')[0].strip('[]')}]",
                     "250-SIZE 37748736", "250-PIPELINING", "250-8BITMIME", "250-STARTTLS",
                     "250-AUTH GSSAPI NTLM LOGIN", "250 CHUNKING"):
            row(start + timedelta(milliseconds=20), ">", text)
        for attempt in range(attempts):
            at = time + timedelta(seconds=attempt)
            row(at - timedelta(milliseconds=60), "<", f"AUTH {mechanism}")
            row(at - timedelta(milliseconds=60), ">", "334 <authentication response>")
            row(at - timedelta(milliseconds=40), "<", "<authentication response>")
            row(at, "*", None, FAILURE_TEXT[event_id].format(user))
            row(at, ">", "535 5.7.3 Authentication unsuccessful")
        row(time + timedelta(seconds=attempts - 1, milliseconds=15), "-", None, "Remote(SocketError)")
        return session

    # -- reading -------------------------------------------------------------------------------

    def names(self) -> list[str]:
        with self.lock:
            return list(self.files)

    def file_bytes(self, name: str) -> bytes:
        with self.lock:
            return bytes(self.files[name])

    def snapshot(self) -> dict[str, bytes]:
        with self.lock:
            return {name: bytes(data) for name, data in self.files.items()}

    def total_bytes(self) -> int:
        with self.lock:
            return sum(len(data) for data in self.files.values())

    def save(self, folder: str | Path) -> list[Path]:
        """Write the files into ``folder`` (created if missing); returns their paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, data in self.snapshot().items():
            path = folder / name
            path.write_bytes(data)
            paths.append(path)
        return paths


def log_refusal(log: EventLog, writer: ProtocolLogWriter, event_id: int, account: str,
                remote: str | tuple[str, int], *, connector: str | None = None,
                provider: str = "MSExchangeFrontEndTransport", time: datetime | None = None,
                user: str | None = None, ehlo: str | bytes = "mfp.contoso.local",
                written: datetime | None = None) -> tuple[SimEvent, str | None]:
    """A refusal as Exchange's one code path makes it: the event in the Application log
    (``log``, a :class:`sim.eventlog.EventLog`) and the failure line in the protocol log, both
    at the same time. ``user`` is what the line names (default: the account; pass a redacted
    form or "" to hide it). Returns (the SimEvent, the session-id or None)."""
    when = _aware(time, "time") if time is not None else _aware(log.now(), "log.now()")
    name = connector if connector is not None else f"Client Frontend {writer.server}"
    event = log.append_refusal(event_id, account, name, provider=provider, time=when)
    session = writer.failed_auth(when, name, remote, event_id=event_id,
                                 user=account if user is None else user, ehlo=ehlo,
                                 written=written)
    return event, session


# --------------------------------------------------------------------------------------------
# The read command, as the server would run it
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadParams:
    """What the bot's read script asks for, taken from its parameter lines."""

    folder: str | None          # a literal folder; None: the ExchangeInstallPath expression
    role: str | None            # FrontEnd or Hub, for the ExchangeInstallPath expression
    max_bytes: int
    max_output: int
    max_seconds: float
    cursors: dict[str, tuple[int, int]]   # series (RECV<hour or day>) -> (instance, offset)
    hours: tuple[str, ...]      # yyyyMMddHH
    days: tuple[str, ...]       # yyyyMMdd


_LITERAL = r"'(?:[^'\u2018\u2019\u201a\u201b]|['\u2018\u2019\u201a\u201b]{2})*'"
_PARAMS = re.compile(
    r"\$ErrorActionPreference='Stop';\$ProgressPreference='SilentlyContinue'\n"
    r"\$dir=(?P<dir>" + _LITERAL + r"|\[Environment\]::GetEnvironmentVariable\("
    r"'ExchangeInstallPath','Machine'\)\nif\(\$dir\)\{\$dir=\$dir\.TrimEnd\('\\'\)\+"
    r"'\\TransportRoles\\Logs\\(?P<role>FrontEnd|Hub)\\ProtocolLog\\SmtpReceive'\})\n"
    r"\$mb=\[long\](?P<max>\d+);\$mo=(?P<out>\d+);"
    r"\$dl=\[DateTime\]::UtcNow\.AddSeconds\((?P<secs>[0-9.e+]+)\)\n"
    r"\$cur=@\{(?P<cur>(?:'RECV\d{8,10}'=@\(\d{1,9},\[long\]\d+\);?)*)\}\n"
    r"\$hrs=@\((?P<hrs>(?:'\d{10}',?)*)\);\$dys=@\((?P<dys>(?:'\d{8}',?)*)\)\n")


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    return re.sub("(['\u2018\u2019\u201a\u201b])\\1", r"\1", body)


def decode_read_command(command: str, args: list[str]) -> ReadParams:
    """The parameters of the bot's read command (``powershell ... -EncodedCommand <b64>``).
    Raises ValueError for anything else: the simulator answers only what it understands."""
    if command.lower() not in ("powershell", "powershell.exe") or "-EncodedCommand" not in args:
        raise ValueError("not a PowerShell -EncodedCommand")
    encoded = args[args.index("-EncodedCommand") + 1]
    script = base64.b64decode(encoded, validate=True).decode("utf-16-le")
    m = _PARAMS.match(script)
    if not m:
        raise ValueError("not the protocol log read script")
    cursors = {series: (int(instance), int(offset)) for series, instance, offset in
               re.findall(r"'(RECV\d+)'=@\((\d+),\[long\](\d+)\)", m.group("cur"))}
    literal = m.group("dir")
    return ReadParams(
        folder=_unquote(literal) if literal.startswith("'") else None,
        role=m.group("role"), max_bytes=int(m.group("max")), max_output=int(m.group("out")),
        max_seconds=float(m.group("secs")), cursors=cursors,
        hours=tuple(re.findall(r"\d{10}", m.group("hrs"))),
        days=tuple(re.findall(r"\d{8}", m.group("dys"))))


_NAME = re.compile(r"RECV(\d{8})(\d\d)?-(\d{1,9})\.LOG\Z", re.I)
#: What the script searches for: a piece of each failure text, and the #Fields line.
_KEYS = (b"failed because the client ", b"we reject well-known account authentication for ",
         b"#Fields: ")


def emulate_read(files: Mapping[str, bytes], params: ReadParams, *,
                 clock: Callable[[], float] | None = None,
                 unreadable: Iterable[str] = ()) -> bytes:
    """What the read script prints over these files (name -> bytes), record for record.
    ``unreadable`` names files whose opening fails (access denied). ``clock`` (seconds,
    monotonic) lets a test run out the time bound; without it time never runs out."""
    out: list[str] = []
    written = 0

    def emit(*fields: object) -> None:
        nonlocal written
        record = "\t".join(str(f) for f in fields) + "\n"
        written += len(record)
        out.append(record)

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    total, why = 0, "done"
    deadline = clock() + params.max_seconds if clock else None
    denied = set(unreadable)
    chosen = []
    for name in files:
        m = _NAME.match(name)
        if m and ((m.group(2) and m.group(1) + m.group(2) in params.hours)
                  or (not m.group(2) and m.group(1) in params.days)):
            chosen.append(name)
    chosen.sort(key=lambda n: (n.split("-")[0], int(n.split("-")[1].split(".")[0])))
    for name in chosen:
        if total >= params.max_bytes:
            why = "bytes"
            break
        if deadline is not None and clock is not None and clock() > deadline:
            why = "time"
            break
        if name in denied:
            emit("E", name, b64(f"Access to the path '{name}' is denied.".encode()))
            continue
        data = files[name]
        series, _, rest = name.partition("-")
        instance = int(rest.split(".")[0])
        mark = params.cursors.get(series.upper())
        if mark is not None and instance < mark[0]:
            continue        # an older instance: read to its end before
        start = mark[1] if mark is not None and instance == mark[0] else 0
        if start > len(data):
            start = 0
        if start > 0:
            head = data[:min(4096, len(data))]
            i = head.find(b"\n#Fields: ")
            if i >= 0:
                j = head.find(b"\n", i + 1)
                if j > 0:
                    emit("L", i + 1, b64(head[i + 1:j]))
        want = min(len(data) - start, params.max_bytes - total)
        end = start
        if want > 0:
            chunk = data[start:start + want]
            total += len(chunk)
            last = chunk.rfind(b"\n")
            if last >= 0:
                end = start + last + 1
            elif len(chunk) >= 65536 and start + len(chunk) < len(data):
                end = start + len(chunk)
                emit("W", name, b64(b"no line end"))
            hits: dict[int, int] = {}
            for key in _KEYS:
                i = 0
                while i <= last:
                    i = chunk.find(key, i)
                    if i < 0 or i > last:
                        break
                    a = chunk.rfind(b"\n", 0, i) + 1 if i else 0
                    j = chunk.find(b"\n", i)
                    if (key[:1] != b"#" or a == i) and j - a <= 65536:
                        hits[a] = j
                    i = j + 1
            for a in sorted(hits):
                if written + (hits[a] - a) * 1.34 + 80 > params.max_output:
                    end, why = start + a, "output"
                    break
                emit("L", start + a, b64(chunk[a:hits[a]]))
        emit("F", name, start, end, len(data))
        if why == "done" and total >= params.max_bytes and end < len(data):
            why = "bytes"         # the bound ended this file's read: the rest is next time
        if why == "output":
            break
    emit("X", total, why)
    return "".join(out).encode("ascii")


def default_folder(install_path: str, role: str = "FrontEnd") -> str:
    """`<ExchangeInstallPath>TransportRoles\\Logs\\<role>\\ProtocolLog\\SmtpReceive`, as the read
    script builds it from the machine's ExchangeInstallPath."""
    sub = f"TransportRoles\\Logs\\{role}\\ProtocolLog\\SmtpReceive"
    return install_path.rstrip("\\") + "\\" + sub


def _folder_error(message: str) -> bytes:
    """The script's answer when listing the folder failed: `E - <message>`, then the end."""
    encoded = base64.b64encode(message.encode("utf-8")).decode()
    return f"E\t-\t{encoded}\nX\t0\terror\n".encode("ascii")


def answer_read(command: str, args: list[str], folders: Mapping[str, Mapping[str, bytes]], *,
                install_path: str | None = DEFAULT_INSTALL_PATH,
                unreadable: Iterable[str] = (), denied: Iterable[str] = (),
                clock: Callable[[], float] | None = None) -> bytes:
    """The output of the bot's read command on a server whose protocol log folders are
    ``folders`` (full folder path -> files) and whose machine environment variable
    ExchangeInstallPath is ``install_path`` (None: not set). A folder that does not exist
    answers as Get-ChildItem's error does; so does one in ``denied`` (folder paths the account
    may not list: "Access to the path '...' is denied."). ``unreadable`` names files that cannot
    be opened; ``clock`` is as in :func:`emulate_read`."""
    params = decode_read_command(command, args)
    folder = params.folder
    if folder is None and install_path is None:
        return _folder_error("ExchangeInstallPath is not set")
    if folder is None:
        folder = default_folder(install_path or "", params.role or "FrontEnd")
    files = next((f for path, f in folders.items() if path.casefold() == folder.casefold()),
                 None)
    if files is None:
        return _folder_error(f"Cannot find path '{folder}' because it does not exist.")
    if any(folder.casefold() == path.casefold() for path in denied):
        return _folder_error(f"Access to the path '{folder}' is denied.")
    return emulate_read(files, params, unreadable=unreadable, clock=clock)


# --------------------------------------------------------------------------------------------
# The demo world's protocol logs
# --------------------------------------------------------------------------------------------

#: The clients behind the demo's refusals, by account: (address, EHLO name), used in turn. Only
#: what Default Frontend takes is logged (the port-25 printer): the other accounts fail on
#: connectors that do not log by default, so their devices stay unknown, as on a real server.
DEMO_DEVICES: Mapping[str, tuple[tuple[str, str], ...]] = {
    "CONTOSO\\svc-mfp": (("10.20.30.41", "mfp-3f.contoso.local"),
                          ("10.20.30.57", "mfp-3f.contoso.local")),
    "CONTOSO\\Administrator": (("10.20.31.12", "scan-2f.contoso.local"),),
    "CONTOSO\\app-erp": (("10.5.0.20", "erp01.contoso.local"),),
    "CONTOSO\\jürgen.müller": (("10.20.40.77", "nb-jmueller.contoso.local"),),
    "printer@contoso.com": (("10.20.30.90", "prn-lobby.contoso.local"),),
}
_DEMO_ROLES = {"MSExchangeFrontEndTransport": "FrontEnd", "MSExchangeTransport": "Hub"}


def demo_protocol_logs(now: datetime | None = None, *, seed: int = 1020,
                       hours: float = 6.0) -> dict[str, dict[str, ProtocolLogWriter]]:
    """The protocol logs behind :func:`sim.eventlog.seed_demo` (same ``now``, ``seed`` and
    ``hours``): server -> {"FrontEnd": writer, "Hub": writer}, for
    ``WinRMSimulator(protocol_logs=...)``. Every 1018/1020 of the demo stream goes through its
    transport service's writer at the event's own time, as Exchange's one code path does; only
    connectors that log write a line (by default Default Frontend: CONTOSO\\svc-mfp's printer,
    from 10.20.30.41 and 10.20.30.57 in turn, EHLO mfp-3f.contoso.local)."""
    writers: dict[str, dict[str, ProtocolLogWriter]] = {}
    turn: dict[str, int] = {}
    for n, ev in enumerate(demo_stream(now, seed=seed, hours=hours)):
        role = _DEMO_ROLES.get(ev.provider)
        if role is None or ev.event_id not in FAILURE_TEXT or len(ev.data) < 2:
            continue
        folders = writers.setdefault(ev.server, {
            r: ProtocolLogWriter(ev.server, first_session=0x08DE5C2A1B000000 + (i << 20))
            for i, r in enumerate(("FrontEnd", "Hub"))})
        account, connector = ev.data[0], ev.data[1]
        devices = DEMO_DEVICES.get(account, (("10.20.99.1", "unknown.contoso.local"),))
        i = turn.get(account, 0)
        turn[account] = i + 1
        address, ehlo = devices[i % len(devices)]
        folders[role].failed_auth(ev.time, connector, (address, 50000 + n * 7 % 15000),
                                  event_id=ev.event_id, user=account, ehlo=ehlo)
    return writers
