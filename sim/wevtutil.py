"""The command line of a simulated Exchange server: cmd.exe, argv splitting and ``wevtutil``.

:mod:`sim.winrm_server` hands every WinRS command line to
:func:`run_command_line`, which treats it the way Windows would:

* unless the shell was opened with ``WINRS_SKIP_CMD_SHELL``, the line first
  goes through ``cmd.exe /c`` quoting rules, and an unquoted redirection or
  pipe character is reported instead of emulated, so a quoting mistake in the
  bot fails loudly rather than silently changing the query;
* the line is split into ``argv`` by the Microsoft C runtime's rules
  (:func:`split_windows_args`);
* ``wevtutil`` (:func:`run_wevtutil`) answers ``gli`` and ``qe`` against a
  :class:`sim.eventlog.EventLog`; any other program is "not recognized".

Output is text with CRLF line endings. :func:`run_encoded` turns it into the
bytes a server sends, the way :class:`WindowsTraits` says that server writes
them (code page, Unicode switch, framing of ``qe`` output).
"""

from __future__ import annotations

import codecs
import ntpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sim.eventlog import EventLog, QueryError, compile_query, event_xml

__all__ = ["WindowsTraits", "run_command_line", "run_encoded", "run_wevtutil", "split_windows_args"]


@dataclass(frozen=True)
class WindowsTraits:
    """How one simulated Windows server writes command output (../shared/DOMAIN.md section 3).

    ansi_codepage: the system's ANSI code page (registry ``Nls\\CodePage`` value ``ACP``):
        1252 in Western Europe and the Americas, 1251 for Cyrillic.
    text_output: what code page wevtutil's plain output is in. ``"ansi"``: the ANSI code page,
        whatever code page the shell was opened with (the one public report: ``á`` = 0xE1);
        ``"console"``: the shell's code page (``WINRS_CODEPAGE``), as the documentation suggests.
    unicode_switch: ``wevtutil ... /uni:true`` writes UTF-16LE (documented: "Displays the
        output in Unicode"). ``False`` models a wevtutil that ignores it (no evidence; it tests
        the bot's fallback).
    bom: ``qe`` output starts with a byte-order mark: FF FE in UTF-16, EF BB BF in UTF-8.
    declaration: ``qe`` output starts with an XML declaration.
    separator: what comes between events (and before ``</Events>``): CRLF, LF or nothing.
    empty: what ``qe /e:Events`` prints when nothing matched.
    Characters a code page cannot hold become ``?``, as Windows' best-fit conversion writes them.
    """

    ansi_codepage: int = 1252
    text_output: Literal["ansi", "console"] = "ansi"
    unicode_switch: bool = True
    bom: bool = False
    declaration: bool = False
    separator: str = "\r\n"
    empty: Literal["<Events></Events>", "<Events/>", ""] = "<Events></Events>"

    def __post_init__(self) -> None:
        if codec_for(self.ansi_codepage) is None:
            raise ValueError(f"no codec for ANSI code page {self.ansi_codepage}")


def codec_for(codepage: int) -> str | None:
    """Python codec of a Windows codepage, or None if there is none."""
    name = "utf-8" if codepage == 65001 else f"cp{codepage}"
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def _encode_errors(exc: UnicodeError) -> tuple[bytes, int]:
    """Codec error handler for command output.

    Unrepresentable characters become ``?`` (what a Windows console program
    writes under a narrow codepage).  Lone surrogates U+DC80..U+DCFF become the
    raw bytes 0x80..0xFF, so :meth:`EventLog.append_raw` can plant invalid UTF-8.
    """
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    out = bytearray()
    for ch in exc.object[exc.start : exc.end]:
        code = ord(ch)
        out += bytes([code - 0xDC00]) if 0xDC80 <= code <= 0xDCFF else b"?"
    return bytes(out), exc.end


codecs.register_error("submitwatch-sim", _encode_errors)

#: The registry key and value that hold the ANSI code page (what the bot may read with reg.exe).
NLS_KEY = "HKLM\\SYSTEM\\CurrentControlSet\\Control\\Nls\\CodePage"


