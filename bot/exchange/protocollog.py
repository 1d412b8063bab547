"""The device behind the account: Exchange's SMTP Receive protocol log, read and joined.

Events 1018/1020 name the account and the connector, never the client. Exchange writes the same
failure, in the same code path, to the SMTP Receive protocol log with the client's `IP:port`
(DOMAIN.md section 7). This module is the pure part of naming the device: it parses the log,
says which hourly files can hold given events, joins events to log lines, and builds the
read-only command that reads only the failure lines of given files, bounded in bytes and time,
with a byte cursor per file, and parses that command's output. No I/O, no clock.

What it rests on (Exchange 2013's code, public decompiled builds, PiratesRE/exchange_diff):

* The lines. `AuthCommandHelpers.LogDoesNotHaveSmtpSubmitPermission` (1018) and
  `LogAuthenticatedAsProhibitedAccount` (1020) log the event, then
  `ProtocolLogSession.LogInformation(Verbose, null, text, redactedUser)`: an Information row
  (event `*`), an empty `data` field, and the text in `context`:
  "Inbound authentication failed because the client {user} doesn't have submit permission." or
  "Inbound authentication failed as we reject well-known account authentication for {user}".
  The user is `Util.RedactUserName(name)`: the name itself on-premises, or `DOMAIN\\` and an
  opaque token where data redaction is on (its form is not known here).
* The format. `Microsoft.Exchange.Diagnostics`: a UTF-8 byte-order mark, then `#Software:`,
  `#Version:`, `#Log-type: SMTP Receive Protocol Log`, `#Date:` and `#Fields:` lines
  (`LogHeaderFormatter`), written when a file is started; rows end in CRLF; a field holding `,`
  or `"` is quoted with `"` doubled, and CR/LF inside a field are written as the two characters
  `\\r`/`\\n` (`Utf8Csv.Escape`, line breaks escaped by default). A backslash is never escaped,
  so `\\n` in `CONTOSO\\nancy` is a backslash and an `n`: nothing here unescapes. Times are
  `yyyy-MM-ddTHH:mm:ss.fffZ` (UTC); `session-id` is 16 hex digits (`X16`); endpoints are .NET
  `IPEndPoint` text (`10.0.0.1:25`, `[2001:db8::1]:25`).
* The files. `LogDirectory`: `RECV<yyyyMMddHH>-<n>.LOG`, one series per hour, as 2016/2019
  folders show (`...\\V15\\...\\FrontEnd\\ProtocolLog\\SmtpReceive\\RECV2023020100-1.LOG`). The
  2013 build read names size-bounded logs `RECV<yyyyMMdd>-<n>.LOG` unless hour-accurate ageing
  is on, as 2007/2010 folders show: daily names are accepted too, as holding their whole day.
  The hour (or day) is the UTC time at which a row is *written* (`Log.Append` passes
  `DateTime.UtcNow`); a new instance `-<n+1>` starts once a file passed its size bound (10 MB by
  default). Rows are stamped when queued (`AsyncLog.Append`) and written later by a background
  timer, so a row stamped 10:59:59.9 can sit in the 11:00 file (see `WRITE_LAG`). Exchange keeps
  the file open for writing with `FileShare.Read`: a reader must allow writers (`ReadWrite`).

Every field of the log is untrusted: a client chooses its EHLO name and what it sends, and the
account it authenticates as. Values stay data here (never parsed for meaning beyond the fields
above, never unescaped) and go into a command only through `ps_quote`.
"""
from __future__ import annotations

import base64
import bisect
import csv
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bot.core.inert import inert
from bot.core.model import Event, Problem, incident_key
from bot.exchange.remediation import UnsafeValueError, ps_quote

__all__ = [
    "DEFAULT_FIELDS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_OUTPUT",
    "DEFAULT_MAX_SECONDS",
    "FAILURE_TEXTS",
    "LOG_SUBFOLDERS",
    "MATCH_WINDOW",
    "MAX_COMMAND_CHARS",
    "MAX_LINE_BYTES",
    "WRITE_LAG",
    "Device",
    "DeviceGroup",
    "FileRead",
    "JoinResult",
    "LogFile",
    "LogRead",
    "ParsedLog",
    "ProtocolLine",
    "ReadRequest",
    "default_log_folder",
    "files_for",
    "hours_for",
    "join",
    "log_file_name",
    "parse_endpoint",
    "parse_log",
    "parse_log_file_name",
    "parse_read_output",
    "read_command",
    "read_script",
    "role_for_provider",
]

#: The field order Exchange's SMTP protocol log declares (`ProtocolLog.Fields`); used only for
#: lines met before any `#Fields:` line (a read that starts past the header gets the header's
#: line first, see the read script).
DEFAULT_FIELDS = ("date-time", "connector-id", "session-id", "sequence-number", "local-endpoint",
                  "remote-endpoint", "event", "data", "context")
_REQUIRED_FIELDS = ("date-time", "connector-id", "session-id", "remote-endpoint", "event",
                    "context")
LOG_TYPE = "SMTP Receive Protocol Log"

