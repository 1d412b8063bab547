"""The device line: which client addresses failed with an incident's account, as Exchange's SMTP
Receive protocol log tells (bot.core.devices), on the alert, in Show fix, `show`, the digest and
history.

Every address and name came from the network (the log; reverse DNS): untrusted text, shown
through `rt.name` in rich text and `literal` in mrkdwn. An address is shown only when a log line
gave it: when none did, the line says why, never a guess. Where a connector writes no protocol
log, Show fix and `show` give the read-only check and the change (its dry run first), built by
bot.exchange.remediation, whose quoting rules refuse a name that cannot be quoted.
Pure: no I/O, no clock.
"""
from __future__ import annotations

from bot.core.devices import (
    FAILED,
    FOUND,
    NO_MATCH,
    NOT_LOGGING,
    PENDING,
    DeviceLookup,
    DeviceSeen,
)
from bot.exchange.remediation import (
    UnsafeValueError,
    protocol_logging_check_command,
    protocol_logging_on_command,
)
from bot.slack import richtext as rt
from bot.slack.blocks import literal, plural
from bot.slack.richtext import Part

LINE_MOST = 3          # addresses on the alert's device line
FULL_MOST = 10         # ... in Show fix and `show`
CONNECTORS_MOST = 5    # connectors named on the line as not logging
COMMANDS_MOST = 3      # ... given their commands (two blocks each; Show fix holds 50 blocks)
ADDRESS_LIMIT = 64     # characters of an address shown (IPv6 with a zone is under 64)
NAME_LIMIT = 120       # ... of the name reverse DNS gave
PROBLEM_LIMIT = 300    # ... of why the log could not be read

#: What turning the protocol log on costs, in words (DOMAIN.md section 7: Exchange's defaults).
LOGGING_COST = (
    "What it costs: disk on that server. Exchange writes the log in files of up to 10 MB, "
    "keeps them 30 days by default and deletes the oldest sooner once the folder reaches its "
    "size bound (250 MB by default, shared by the transport service's connectors). Mail flow "
    "does not change: the connector accepts and refuses what it did before.")


def ranked(lookup: DeviceLookup) -> list[DeviceSeen]:
    """The devices, most sessions first (the latest failing first among equals)."""
    return sorted(lookup.devices, key=lambda d: (-d.sessions, -d.last.timestamp()))


def device_line(lookup: DeviceLookup) -> list[Part]:
    """The alert's Devices line: at most three addresses, or why none is named."""
    return _line(lookup, most=LINE_MOST, full=False)


def device_blocks(lookup: DeviceLookup) -> list[dict]:
    """For Show fix and `show`: the Devices line (more addresses, with first and last time),
    and where a connector does not log, how to check it and turn its log on."""
    blocks = [rt.rich(_line(lookup, most=FULL_MOST, full=True))]
    if lookup.state == NOT_LOGGING:
        blocks += logging_blocks(lookup.quiet_connectors)
    return blocks


def device_brief(lookup: DeviceLookup | None) -> str:
    """A few words for a digest or history line (safe mrkdwn): `from 10.20.30.41 (+2)`;
    "" when nothing is known."""
    if lookup is None:
        return ""
    if lookup.state == FOUND and lookup.devices:
        top, *rest = ranked(lookup)
        return f"from {literal(top.address, ADDRESS_LIMIT)}" + (f" (+{len(rest)})" if rest else "")
    if lookup.state == NO_MATCH:
        return "no protocol-log line matched"
    if lookup.state == NOT_LOGGING:
        return "device unknown: the connector writes no protocol log"
    if lookup.state == FAILED:
        return "device unknown: the protocol log could not be read"
    return ""


def logging_blocks(connectors: tuple[str, ...]) -> list[dict]:
    """Per connector that does not log: the read-only check, the change's dry run and the
    change; a name that cannot be quoted gets the reason instead of commands."""
    blocks = [rt.rich([rt.bold("To name the devices, turn the protocol log on"),
                       " (ProtocolLoggingLevel Verbose). Check it first (read-only), then run "
                       "the change with -WhatIf, then without. ", LOGGING_COST])]
    for identity in connectors[:COMMANDS_MOST]:
        where: list[Part] = ["Connector ", rt.name(identity, NAME_LIMIT)]
        try:
            commands = "\n".join([
                "# read-only: its protocol logging level (None: it writes no log)",
                protocol_logging_check_command(identity),
                "# dry run: what the change would do, changing nothing",
                protocol_logging_on_command(identity, whatif=True),
                "# the change: log every SMTP session on this connector",
                protocol_logging_on_command(identity),
            ])
        except UnsafeValueError as exc:
            blocks.append(rt.rich([*where, ": ", rt.bold("no command for it: "), str(exc)]))
            continue
        blocks += [rt.rich(where), rt.preformatted(commands)]
    if len(connectors) > COMMANDS_MOST:
        blocks.append(rt.rich([f"{len(connectors) - COMMANDS_MOST} more connector(s) do not "
                               "log: the same commands, with each one's identity."]))
    return blocks


def _line(lookup: DeviceLookup, *, most: int, full: bool) -> list[Part]:
    line: list[Part] = [rt.bold("Devices: ")]
    state = lookup.state
    if state == FOUND:
        devices = ranked(lookup)
        for n, device in enumerate(devices[:most]):
            line += (["; "] if n else []) + _device(device, full=full)
        if not devices:
            line.append("none named")
        if len(devices) > most:
            line.append(f"; {len(devices) - most} more")
        if lookup.unmatched_events:
            line.append(f"; {plural(lookup.unmatched_events, 'event')} matched no log line")
        if lookup.problem:
            line += ["; the last read of the protocol log failed: ",
                     rt.name(lookup.problem, PROBLEM_LIMIT, strong=False)]
    elif state == NO_MATCH:
        line.append("no line in the protocol log matched these events")
    elif state == NOT_LOGGING:
        quiet = lookup.quiet_connectors
        if quiet:
            line += rt.joined(rt.name(c, NAME_LIMIT, strong=False)
                              for c in quiet[:CONNECTORS_MOST])
            if len(quiet) > CONNECTORS_MOST:
                line.append(f" and {len(quiet) - CONNECTORS_MOST} more")
            line.append(" do not" if len(quiet) > 1 else " does not")
        else:
            line.append("the connector does not")
        line.append(" write a protocol log by default (ProtocolLoggingLevel None): no device "
                    "can be named")
        if not full:
            line.append(". Show fix tells how to turn it on")
    elif state == FAILED:
        line += ["the protocol log could not be read: ",
                 rt.name(lookup.problem or "no reason was given", PROBLEM_LIMIT, strong=False)]
    elif state == PENDING:
        line.append("not looked up yet")
    else:
        raise ValueError(f"unknown device look-up state {state!r}")
    return line


def _device(device: DeviceSeen, *, full: bool) -> list[Part]:
    """One address: its name, sessions, when; whether its log lines named the account."""
    parts: list[Part] = [rt.name(device.address, ADDRESS_LIMIT)]
    if device.name:
        parts += [" (", rt.name(device.name, NAME_LIMIT, strong=False), ")"]
    parts.append(f" {plural(device.sessions, 'session')}, ")
    if full and device.first != device.last:
        parts += ["first ", rt.date(device.first), ", "]
    parts += ["last ", rt.date(device.last)]
    if not device.account_shown:
        parts.append(" (account not shown in the log)")
    return parts