def run_encoded(log: EventLog, line: str, *, codepage: int, traits: WindowsTraits = WindowsTraits(),
                skip_cmd_shell: bool = False) -> tuple[bytes, bytes, int]:
    """Run a WinRS command line and encode what each program wrote as ``traits`` says:
    (stdout bytes, stderr bytes, exit code). ``codepage`` is the shell's (WINRS_CODEPAGE)."""
    console = codec_for(codepage) or "cp437"
    parts = [line] if skip_cmd_shell else _split_commands(line)
    stdout, stderr, code = b"", b"", 0
    for part in parts:
        out, err, code = run_command_line(log, part, skip_cmd_shell=skip_cmd_shell, traits=traits)
        stdout += _encode_stdout(out, split_windows_args(part), console, traits)
        stderr += err.encode(console, "submitwatch-sim")
    return stdout, stderr, code


def _encode_stdout(text: str, argv: list[str], console: str, traits: WindowsTraits) -> bytes:
    program = ntpath.basename(argv[0]).lower() if argv else ""
    if program not in ("wevtutil", "wevtutil.exe") or not text:
        return text.encode(console, "submitwatch-sim")
    unicode = any(re.fullmatch(r"[/-](uni|unicode):true", arg, re.I) for arg in argv[1:])
    bom = traits.bom and len(argv) > 1 and argv[1].lower() in ("qe", "query-events")
    if unicode and traits.unicode_switch:
        return (b"\xff\xfe" if bom else b"") + text.encode("utf-16-le", "surrogatepass")
    codec = codec_for(traits.ansi_codepage) if traits.text_output == "ansi" else console
    return (b"\xef\xbb\xbf" if bom and codec == "utf-8" else b"") + text.encode(
        codec or console, "submitwatch-sim")


def run_command_line(log: EventLog, line: str, *, skip_cmd_shell: bool = False,
                     traits: WindowsTraits = WindowsTraits()) -> tuple[str, str, int]:
    """Run a WinRS command line against ``log``: (stdout, stderr, exit code).

    ``skip_cmd_shell`` mirrors the WINRS_SKIP_CMD_SHELL shell option: when set,
    the line is not passed through cmd.exe first.
    """
    if not skip_cmd_shell:
        line = line.replace("%TEMP%", TEMP).replace("%temp%", TEMP)  # cmd.exe expands first
        parts = _split_commands(line)
        if len(parts) > 1:  # cmd.exe's `a & b`: run both in order; the exit code is b's
            results = [run_command_line(log, part, traits=traits) for part in parts]
            return ("".join(r[0] for r in results), "".join(r[1] for r in results),
                    results[-1][2])
        if _is_echo_into_file(line):
            return _echo_into_file(log, line)
        line, problem = _apply_cmd_exe_quoting(line)
        if problem:
            return "", f"SubmitWatch simulator: {problem}.\r\n", 1
    argv = split_windows_args(line)
    if not argv:
        return "", "", 0
    program = ntpath.basename(argv[0]).lower()
    if program in ("wevtutil", "wevtutil.exe"):
        return run_wevtutil(log, argv[1:], traits)
    if program in ("reg", "reg.exe"):
        return _reg_query(argv[1:], traits)
    if program in ("wecutil", "wecutil.exe"):
        return run_wecutil(log, argv[1:])
    if program == "type" and len(argv) == 2:
        if argv[1].lower() not in {k.lower() for k in log.temp_files}:
            return "", "The system cannot find the file specified.\r\n", 1
        return {k.lower(): v for k, v in log.temp_files.items()}[argv[1].lower()], "", 0
    return "", f"'{argv[0]}' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n", 1


# --------------------------------------------------------------------------------------------------
# cmd.exe and the Windows C runtime
# --------------------------------------------------------------------------------------------------


def _split_commands(line: str) -> list[str]:
    """Split at cmd.exe's unquoted ``&`` (one command after the other); ``&&`` is left to
    :func:`_apply_cmd_exe_quoting`, which reports it."""
    parts, start, quoted = [], 0, False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == "&" and not quoted and line[i - 1:i] != "^" and "&" not in (
                line[i + 1:i + 2], line[i - 1:i]):
            parts.append(line[start:i].strip())
            start = i + 1
    return parts + [line[start:].strip()]


#: %TEMP% of the account the bot signs in as (cmd.exe expands it before anything else).
TEMP = "C:\\Users\\svc-submitwatch\\AppData\\Local\\Temp"
_ECHO_INTO_FILE = re.compile(r'echo (?P<text>[^"]*[^\^ "])>"(?P<path>[^"]+)"', re.I)