#: The two texts, as Exchange formats them (`{0}` is the user), by the event they go with.
FAILURE_TEXTS = {
    1018: "Inbound authentication failed because the client {user} doesn't have submit "
          "permission.",
    1020: "Inbound authentication failed as we reject well-known account authentication for "
          "{user}",
}
_FAILURE = (
    (1018, re.compile(r"Inbound authentication failed because the client (?P<user>.*) "
                      r"doesn't have submit permission\.", re.S)),
    (1020, re.compile(r"Inbound authentication failed as we reject well-known account "
                      r"authentication for (?P<user>.*)", re.S)),
)
#: The start of each failure text, as the read script looks for them (it looks for the `#Fields:`
#: line too).
_KEYS = ("Inbound authentication failed because the client ",
         "Inbound authentication failed as we reject well-known account authentication for ")

#: A log line is a few hundred bytes (an SMTP command line is at most 1,000 octets); anything
#: without a line end for this long is not a line worth keeping and is skipped, so a cursor can
#: never stick on it.
MAX_LINE_BYTES = 64 * 1024
#: How far apart an event's time and its log line's time may be. Both come from the same
#: machine's clock within the same call (`OnAuthenticationComplete`), so a few seconds is wide.
MATCH_WINDOW = timedelta(seconds=5)
#: How long after its time stamp a row may be written (and so which hour's file holds it).
#: AsyncLog writes on a background timer whose default interval is not known here: an
#: assumption, kept generous.
WRITE_LAG = timedelta(seconds=10)
#: One read's bounds: bytes read from the files (not output: only failure lines are sent back)
#: and seconds spent before starting another file.
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_SECONDS = 20.0
#: A bound on one read's output, in characters: keep it under polling.max_output (256 KiB at
#: the least), so the remote read is never cut. At least 128 KiB, so one line always fits.
DEFAULT_MAX_OUTPUT = 240 * 1024
MIN_MAX_OUTPUT = 128 * 1024
#: cmd.exe's command line holds 8,191 characters; the encoded script must fit with room to spare.
MAX_COMMAND_CHARS = 8000

#: Where each transport service writes its Receive protocol log, under %ExchangeInstallPath%
#: (2013 and later; DOMAIN.md section 7). The path can be changed per server
#: (`Set-FrontendTransportService -ReceiveProtocolLogPath`, `Set-TransportService ...`).
LOG_SUBFOLDERS = {
    "FrontEnd": "TransportRoles\\Logs\\FrontEnd\\ProtocolLog\\SmtpReceive",
    "Hub": "TransportRoles\\Logs\\Hub\\ProtocolLog\\SmtpReceive",
}
_ROLE_OF_PROVIDER = {"MSExchangeFrontEndTransport": "FrontEnd", "MSExchangeTransport": "Hub"}

_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,7}))?Z")
_SESSION = re.compile(r"[0-9A-Fa-f]{1,32}")
_FILE_NAME = re.compile(r"RECV(\d{8})(\d\d)?-(\d{1,9})\.LOG", re.I)
_EXCERPT_CHARS = 200


# --- the lines -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProtocolLine:
    """One failure line of a server's SMTP Receive protocol log. Every text is untrusted."""

    server: str            # the configured server whose log it is (given by the caller)
    time: datetime         # date-time, UTC
    connector: str         # connector-id, as Exchange writes it: SRV\Name
    session: str           # session-id: one SMTP session
    event_id: int          # 1018 or 1020, by the failure text
    user: str              # the user the text names ("" when it names none); maybe redacted
    address: str           # the client's IP address, normalised (ipaddress's text form)
    port: int | None       # the client's port
    local: str = ""        # local-endpoint as written (which of the server's IP:port)
    sequence: int | None = None
    file: str = ""         # the file it was read from, and where in it (for diagnosis)
    offset: int = -1


@dataclass(frozen=True)
class ParsedLog:
    """What `parse_log` made of a piece of a log file."""

    lines: tuple[ProtocolLine, ...]
    problems: tuple[Problem, ...]
    consumed: int                        # bytes through the last complete line (see parse_log)
    fields: tuple[str, ...] | None       # the field order in force at the end of the piece
    other_lines: int = 0                 # lines that are not failure lines


