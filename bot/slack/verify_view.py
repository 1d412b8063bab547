"""Block Kit for `/submitwatch verify`: who the account is and its Submit right per connector.

Pure: a Verified in, (fallback text, blocks) out. Every name here is untrusted (the account
comes from an event or a person; connector names, bindings, ranges and the directory's own
error messages come from AD) and reaches mrkdwn only through `show`/`literal`; the read-only
delegation commands go into preformatted blocks, which Slack shows literally. Within Slack's
limits: long lists are cut with the count said, connectors are capped, `fit` is the last guard.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.core.findings import ConnectorFact, Finding
from bot.slack.blocks import (
    BUDGET,
    context,
    divider,
    fit,
    literal,
    pack,
    plural,
    preformatted,
    section,
    show,
    size,
)

#: Connectors shown in one answer; more are counted, and naming one shows just that one.
MAX_CONNECTORS = 25
#: Budget kept for what follows the connectors (the line that counts the rest, the footer).
ROOM_FOR_THE_REST = 600
#: Values of one list (bindings, IP ranges) shown per connector; a relay may list hundreds.
MAX_VALUES = 8
#: How much of a name a line shows (escaped, it may grow up to five times).
NAME = 120
USAGE = "/submitwatch verify ACCOUNT 'SERVER\\Connector'"

#: The right in a few words, bold, for the connector's first line.
VERDICTS = {"granted": "granted", "denied": "DENIED", "not granted": "not granted",
            "unknown": "unknown"}


@dataclass(frozen=True)
class ServerProblem:
    """A server the directory could not answer for (in words), with any delegation commands."""

    server: str
    error: str
    fix: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verified:
    finding: Finding                      # the account, and every connector read
    asked: str | None                     # the SERVER\\Connector asked about; None: every one
    problems: tuple[ServerProblem, ...] = ()
    servers: tuple[str, ...] = ()         # the servers asked about


def directory_off(account: str) -> tuple[str, list[dict]]:
    """Without [directory] there is nothing to read: say so, and how to turn it on."""
    text = (f"Directory checks are off, so {literal(account, NAME)} cannot be verified: "
            "SubmitWatch has no `[directory]` in its configuration. To turn them on, add one "
            "with `urls` (like `['ldaps://dc01.contoso.com']`), `user` (a read-only domain "
            "account, `DOMAIN\\user`) and `password_env` (the environment variable holding its "
            "password), restart, and run `submitwatch check`: it says what the account can "
            "read and prints the read-only delegation when it needs one. Meanwhile "
            f"`/submitwatch fix {show(account, NAME)}` explains the likely cause from the events.")
    return f"Directory checks are off: {show(account, NAME)} cannot be verified", [section(text)]


def verify_view(verified: Verified, *, hidden_servers: int = 0) -> tuple[str, list[dict]]:
    finding = verified.finding
    where = literal(verified.asked, NAME) if verified.asked else (
        "the connectors of " + (", ".join(f"*{show(s, 64)}*" for s in verified.servers)
                                or "no server (none is configured)"))
    blocks = [section(f"*Verify* {literal(finding.account, NAME)} on {where}: read from Active "
                      "Directory just now, read-only")]
    if finding.error:
        blocks += _error_blocks("The directory could not answer", finding.error, finding.fix)
        return f"Verify {show(finding.account, NAME)}: the directory could not answer", \
            fit(blocks)
    blocks.append(section("\n".join(_account_lines(finding))))
    if verified.problems:  # why some server's connectors are missing, before the ones shown
        blocks += _problem_blocks(verified.problems)
    blocks.append(divider())
    connectors = _ordered(finding.connectors)
    # one section per connector and no divider between them: at most 25 (they fit in 50
    # blocks), and no more than fit Slack's size budget with the line that counts the rest
    shown = 0
    for fact in connectors[:MAX_CONNECTORS]:
        one = section("\n".join(_connector_lines(fact)))
        if size([*blocks, one]) > BUDGET - ROOM_FOR_THE_REST:
            break
        blocks.append(one)
        shown += 1
    if len(connectors) > shown:
        blocks.append(context(f"{len(connectors) - shown} more connector(s) not shown "
                              f"(those this account's events named come first); name one: "
                              f"`{USAGE}`."))
    if not connectors and not verified.problems:
        blocks.append(section("No connector to check: no server is configured. Name one: "
                              f"`{USAGE}`." if not verified.servers else
                              "The directory lists no Receive connector on those servers."))
    if hidden_servers:
        blocks.append(context(f"{hidden_servers} more configured server(s) not asked about; "
                              f"name a connector: `{USAGE}`."))
    return _fallback(finding), fit(blocks)


def _fallback(finding: Finding) -> str:
    """The notification text: the account and the gist, in one line."""
    if not finding.found:
        return f"Verify {show(finding.account, NAME)}: no such account in the directory"
    if finding.builtin:  # no right matters then, so the counts would mislead
        return (f"Verify {show(finding.account, NAME)}: the domain's built-in "
                f"{finding.builtin} (RID {finding.rid}), refused whatever its rights")
    rights = [c.right for c in finding.connectors if c.found]
    counts = ", ".join(f"{rights.count(r)} {r}" for r in VERDICTS if r in rights)
    return f"Verify {show(finding.account, NAME)}: Submit {counts or 'on no connector'}"


def _account_lines(finding: Finding) -> list[str]:
    if not finding.found:
        return [f"*Account*: no account {literal(finding.account, NAME)} in the directory (looked "
                "up as DOMAIN\\user, UPN or sAMAccountName in the domain of the DC SubmitWatch "
                "binds to). Check the name as the event wrote it, or whether it lives in "
                "another domain."]
    lines = [f"*Account*: {literal(finding.account, NAME)} is in the directory: SID "
             f"`{show(finding.sid or '?', 80)}`, RID {finding.rid}, "
             f"{plural(finding.groups, 'token group')}"
             + ("" if finding.groups else " (none readable: grants through groups cannot be "
                                          "seen)")]
    if finding.builtin == "Administrator":
        lines.append("• It *is* the domain's built-in Administrator (RID 500, whatever it is "
                     "named now): Exchange refuses this account SMTP submission whatever a "
                     "connector grants (event 1020). No permission fixes it: use a dedicated "
                     "account.")
    elif finding.builtin == "Guest":
        lines.append("• It *is* the domain's built-in Guest (RID 501): Exchange refuses it SMTP "
                     "submission whatever a connector grants (event 1020). Use a dedicated "
                     "account.")
    if finding.disabled:
        lines.append("• The account is *disabled* in the directory: it cannot log on at all, "
                     "whatever its rights.")
    return lines


def _ordered(facts: Sequence[ConnectorFact]) -> list[ConnectorFact]:
    """The connectors this account's events named first, otherwise as the directory listed
    them (per server, by name), so a cut keeps the ones that matter."""
    return sorted(facts, key=lambda f: not f.named)


def _connector_lines(fact: ConnectorFact) -> list[str]:
    mark = " (named by this account's events)" if fact.named else ""
    title = f"*Connector* {literal(fact.place, NAME)}{mark}"
    if not fact.found:
        return [f"{title}: *not found*: no Receive connector of that name on that server in "
                "the directory. `/submitwatch verify ACCOUNT` without a connector lists the "
                "server's connectors."]
    lines = [f"{title}: Submit *{VERDICTS.get(fact.right, show(fact.right, 20))}*",
             f"• {show(fact.why, 1000)}"]
    if fact.enabled is False:
        lines.append("• The connector is *disabled*: it takes no mail at all, whatever the right.")
    lines.append("• " + "; ".join([
        f"enabled: {_yes_no(fact.enabled)}",
        f"role: {show(fact.role, 40) if fact.role else 'not set'}",
        f"auth: {_values(fact.auth) or 'none'}",
        "permission groups: " + ("unknown (its DACL could not be read)"
                                 if fact.permission_groups is None else
                                 _values(fact.permission_groups) or "none")]))
    lines.append(f"• bindings: {_values(fact.bindings) or 'none'}")
    lines.append(f"• remote IP ranges: {_values(fact.remote_ip_ranges) or 'none'}")
    return lines


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def _values(values: Sequence[str]) -> str:
    shown = ", ".join(literal(v, 64) for v in values[:MAX_VALUES])
    return shown + (f" and {len(values) - MAX_VALUES} more" if len(values) > MAX_VALUES else "")


def _problem_blocks(problems: Sequence[ServerProblem]) -> list[dict]:
    """Every server the directory could not answer for, in as few blocks as fit, and their
    delegation commands together (each once: the same account needs the same grant)."""
    lines = [f"*{show(p.server, 64)}*: the directory could not answer: {show(p.error, 1000)}"
             for p in problems]
    blocks = pack(lines)
    fix = list(dict.fromkeys(line for p in problems for line in p.fix))
    if fix:
        blocks.append(preformatted("\n".join(fix)))
    return blocks


def _error_blocks(title: str, error: str, fix: Sequence[str]) -> list[dict]:
    blocks = [section(f"{title}: {show(error, 1500)}")]
    if fix:
        # the delegation an admin can grant (read-only), shown literally: DNs hold commas
        # and spaces that mrkdwn would not keep intact
        blocks.append(preformatted("\n".join(fix)))
    return blocks