def _is_echo_into_file(line: str) -> bool:
    return _ECHO_INTO_FILE.fullmatch(line.strip()) is not None


def _echo_into_file(log: EventLog, line: str) -> tuple[str, str, int]:
    """``echo TEXT>"file"``, the one redirection the simulator runs (how the bot writes a
    collector's bookmark, bot.sources.collector): TEXT with cmd.exe's ``^`` escapes undone,
    plus CRLF, into the file. Any other unquoted ``>`` is still reported, not run."""
    match = _ECHO_INTO_FILE.fullmatch(line.strip())
    assert match is not None
    text, problem = _apply_cmd_exe_quoting(match["text"])
    if problem:
        return "", f"SubmitWatch simulator: {problem}.\r\n", 1
    log.temp_files[match["path"]] = text + "\r\n"
    return "", "", 0


def _apply_cmd_exe_quoting(line: str) -> tuple[str, str | None]:
    """Apply cmd.exe's quoting to ``line``: (the line cmd.exe passes on, problem or None).

    WinRS runs commands through ``cmd.exe /c`` unless WINRS_SKIP_CMD_SHELL is
    set.  Outside double quotes ``^`` escapes the next character and ``< > | &``
    are operators.  An unquoted ``>`` in an XPath (``EventRecordID > 5``) would
    become a redirection and silently change the query, so operators are
    reported as a problem instead of being emulated.  (``%VAR%`` expansion is
    not simulated.)
    """
    out: list[str] = []
    quoted = False
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "^" and i + 1 < len(line):
            out.append(line[i + 1])
            i += 2
            continue
        elif not quoted and ch in "<>|&":
            return line, f"unquoted cmd.exe metacharacter {ch!r}: cmd.exe would treat it as a redirection, pipe or command separator"
        out.append(ch)
        i += 1
    return "".join(out), None