def parse_endpoint(text: str) -> tuple[str, int | None]:
    """(`address`, `port`) from .NET's `IPEndPoint` text: `10.0.0.1:25`, `[2001:db8::1]:25`,
    `[fe80::1%12]:25`, or an address alone. An IPv4 address mapped into IPv6 (a dual-mode
    socket's `[::ffff:10.0.0.1]`) is given as the IPv4 address, so one device is one address.
    Raises ValueError for anything else."""
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError("an IPv6 endpoint without its closing bracket")
        host, rest = text[1:close], text[close + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError("text after an IPv6 endpoint's bracket")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    address = ipaddress.ip_address(host)       # ValueError for anything not an address
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    port: int | None = None
    if port_text:
        if not port_text.isascii() or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
            raise ValueError("a port that is not a number from 0 to 65535")
        port = int(port_text)
    return str(address), port


def _parse_time(text: str) -> datetime:
    m = _TIME.fullmatch(text)
    if not m:
        raise ValueError(f"unreadable date-time {text[:40]!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micros = int((m.group(7) or "0")[:6].ljust(6, "0"))
    return datetime(year, month, day, hour, minute, second, micros, tzinfo=UTC)


def _failure(context: str) -> tuple[int, str] | None:
    """(1018 or 1020, user) when `context` is exactly one of the failure texts."""
    for event_id, pattern in _FAILURE:
        m = pattern.fullmatch(context)
        if m:
            return event_id, m.group("user")
    return None


class _LineParser:
    """The state one file's lines are read with: the field order, and whether the file says it
    is an SMTP Receive protocol log."""

    def __init__(self, server: str, file: str, fields: tuple[str, ...] | None) -> None:
        self.server, self.file = server, file
        self.fields = fields
        self.wrong_type = False
        self.lines: list[ProtocolLine] = []
        self.problems: list[Problem] = []
        self.other = 0

    def problem(self, kind: str, detail: str, excerpt: str = "") -> None:
        where = f" ({inert(self.file)})" if self.file else ""
        self.problems.append(Problem(self.server, kind, detail + where,
                                     inert(excerpt[:_EXCERPT_CHARS])))

    def feed(self, raw: bytes, offset: int) -> None:
        """One line's bytes (without its LF) that starts at `offset` in the file."""
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if not raw.strip():
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", errors="replace")
            if _KEYS[0].encode() in raw or _KEYS[1].encode() in raw:
                self.problem("invalid_text", "a protocol log line was not valid UTF-8; the "
                             "damaged characters were replaced with U+FFFD", text)
        if text.startswith("#"):
            self._header(text)
        else:
            self._row(text, offset)

    def _header(self, text: str) -> None:
        name, _, value = text[1:].partition(":")
        value = value.strip()
        if name == "Fields":
            try:
                fields = tuple(f.strip() for f in next(csv.reader([value], strict=True)))
            except (csv.Error, StopIteration):
                fields = ()
            missing = [f for f in _REQUIRED_FIELDS if f not in fields]
            if missing:
                self.problem("malformed_header", "a #Fields line lacks "
                             + ", ".join(missing) + "; the lines under it were skipped", text)
                self.fields = ()
            else:
                self.fields = fields
        elif name == "Log-type":
            self.wrong_type = value != LOG_TYPE
            if self.wrong_type:
                self.problem("wrong_log", "the file says it is not an SMTP Receive protocol "
                             "log; its lines were skipped", text)

    def _row(self, text: str, offset: int) -> None:
        fields = DEFAULT_FIELDS if self.fields is None else self.fields
        if self.wrong_type or not fields:
            return
        if _KEYS[0] not in text and _KEYS[1] not in text:
            self.other += 1           # most lines of a log: not worth parsing as CSV
            return
        try:
            row = next(csv.reader([text], strict=True))
        except (csv.Error, StopIteration):
            row = None
        if row is None or len(row) != len(fields):
            self.problem("malformed_line", "a protocol log line that may be a failure could "
                         f"not be read as {len(fields)} CSV fields; it was skipped", text)
            return
        value = dict(zip(fields, row, strict=True))
        found = _failure(value["context"]) if value["event"] == "*" else None
        if found is None:
            self.other += 1
            return
        event_id, user = found
        try:
            time = _parse_time(value["date-time"])
            address, port = parse_endpoint(value["remote-endpoint"])
            session = value["session-id"]
            if not _SESSION.fullmatch(session):
                raise ValueError(f"unreadable session-id {session[:40]!r}")
            connector = value["connector-id"]
            if not connector.strip() or len(connector) > 1024:
                raise ValueError("an empty or overlong connector-id")
        except ValueError as exc:
            self.problem("malformed_line", f"a failure line was skipped: {inert(str(exc))}",
                         text)
            return
        sequence = value.get("sequence-number", "")
        self.lines.append(ProtocolLine(
            server=self.server, time=time, connector=connector, session=session.upper(),
            event_id=event_id, user=user, address=address, port=port,
            local=value.get("local-endpoint", ""),
            sequence=int(sequence) if sequence.isascii() and sequence.isdigit() else None,
            file=self.file, offset=offset))


def parse_log(raw: bytes, server: str, *, file: str = "", offset: int = 0,
              fields: tuple[str, ...] | None = None) -> ParsedLog:
    """The failure lines in `raw`, a piece of a protocol log file that starts at byte `offset`
    of `file` (for the lines' positions and the problems' wording).

    `fields`: the field order in force where the piece starts (the `fields` of the previous
    piece's result; None: the start of a file, or unknown). `consumed` counts the bytes through
    the last complete line: a piece cut at a byte bound ends in part of a line, which is left
    for the next read rather than lost. A piece of MAX_LINE_BYTES or more without any line end
    is consumed whole (a problem says so), so a reader never sticks on it.
    """
    parser = _LineParser(server, file, fields)
    end = raw.rfind(b"\n")
    start = 0
    while start <= end:
        stop = raw.index(b"\n", start)
        if stop - start > MAX_LINE_BYTES:
            parser.problem("overlong_line", f"a line of {stop - start:,} bytes was skipped")
        else:
            parser.feed(raw[start:stop], offset + start)
        start = stop + 1
    consumed = end + 1
    if end < 0 and len(raw) >= MAX_LINE_BYTES:
        parser.problem("overlong_line", f"{len(raw):,} bytes without a line end were skipped")
        consumed = len(raw)
    return ParsedLog(tuple(parser.lines), tuple(parser.problems), consumed, parser.fields,
                     parser.other)


# --- the files -------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class LogFile:
    """A protocol log file's name, read: the UTC hour (or day) it holds rows written in."""

    start: datetime      # the hour's (or the day's) start, UTC
    instance: int        # -1, -2, ... within that hour (or day)
    hourly: bool         # RECVyyyyMMddHH-n.LOG; False: RECVyyyyMMdd-n.LOG
    name: str = field(compare=False)

    @property
    def end(self) -> datetime:
        return self.start + (timedelta(hours=1) if self.hourly else timedelta(days=1))


def _hour(time: datetime) -> datetime:
    if time.tzinfo is None or time.utcoffset() is None:
        raise ValueError("times must be timezone-aware (log files are named by UTC hour)")
    time = time.astimezone(UTC)
    return time.replace(minute=0, second=0, microsecond=0)


def log_file_name(hour: datetime, instance: int = 1) -> str:
    """`RECV<yyyyMMddHH>-<n>.LOG` for the UTC hour that holds `hour`."""
    if instance < 1:
        raise ValueError("file instances count from 1")
    return f"RECV{_hour(hour):%Y%m%d%H}-{instance}.LOG"


def parse_log_file_name(name: str) -> LogFile | None:
    """The hour (or day) and instance a file name says; None for any other name (a cursor or a
    listing holds only names that pass this)."""
    m = _FILE_NAME.fullmatch(name)
    if not m or not name.isascii():
        return None
    day, hour, instance = m.groups()
    try:
        start = datetime.strptime(day + (hour or "00"), "%Y%m%d%H").replace(tzinfo=UTC)
    except ValueError:
        return None
    return LogFile(start, int(instance), hour is not None, name)


def hours_for(times: Iterable[datetime], *, window: timedelta = MATCH_WINDOW,
              write_lag: timedelta = WRITE_LAG) -> tuple[datetime, ...]:
    """The UTC hours whose files can hold the log lines of events at `times`, oldest first.

    A line's time stamp may be up to `window` before or after its event's (an event at
    hh:00:01 may have its line stamped hh-1:59:59, in the previous hour's file), and a row is
    written, and so filed, up to `write_lag` after its stamp (a line stamped hh:59:59 may sit
    in hh+1's file). So an event at t needs the files of the hours from t - window to
    t + window + write_lag.
    """
    hours: set[datetime] = set()
    for time in times:
        hour = _hour(time - window)
        last = _hour(time + window + write_lag)
        while hour <= last:
            hours.add(hour)
            hour += timedelta(hours=1)
    return tuple(sorted(hours))


def files_for(names: Iterable[str], hours: Iterable[datetime]) -> tuple[LogFile, ...]:
    """Of the file names listed, those that can hold lines of these hours (hourly files of
    those hours, daily files of their days), in the order Exchange wrote them."""
    wanted = {_hour(h) for h in hours}
    days = {h.date() for h in wanted}
    found = []
    for name in names:
        file = parse_log_file_name(name)
        if file and ((file.hourly and file.start in wanted)
                     or (not file.hourly and file.start.date() in days)):
            found.append(file)
    return tuple(sorted(found))


def role_for_provider(provider: str) -> str:
    """Which transport service's log holds an event's line: "FrontEnd" for
    MSExchangeFrontEndTransport, "Hub" for MSExchangeTransport (DOMAIN.md section 1)."""
    try:
        return _ROLE_OF_PROVIDER[provider]
    except KeyError:
        raise ValueError(f"no protocol log is known for provider {inert(provider)!r}") from None


def default_log_folder(install_path: str, role: str = "FrontEnd") -> str:
    """`%ExchangeInstallPath%TransportRoles\\Logs\\<FrontEnd|Hub>\\ProtocolLog\\SmtpReceive`.
    `install_path` is the machine's ExchangeInstallPath (it ends in a backslash on Exchange
    servers; one is added if it does not)."""
    if role not in LOG_SUBFOLDERS:
        raise ValueError(f"role must be one of {', '.join(LOG_SUBFOLDERS)}")
    base = install_path.strip()
    if not base:
        raise ValueError("ExchangeInstallPath is empty")
    return base.rstrip("\\/") + "\\" + LOG_SUBFOLDERS[role]


# --- the read: a command, and its output ------------------------------------------------------


@dataclass(frozen=True)
class ReadRequest:
    """One bounded read of a server's protocol log folder.

    `cursors` are (file name, byte offset) for files read before, from the `cursors` of the
    last `parse_read_output` for this server *and folder* (the FrontEnd and Hub folders hold the
    same file names: keep one cursor map per folder). Only cursors of files the hours ask for
    are sent. `folder` is the configured log path; None reads ExchangeInstallPath on the server
    (`default_log_folder` for `role`). `max_bytes` bounds what is read from the files,
    `max_output` what is sent back (keep it under polling.max_output, so the remote read is
    never cut), `max_seconds` when no further file is started; the rest is read next time.
    """

    hours: tuple[datetime, ...]
    cursors: tuple[tuple[str, int], ...] = ()
    folder: str | None = None
    role: str = "FrontEnd"
    max_bytes: int = DEFAULT_MAX_BYTES
    max_seconds: float = DEFAULT_MAX_SECONDS
    max_output: int = DEFAULT_MAX_OUTPUT


# The script, kept PowerShell 2.0 compatible (Exchange 2010 servers) and short: it travels
# base64-encoded in a cmd.exe command line (8,191 characters: about 3,000 of script, DOMAIN.md
# section 3). PowerShell variable names ignore case: each below is distinct, and none is an
# automatic variable. It lists the folder and opens files for reading only (sharing them with
# Exchange's writer). Output records, one a line, tab-separated, ASCII only (anything from a
# file is base64), written with Console.Out (no formatting, no wrapping):
#   L <offset> <base64 line>   a failure line or the #Fields line of the file whose F follows
#   F <name> <start> <end> <length>   a file done: read from start, complete lines through end
#   W <name> <base64 text>     a warning about that file (its read goes on)
#   E <name or -> <base64 text>   a file (or the folder: "-") that could not be read
#   X <bytes read> <done|bytes|time|output|error>   the end, always last
# A file is decoded as ISO-8859-1 to search it, so a character index is a byte offset. Only
# lines holding a failure text (or a #Fields line) go back, each at most 64 KiB; once the
# output would pass its bound, the file ends before the first line not sent (so every read
# makes progress and the output never outgrows the remote read's own cap).
_SCRIPT = r"""$ErrorActionPreference='Stop';$ProgressPreference='SilentlyContinue'
$dir=@@DIR@@
$mb=[long]@@MAX@@;$mo=@@OUT@@;$dl=[DateTime]::UtcNow.AddSeconds(@@SECONDS@@)
$cur=@{@@CURSORS@@}
$hrs=@(@@HOURS@@);$dys=@(@@DAYS@@)
$ks='failed because the client ','we reject well-known account authentication for ','#Fields: '
$en=[Text.Encoding]::GetEncoding(28591);$o=[Console]::Out;$t=[long]0;$ct=@{n=0};$w='done'
$nl=[char]10;$or=[StringComparison]::Ordinal
function O{$r=($args -join "`t")+"`n";$ct.n+=$r.Length;$o.Write($r)}
function B($y,$p,$c){[Convert]::ToBase64String($y,$p,$c)}
function M($v){$y=[Text.Encoding]::UTF8.GetBytes([string]$v);B $y 0 $y.Length}
function R($x,$y,$c){$g=0;while($g -lt $c){$r=$x.Read($y,$g,$c-$g);if($r -le 0){break};$g+=$r};$g}
try{if(!$dir){throw 'ExchangeInstallPath is not set'}
$fs=@(Get-ChildItem -LiteralPath $dir -Force|?{!$_.PSIsContainer -and
$_.Name -match '^RECV(\d{8})(\d\d)?-(\d{1,9})\.LOG$' -and
(($hrs -contains ($matches[1]+$matches[2])) -or (!$matches[2] -and ($dys -contains $matches[1])))}|
sort @{e={($_.Name -split '-')[0]}},@{e={[int]($_.Name -split '[-.]')[1]}})}
catch{O E '-' (M $_.Exception.Message);O X 0 error;$o.Flush();exit}
foreach($f in $fs){if($t -ge $mb){$w='bytes';break}
if([DateTime]::UtcNow -gt $dl){$w='time';break}
$s=[long]0;$p=$f.Name -split '[-.]';$n=[int]$p[1]
if($cur.ContainsKey($p[0])){$m=$cur[$p[0]];if($n -lt $m[0]){continue};if($n -eq $m[0]){$s=$m[1]}}
$x=$null
try{$x=New-Object IO.FileStream($f.FullName,'Open','Read','ReadWrite,Delete')
$l=$x.Length;if($s -gt $l){$s=[long]0}
if($s -gt 0){$y=New-Object byte[] ([Math]::Min(4096,$l));$z=$en.GetString($y,0,(R $x $y $y.Length))
$i=$z.IndexOf("`n"+'#Fields: ',$or)
if($i -ge 0){$j=$z.IndexOf($nl,$i+1);if($j -gt 0){O L ($i+1) (B $y ($i+1) ($j-$i-1))}}}
$c=[int][Math]::Min($l-$s,$mb-$t);$e=$s
if($c -gt 0){[void]$x.Seek($s,'Begin');$b=New-Object byte[] $c;$g=R $x $b $c;$t+=$g
$z=$en.GetString($b,0,$g);$q=$z.LastIndexOf($nl)
if($q -ge 0){$e=$s+$q+1}elseif($g -ge 65536 -and $s+$g -lt $l){$e=$s+$g
O W $f.Name (M 'no line end')}
$h=@{};foreach($k in $ks){$i=0
while($i -le $q){$i=$z.IndexOf($k,$i,$or);if($i -lt 0 -or $i -gt $q){break}
$a=0;if($i){$a=$z.LastIndexOf($nl,$i-1)+1};$j=$z.IndexOf($nl,$i)
if(($k[0] -ne '#' -or $a -eq $i) -and $j-$a -le 65536){$h[$a]=$j};$i=$j+1}}
foreach($a in @($h.Keys|sort)){if($ct.n+($h[$a]-$a)*1.34+80 -gt $mo){$e=$s+$a;$w='output';break}
O L ($s+$a) (B $b $a ($h[$a]-$a))}}
O F $f.Name $s $e $l;if($w -eq 'done' -and $t -ge $mb -and $e -lt $l){$w='bytes'}
}catch{O E $f.Name (M $_.Exception.Message)}
if($x){$x.Close()};if($w -eq 'output'){break}}
O X $t $w;$o.Flush()
"""


def _check_request(request: ReadRequest) -> None:
    if request.role not in LOG_SUBFOLDERS:
        raise ValueError(f"role must be one of {', '.join(LOG_SUBFOLDERS)}")
    if not 0 < request.max_bytes <= 2**31 - 1:
        raise ValueError("max_bytes must be between 1 and 2,147,483,647")
    if not MIN_MAX_OUTPUT <= request.max_output <= 2**31 - 1:
        raise ValueError(f"max_output must be at least {MIN_MAX_OUTPUT:,}")
    if not 0 < request.max_seconds <= 3600:
        raise ValueError("max_seconds must be more than 0 and at most 3600")
    if not request.hours:
        raise ValueError("a read needs at least one hour")
    for hour in request.hours:
        if hour.tzinfo is None:
            raise ValueError("hours must be timezone-aware")


def read_script(request: ReadRequest) -> str:
    """The read-only PowerShell script for `request` (what `read_command` encodes). Raises
    UnsafeValueError when the folder cannot be quoted, ValueError for a bad request.

    It lists the folder, keeps the files named for the hours asked (hourly, or daily files of
    their days), oldest first, and for each reads from its cursor at most what is left of
    `max_bytes`, up to the last complete line; sends back only the failure lines and the file's
    `#Fields:` line (base64), and where it stopped. It opens no file for writing and changes
    nothing. It stops starting files after `max_seconds` (the remote read's own deadline bounds
    the rest).
    """
    _check_request(request)
    if request.folder is not None:
        folder = ps_quote(request.folder, "protocol log folder")
    else:
        folder = ("[Environment]::GetEnvironmentVariable('ExchangeInstallPath','Machine')\n"
                  f"if($dir){{$dir=$dir.TrimEnd('\\')+'\\{LOG_SUBFOLDERS[request.role]}'}}")
    hours = sorted({_hour(h) for h in request.hours})
    names = {f"{h:%Y%m%d%H}" for h in hours}
    days = {f"{h:%Y%m%d}" for h in hours}
    # One mark per series (an hour's or a day's files): the newest instance read and how far.
    # Exchange writes only to a series' newest instance, so the older ones were read to their
    # end (the script reads them in order): they are skipped, and the command stays short
    # however many 10 MB files a busy hour has.
    marks: dict[str, tuple[int, int]] = {}
    for name, offset in sorted(set(request.cursors)):
        file = parse_log_file_name(name)
        if file is None:
            raise UnsafeValueError("protocol log file", "is not a protocol log file name "
                                   "(RECV<yyyyMMddHH>-<n>.LOG)", name)
        stamp = f"{file.start:%Y%m%d%H}" if file.hourly else f"{file.start:%Y%m%d}"
        if stamp in names if file.hourly else stamp in days:
            series = f"RECV{stamp}"
            marks[series] = max(marks.get(series, (0, 0)), (file.instance, int(offset)))
    cursors = [f"{ps_quote(series, 'protocol log file')}=@({instance},[long]{offset})"
               for series, (instance, offset) in sorted(marks.items())]
    return (_SCRIPT.replace("@@DIR@@", folder)
            .replace("@@MAX@@", str(int(request.max_bytes)))
            .replace("@@OUT@@", str(int(request.max_output)))
            .replace("@@SECONDS@@", f"{float(request.max_seconds):g}")
            .replace("@@CURSORS@@", ";".join(cursors))
            .replace("@@HOURS@@", ",".join(f"'{n}'" for n in sorted(names)))
            .replace("@@DAYS@@", ",".join(f"'{d}'" for d in sorted(days))))


def read_command(request: ReadRequest) -> tuple[str, list[str]]:
    """(command, arguments) for the remote shell: `powershell ... -EncodedCommand <base64>`.

    The script travels as base64 of its UTF-16LE text, PowerShell's own `-EncodedCommand`, so
    cmd.exe sees only letters, digits, `+`, `/` and `=`: no cmd quoting rule applies, and the
    values inside are PowerShell literals made by `ps_quote`. Raises ValueError when the command
    would exceed MAX_COMMAND_CHARS (ask for fewer hours at a time).
    """
    encoded = base64.b64encode(read_script(request).encode("utf-16-le")).decode("ascii")
    args = ["-NoProfile", "-NonInteractive", "-EncodedCommand", encoded]
    command = "powershell"
    if len(command) + sum(len(a) + 1 for a in args) > MAX_COMMAND_CHARS:
        raise ValueError("the protocol log read is too long for one command line "
                         f"({len(request.hours)} hours, {len(request.cursors)} cursors); "
                         "read fewer hours at a time")
    return command, args


@dataclass(frozen=True)
class FileRead:
    """How far one file was read: complete lines from `start` to `end`, of `length` bytes."""

    name: str
    start: int
    end: int
    length: int


@dataclass(frozen=True)
class LogRead:
    """What one read's output said. `cursors` is the cursor map to keep for the next read: the
    one given, moved for each file whose read finished (a file cut off, or one that failed,
    keeps its old cursor and is read again)."""

    lines: tuple[ProtocolLine, ...]
    cursors: dict[str, int]
    files: tuple[FileRead, ...]
    problems: tuple[Problem, ...]
    bytes_read: int
    stopped: str | None      # None: all files read; "bytes", "time", "output" (a bound
    #                          reached: the rest is read next time), "error" (the folder), or
    #                          "cut" (the output ended before the script's end record)


def parse_read_output(output: bytes | str, server: str,
                      cursors: Mapping[str, int] | None = None) -> LogRead:
    """Read the records `read_script` writes (see its comment). Nothing the server sent is
    trusted: file names must be protocol log names, numbers must be numbers, every line is
    parsed as untrusted log text, and anything else becomes a Problem with an inert excerpt.
    A file's lines count only once its F record arrived, so a cut output loses nothing: the
    file is read again from its old cursor next time.
    """
    text = output.decode("ascii", errors="replace") if isinstance(output, bytes) else output
    new_cursors = dict(cursors or {})
    lines: list[ProtocolLine] = []
    files: list[FileRead] = []
    problems: list[Problem] = []
    pending: list[tuple[int, bytes]] = []
    bytes_read = 0
    stopped: str | None = "cut"

    def problem(kind: str, detail: str, excerpt: str = "") -> None:
        problems.append(Problem(server, kind, detail, inert(excerpt[:_EXCERPT_CHARS])))

    for record in text.split("\n"):
        record = record.rstrip("\r")
        if not record or record.startswith("#< CLIXML"):
            continue
        tag, *parts = record.split("\t")
        try:
            if stopped != "cut":
                raise ValueError("text after the end record")
            if tag == "L" and len(parts) == 2:
                pending.append((_number(parts[0]), base64.b64decode(parts[1], validate=True)))
            elif tag == "F" and len(parts) == 4:
                name = _file_name(parts[0])
                start, end, length = (_number(p) for p in parts[1:])
                if not start <= end <= length:
                    raise ValueError("a file record whose offsets are out of order")
                parser = _LineParser(server, name, None)
                for offset, raw in sorted(pending):
                    if len(raw) > MAX_LINE_BYTES or not 0 <= offset < end:
                        raise ValueError("a line record outside the file's read")
                    parser.feed(raw, offset)
                lines.extend(parser.lines)
                problems.extend(parser.problems)
                files.append(FileRead(name, start, end, length))
                new_cursors[name] = end
                pending.clear()
            elif tag in ("E", "W") and len(parts) == 2:
                message = base64.b64decode(parts[1], validate=True).decode("utf-8", "replace")
                if tag == "E":
                    pending.clear()
                if parts[0] == "-" and tag == "E":
                    problem("log_unreadable", "the protocol log folder could not be read: "
                            + inert(message[:_EXCERPT_CHARS]))
                elif tag == "E":
                    problem("log_unreadable", f"{_file_name(parts[0])} could not be read: "
                            + inert(message[:_EXCERPT_CHARS]))
                else:
                    problem("overlong_line", f"{_file_name(parts[0])}: more than "
                            f"{MAX_LINE_BYTES:,} bytes without a line end were skipped")
            elif tag == "X" and len(parts) == 2:
                bytes_read = _number(parts[0])
                if parts[1] not in ("done", "bytes", "time", "output", "error"):
                    raise ValueError("an end record with an unknown reason")
                stopped = None if parts[1] == "done" else parts[1]
            else:
                raise ValueError("not a record of the read")
        except (ValueError, UnsafeValueError) as exc:   # binascii.Error is a ValueError
            problem("unexpected_output", f"the protocol log read sent something it should not "
                    f"({inert(str(exc))}); it was ignored", record)
    if stopped == "cut":
        problem("output_cut", "the protocol log read's output ended early; the files it did "
                "not finish are read again from their cursors next time")
    return LogRead(tuple(lines), new_cursors, tuple(files), tuple(problems), bytes_read,
                   stopped)


def _number(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise ValueError(f"not a byte count: {text[:30]!r}")
    return int(text)


def _file_name(text: str) -> str:
    if parse_log_file_name(text) is None:
        raise UnsafeValueError("protocol log file", "is not a protocol log file name", text)
    return text


# --- the join ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    """A client address seen failing: how many SMTP sessions, from when to when."""

    address: str            # the client's IP address (from the log: untrusted text)
    sessions: int           # distinct session-ids
    lines: int              # failure lines (a client may retry AUTH within a session)
    first: datetime
    last: datetime
    account_shown: bool     # every one of its lines named the account; False: the log hid it
    #                         (redacted, or no user) and the line was joined on the rest


@dataclass(frozen=True)
class DeviceGroup:
    """One account's events on one server and connector, and the devices behind them."""

    account: str                       # as its first event names it (untrusted)
    account_key: str                   # incident_key(account)
    server: str                        # the configured server (Event.origin)
    connector: str | None              # as the events named it; None: they named none
    event_ids: tuple[int, ...]
    events: int
    unmatched_events: int              # events no log line was joined to
    devices: tuple[Device, ...]        # most sessions first
    log_connectors: tuple[str, ...] = ()   # the connector-ids of its joined lines

    @property
    def no_match(self) -> bool:
        """Nothing in the log joined these events: say so, never guess."""
        return not self.devices


@dataclass(frozen=True)
class JoinResult:
    groups: tuple[DeviceGroup, ...]
    #: Lines whose account the log hid and whose window held more than one account's events:
    #: not attributed to anyone.
    ambiguous_lines: int = 0
    #: Lines joined to no event (the ambiguous ones included): a line read before its event was
    #: stored joins a later call, so a caller keeps these a while.
    unjoined: tuple[ProtocolLine, ...] = ()

    def for_account(self, account: str) -> tuple[DeviceGroup, ...]:
        key = incident_key(account)
        return tuple(g for g in self.groups if g.account_key == key)


def _connector_matches(event_connector: str | None, line_connector: str) -> bool:
    if event_connector is None:
        return True
    a, b = event_connector.casefold(), line_connector.casefold()
    if a == b:
        return True
    # A bare name (an event whose identity could not be built) matches the name part.
    if "\\" not in a:
        return b.rpartition("\\")[2] == a
    return False


@dataclass
class _Group:
    account: str
    events: list[int] = field(default_factory=list)
    event_ids: set[int] = field(default_factory=set)
    lines: list[tuple[ProtocolLine, bool]] = field(default_factory=list)


def join(events: Sequence[Event], lines: Iterable[ProtocolLine], *,
         window: timedelta = MATCH_WINDOW) -> JoinResult:
    """Join events to protocol log lines: same server (Event.origin and the line's server),
    same failure (1018 or 1020), a connector the event named (any, when it named none), times
    within `window`, and the same account where the line shows one.

    Give it every event of the servers and time the lines cover, of all accounts: a line that
    names an account is joined to that account's events only; a line whose account is hidden
    (redacted, or naming no account among the events) is joined when its window holds one
    account's events, and counted in `ambiguous_lines` when it holds several. Each line is
    joined to the nearest such event not yet joined (so `unmatched_events` counts events that
    no line explains), and every joined line's address is listed: several devices failing at
    the same second are all shown. Events that nothing joined are in their group with
    `unmatched_events`, and a group with no device says so (`no_match`).
    """
    events = list(events)
    known = {e.incident_key for e in events}
    by_kind: dict[tuple[str, int], list[int]] = {}
    for index in sorted(range(len(events)), key=lambda i: events[i].time):
        by_kind.setdefault((events[index].origin.casefold(), events[index].event_id),
                           []).append(index)
    times = {kind: [events[i].time for i in found] for kind, found in by_kind.items()}

    groups: dict[tuple[str, str, str | None], _Group] = {}

    def group_of(index: int) -> _Group:
        e = events[index]
        key = (e.incident_key, e.origin.casefold(),
               e.connector.casefold() if e.connector is not None else None)
        if key not in groups:
            groups[key] = _Group(e.account)
        return groups[key]

    for index in range(len(events)):
        g = group_of(index)
        g.events.append(index)
        g.event_ids.add(events[index].event_id)

    joined: set[int] = set()
    used: set[int] = set()
    ambiguous = 0
    unique: dict[tuple[str, str, int, str, str, datetime], ProtocolLine] = {}
    for line in lines:
        unique.setdefault((line.server.casefold(), line.file, line.offset, line.session,
                           line.address, line.time), line)
    # Lines that show their account go first, so a hidden one cannot take their event.
    ordered = sorted(unique.values(), key=lambda ln: (
        not (ln.user and ln.user.casefold() in known), ln.time, ln.file, ln.offset))
    for line in ordered:
        kind = (line.server.casefold(), line.event_id)
        found = by_kind.get(kind, [])
        low = bisect.bisect_left(times.get(kind, []), line.time - window)
        high = bisect.bisect_right(times.get(kind, []), line.time + window)
        candidates = [i for i in found[low:high]
                      if _connector_matches(events[i].connector, line.connector)]
        if not candidates:
            continue
        user = line.user.casefold()
        shown = bool(user) and user in known
        if shown:
            candidates = [i for i in candidates if events[i].incident_key == user]
            if not candidates:
                continue          # another account's failure at the same moment
        elif len({events[i].incident_key for i in candidates}) > 1:
            ambiguous += 1
            continue

        def distance(i: int, line: ProtocolLine = line) -> tuple[bool, timedelta]:
            return i in joined, abs(events[i].time - line.time)

        best = min(candidates, key=distance)
        joined.add(best)
        group_of(best).lines.append((line, shown))
        used.add(id(line))

    result = []
    for g in groups.values():
        first = events[g.events[0]]
        result.append(DeviceGroup(
            account=g.account, account_key=first.incident_key, server=first.origin,
            connector=first.connector, event_ids=tuple(sorted(g.event_ids)),
            events=len(g.events), unmatched_events=sum(i not in joined for i in g.events),
            devices=_devices(g.lines),
            log_connectors=tuple(sorted({ln.connector for ln, _ in g.lines}))))
    result.sort(key=lambda g: (g.account_key, g.server.casefold(),
                               (g.connector or "").casefold()))
    return JoinResult(tuple(result), ambiguous,
                      tuple(ln for ln in ordered if id(ln) not in used))


def _devices(lines: Sequence[tuple[ProtocolLine, bool]]) -> tuple[Device, ...]:
    by_address: dict[str, list[tuple[ProtocolLine, bool]]] = {}
    for line, shown in lines:
        by_address.setdefault(line.address, []).append((line, shown))
    devices = [Device(
        address=address,
        sessions=len({ln.session for ln, _ in found}),
        lines=len(found),
        first=min(ln.time for ln, _ in found),
        last=max(ln.time for ln, _ in found),
        account_shown=all(shown for _, shown in found))
        for address, found in by_address.items()]
    devices.sort(key=lambda d: (-d.sessions, d.first, d.address))
    return tuple(devices)