def split_windows_args(line: str) -> list[str]:
    """Split a command line the way the Microsoft C runtime builds ``argv``.

    Whitespace separates arguments outside double quotes; quotes are removed;
    ``2n`` backslashes before a quote become ``n`` and the quote toggles,
    ``2n+1`` give ``n`` and a literal quote; ``""`` inside quotes is a literal
    quote; other backslashes are literal.
    """
    args: list[str] = []
    cur: list[str] = []
    have_arg = quoted = False
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if ch == "\\":
            j = i
            while j < n and line[j] == "\\":
                j += 1
            count = j - i
            if j < n and line[j] == '"':
                cur.append("\\" * (count // 2))
                if count % 2:
                    cur.append('"')
                    i = j + 1
                else:
                    i = j
            else:
                cur.append("\\" * count)
                i = j
            have_arg = True
            continue
        if ch == '"':
            if quoted and i + 1 < n and line[i + 1] == '"':
                cur.append('"')
                i += 2
                continue
            quoted = not quoted
            have_arg = True
        elif ch in " \t" and not quoted:
            if have_arg:
                args.append("".join(cur))
                cur, have_arg = [], False
        else:
            cur.append(ch)
            have_arg = True
        i += 1
    if have_arg:
        args.append("".join(cur))
    return args


# --------------------------------------------------------------------------------------------------
# wevtutil
# --------------------------------------------------------------------------------------------------


def _reg_query(args: list[str], traits: WindowsTraits) -> tuple[str, str, int]:
    """``reg query <Nls\\CodePage key> /v ACP``, the one registry read the simulator answers."""
    if len(args) == 4 and args[0].lower() == "query" and args[1].upper() == NLS_KEY.upper() \
            and args[2].lower() == "/v" and args[3].upper() == "ACP":
        return (f"\r\n{NLS_KEY}\r\n    ACP    REG_SZ    {traits.ansi_codepage}\r\n\r\n", "", 0)
    return "", "ERROR: The system was unable to find the specified registry key or value.\r\n", 1


def run_wevtutil(log: EventLog, args: Iterable[str],
                 traits: WindowsTraits = WindowsTraits()) -> tuple[str, str, int]:
    """Run ``wevtutil <args>`` (already split into argv) against ``log``: (stdout, stderr, exit code).

    Supports ``gli Application`` and ``qe Application [/q:XPATH] [/f:xml]
    [/c:N] [/e:ROOT] [/rd:true|false]`` (long option names and ``-`` prefixes
    too).  Errors use wevtutil's exit codes: 87 invalid parameter, 15001
    invalid query, 15007 channel not found.  Output uses CRLF line endings.
    """
    args = list(args)
    if not args:
        return "", "The parameter is incorrect.\r\n", 87
    verb, rest = args[0].lower(), args[1:]
    positional: list[str] = []
    options: dict[str, str | None] = {}
    for arg in rest:
        if arg[:1] in ("/", "-") and len(arg) > 1:
            name, sep, value = arg[1:].partition(":")
            options[name.lower()] = value if sep else None
        else:
            positional.append(arg)
    # /uni is a global option (any verb); its effect, the encoding, is run_encoded's.
    unicode = options.pop("unicode", None) or options.pop("uni", None)
    if unicode is not None and unicode.lower() not in ("true", "false"):
        return "", f"Invalid /uni value {unicode!r}.\r\nThe parameter is incorrect.\r\n", 87

    def bad(detail: str) -> tuple[str, str, int]:
        return "", f"{detail}\r\nThe parameter is incorrect.\r\n", 87

    if verb in ("gli", "get-loginfo"):
        if len(positional) != 1 or options:
            return bad("Usage: wevtutil gli <LOG_NAME> (the simulator supports no options here)")
        if positional[0].lower() != log.channel.lower():
            return "", "Failed to read log information. The specified channel could not be found.\r\n", 15007
        return _gli_output(log), "", 0

    if verb in ("qe", "query-events"):
        aliases = {"query": "q", "format": "f", "count": "c", "element": "e", "reversedirection": "rd", "logfile": "lf",
                   "bookmark": "bm", "savebookmark": "sbm"}
        opts = {aliases.get(k, k): v for k, v in options.items()}
        unknown = set(opts) - {"q", "f", "c", "e", "rd", "lf", "bm", "sbm"}
        if unknown:
            return bad(f"Option {sorted(unknown)[0]!r} is not supported by the simulator.")
        if len(positional) != 1:
            return bad("Usage: wevtutil qe <LOG_NAME> [/q:XPATH] [/f:xml] [/c:N] [/e:ROOT] [/rd:true|false]")
        if (opts.get("lf") or "false").lower() != "false":
            return bad("/lf:true (reading a log file) is not supported by the simulator.")
        if positional[0].lower() != log.channel.lower():
            return "", "Failed to read events. The specified channel could not be found.\r\n", 15007
        fmt = (opts.get("f") or "text").lower()
        if fmt != "xml":
            return bad(f"/f:{fmt} is not supported by the simulator; use /f:xml.")
        count = None
        if "c" in opts:
            if not (opts["c"] or "").isdigit() or int(opts["c"] or "0") < 1:
                return bad(f"Invalid /c value {opts['c']!r}.")
            count = int(opts["c"] or "0")
        rd_text = "true" if "rd" in opts and opts["rd"] is None else (opts.get("rd") or "false").lower()
        if rd_text not in ("true", "false"):
            return bad(f"Invalid /rd value {opts['rd']!r}.")
        root = opts.get("e")
        if "e" in opts and not re.fullmatch(r"[A-Za-z_][\w.-]*", root or ""):
            return bad(f"Invalid /e value {root!r}.")
        try:
            query = compile_query(opts["q"] if opts.get("q") is not None else "*")
        except QueryError:
            return "", "Failed to read events. The specified query is invalid.\r\n", QueryError.win32_error
        if "bm" in opts or "sbm" in opts:
            if rd_text == "true":
                return bad("The simulator pages by bookmark oldest first only (/rd:false).")
            return _qe_bookmarked(log, query, count, opts.get("bm"), opts.get("sbm"), root, traits)
        events = log.query(query, count, reverse=rd_text == "true")
        return _qe_output([event_xml(ev) for ev in events], root, traits), "", 0

    return "", f"Unknown command: {args[0]}\r\nThe parameter is incorrect.\r\n", 87


_BOOKMARK_RECORD = re.compile(r"RecordId='(\d+)'")


def _qe_bookmarked(log: EventLog, query, count: int | None, start: str | None, save: str | None,
                   root: str | None, traits: WindowsTraits) -> tuple[str, str, int]:
    """``qe /bm:FILE /sbm:FILE``: the matching records after the bookmark in FILE, by the log's
    own numbering (a forwarded event's XML carries its origin's EventRecordID instead), and the
    bookmark of the last one written to the /sbm file.

    UNVERIFIED against Windows (bot.sources.collector says why either way is safe): that /bm
    starts after the bookmarked record rather than at it; the bookmark's layout (EvtRender's
    EvtRenderBookmark as documented); that /sbm writes nothing when no record matched."""
    after = None
    if start is not None:
        files = {k.lower(): v for k, v in log.temp_files.items()}
        text = files.get(start.lower())
        if text is None:
            return "", "Failed to open bookmark file. The system cannot find the file specified.\r\n", 2
        found = _BOOKMARK_RECORD.search(text)
        if found is None or f"Channel='{log.channel}'" not in text:
            return "", "Failed to read events. The bookmark is invalid.\r\n", 87
        after = int(found.group(1)) - (1 if log.bookmark_inclusive else 0)
    page = log.query_after(query, after, count)
    if save is not None and page:
        log.temp_files[save] = (f"<BookmarkList>\r\n  <Bookmark Channel='{log.channel}' "
                                f"RecordId='{page[-1][0]}' IsCurrent='true'/>\r\n</BookmarkList>")
    return _qe_output([event_xml(ev) for _, ev in page], root, traits), "", 0


def run_wecutil(log: EventLog, args: list[str]) -> tuple[str, str, int]:
    """``wecutil gr <subscription>`` (get-subscriptionruntimestatus) of a collector's log.

    The layout follows Microsoft's wecutil documentation and published transcripts: the
    subscription's lines, then ``EventSources:`` with each source's name alone on a line and
    its fields indented below. UNVERIFIED against a real collector: the exact indentation, the
    field order, LastHeartbeatTime's format (written here as ISO 8601 UTC with milliseconds and
    ``Z``), what is printed for a source never heard from (here: no LastHeartbeatTime line),
    and the not-found message and exit code (here: ERROR_NOT_FOUND, 1168).
    """
    if len(args) != 2 or args[0].lower() not in ("gr", "get-subscriptionruntimestatus"):
        return "", "SubmitWatch simulator: only `wecutil gr <subscription>` is supported.\r\n", 87
    name = args[1]
    found = {k.lower(): k for k in log.subscriptions}.get(name.lower())
    if found is None:
        return "", (f"Failed to open subscription. The subscription {name} could not be "
                    "found.\r\nElement not found.\r\n"), 1168
    lines = [f"Subscription: {found}", "\tRunTimeStatus: Active", "\tLastError: 0",
             "\tEventSources:"]
    for computer, (status, at) in log.subscriptions[found].items():
        lines += [f"\t\t{computer}", f"\t\t\tRunTimeStatus: {status}", "\t\t\tLastError: 0"]
        if at is not None:
            lines.append(f"\t\t\tLastHeartbeatTime: {_format_gli_time(at)}")
    return "\r\n".join(lines) + "\r\n", "", 0


def _qe_output(events: list[str], root: str | None, traits: WindowsTraits) -> str:
    """The events as ``qe /f:xml`` prints them, framed the way ``traits`` says."""
    sep = traits.separator
    head = '<?xml version="1.0" encoding="UTF-16"?>' + sep if traits.declaration else ""
    if not root:
        return head + "".join(event + sep for event in events)
    if not events:
        empty = traits.empty.replace("Events", root)
        return head + empty + ("\r\n" if empty else "")
    return head + f"<{root}>" + sep.join(events) + f"{sep}</{root}>\r\n"


def _gli_output(log: EventLog) -> str:
    """What ``wevtutil gli Application`` prints for ``log``, field for field in Windows' order."""
    info = log.info()
    lines = [
        f"creationTime: {_format_gli_time(info['creationTime'])}",  # type: ignore[arg-type]
        f"lastAccessTime: {_format_gli_time(info['lastAccessTime'])}",  # type: ignore[arg-type]
        f"lastWriteTime: {_format_gli_time(info['lastWriteTime'])}",  # type: ignore[arg-type]
        f"fileSize: {info['fileSize']}",
        f"attributes: {info['attributes']}",
        f"numberOfLogRecords: {info['numberOfLogRecords']}",
        f"oldestRecordNumber: {info['oldestRecordNumber']}",
    ]
    return "\r\n".join(lines) + "\r\n"


def _format_gli_time(value: datetime) -> str:
    """gli's timestamp form, milliseconds and a ``Z`` suffix: ``2026-03-08T09:00:00.000Z``."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
