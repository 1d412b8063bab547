"""bot.exchange.advice: the cause and the ordered fixes for each connector kind x account kind x
directory finding, on Exchange 2010, 2013 and 2019 (DOMAIN.md section 6), and every command it
prints parsed as PowerShell with each argument one literal equal to its input."""
from __future__ import annotations

import dataclasses
import itertools
import uuid
from datetime import UTC, datetime

import pytest

from bot.core.findings import ConnectorFact, Finding
from bot.directory.adcheck import deciding_entry
from bot.directory.reader import Principal, Right
from bot.directory.secdesc import Ace
from bot.exchange import advice as adv
from bot.exchange.advice import (
    ACCOUNT_KINDS,
    CAUSES,
    Advice,
    Verdict,
    advise,
    classify_account,
    classify_connector,
    honest_verify_command,
)
from bot.exchange.remediation import SUBMIT_RIGHT, UnsafeValueError
from tests.pwsh_parse import DEFAULT_SWITCHES, Command, parse_pipeline

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
VERSIONS = ("2010", "2013", "2019")
SWITCHES = DEFAULT_SWITCHES | {"-deny"}
DOMAIN_SID = "S-1-5-21-1004336348-1177238915-682003330"
GROUP_SID = f"{DOMAIN_SID}-1180"
ALL_AUTH = ("Tls", "Integrated", "BasicAuth", "BasicAuthRequireTLS", "ExchangeServer")
EVERYWHERE = ("0.0.0.0-255.255.255.255", "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")


# --- the worlds the table is made of ------------------------------------------------------------

#: connector spec -> (its name per version, the directory's reading: (groups, ranges) or None)
CONNECTORS = {
    "frontend_name": (lambda v: "Default EX01" if v == "2010" else "Default Frontend EX01",
                      None),
    "internet_dir": (lambda v: "Default EX01" if v == "2010" else "Default Frontend EX01",
                     (("AnonymousUsers",), EVERYWHERE)),
    "relay_name": (lambda v: "Relay Scanners", None),
    "relay_dir": (lambda v: "Relay Scanners", (("AnonymousUsers",), ("10.1.2.0/24",))),
    "client_name": (lambda v: "Client EX01" if v == "2010" else "Client Frontend EX01", None),
    "client_dir": (lambda v: "Client EX01" if v == "2010" else "Client Frontend EX01",
                   (("ExchangeUsers",), EVERYWHERE)),
    "proxy_name": (lambda v: "Client EX01" if v == "2010" else "Client Proxy EX01", None),
    "outbound_name": (lambda v: "Outbound Proxy Frontend EX01", None),
    "edge_name": (lambda v: "Default internal receive connector EX01", None),
    "none": (lambda v: None, None),
}

#: The kind each connector spec is, per version (2010 has no Default Frontend: its Default
#: connector has ExchangeUsers; an unknown name is a custom connector).
KIND = {
    ("frontend_name", "2010"): adv.ADMITS, ("frontend_name", "2013"): adv.INTERNET_FACING,
    ("frontend_name", "2019"): adv.INTERNET_FACING,
    **{("internet_dir", v): adv.INTERNET_FACING for v in VERSIONS},
    **{("relay_name", v): adv.CUSTOM for v in VERSIONS},
    **{("relay_dir", v): adv.CUSTOM for v in VERSIONS},
    **{("client_name", v): adv.ADMITS for v in VERSIONS},
    **{("client_dir", v): adv.ADMITS for v in VERSIONS},
    **{("proxy_name", v): adv.ADMITS for v in VERSIONS},
    ("outbound_name", "2010"): adv.CUSTOM, ("outbound_name", "2013"): adv.SERVERS_ONLY,
    ("outbound_name", "2019"): adv.SERVERS_ONLY,
    **{("edge_name", v): adv.EDGE for v in VERSIONS},
    **{("none", v): adv.UNKNOWN for v in VERSIONS},
}

#: account spec -> (as logged, what the directory knows of it: sid, rid, builtin)
ACCOUNTS = {
    "ordinary": ("CONTOSO\\svc-scanner", (f"{DOMAIN_SID}-1105", 1105, None)),
    "computer": ("CONTOSO\\APP01$", (f"{DOMAIN_SID}-1301", 1301, None)),
    "builtin": ("CONTOSO\\Boss", (f"{DOMAIN_SID}-500", 500, "Administrator")),
    "guest_sid": (f"{DOMAIN_SID}-501", (f"{DOMAIN_SID}-501", 501, "Guest")),
    "sid": (f"{DOMAIN_SID}-1107", None),
}

#: finding spec -> (the fact's right, the richer verdict the reader would give, or None)
FINDINGS = {
    "none": None,
    "not granted": ("not granted", None),
    "granted": ("granted", Verdict("granted", "granted through Scanners", "CONTOSO\\Scanners",
                                   GROUP_SID)),
    "denied_explicit": ("denied", Verdict("denied", "denied", "svc-scanner",
                                          f"{DOMAIN_SID}-1105", explicit=True, inherited=False)),
    "denied_group": ("denied", Verdict("denied", "denied", "CONTOSO\\No SMTP", GROUP_SID,
                                       inherited=False)),
    "denied_network": ("denied", Verdict("denied", "denied", "S-1-5-2", "S-1-5-2",
                                         inherited=False, scope="extended")),
    "denied_inherited": ("denied", Verdict("denied", "denied", "CONTOSO\\No SMTP", GROUP_SID,
                                           inherited=True)),
    "denied_unnamed": ("denied", None),
    "unknown": ("unknown", None),
}


def build(version: str, conn: str, acct: str, found: str, event: int = 1018,
          still_failing: bool | None = None) -> Advice:
    name_of, reading = CONNECTORS[conn]
    name = name_of(version)
    logged, known = ACCOUNTS[acct]
    spec = FINDINGS[found]
    finding = verdict = None
    if spec is not None:
        right, verdict = spec
        groups, ranges = reading if reading else (None, ())
        facts = (ConnectorFact("EX01", name, True, right=right, why=f"{right} on EX01\\{name}",
                               enabled=True, bindings=("0.0.0.0:25",), remote_ip_ranges=ranges,
                               role=None if version == "2010" else "FrontendTransport",
                               auth=ALL_AUTH, permission_groups=groups),) if name else ()
        sid, rid, builtin = known if known else (None, None, None)
        finding = Finding(logged, T0, found=known is not None, sid=sid, rid=rid,
                          builtin=builtin, groups=4, connectors=facts)
    elif reading is not None:   # the directory's reading, without a finding for the account
        groups, ranges = reading
        finding = Finding(logged, T0, found=False, connectors=(
            ConnectorFact("EX01", name, True, right="unknown", why="not in the directory",
                          remote_ip_ranges=ranges, auth=ALL_AUTH, permission_groups=groups),))
    return advise(event, logged, "EX01.contoso.local", name, version=version, finding=finding,
                  verdict=verdict, still_failing=still_failing)


def expected_cause(version: str, conn: str, acct: str, found: str, event: int = 1018) -> str:
    """The precedence the issue asks for, as a table reads it."""
    # the directory tells RID 500; a SID string tells it by itself. An Edge server's accounts
    # are its own (AD LDS): what Active Directory says of a namesake does not count there.
    edge = KIND[(conn, version)] == adv.EDGE
    builtin = acct == "guest_sid" or (acct == "builtin" and found != "none" and not edge)
    if event == 1020:
        return adv.BUILTIN if builtin or version != "2010" else adv.LEGACY_1020
    if builtin:
        return adv.BUILTIN
    kind = KIND[(conn, version)]
    if kind == adv.EDGE:
        return adv.EDGE_TRANSPORT
    if found.startswith("denied") and kind != adv.UNKNOWN:
        return adv.DENY_DECIDES
    if found == "granted" and kind != adv.UNKNOWN:
        return adv.GRANTED_IN_DIRECTORY
    if acct == "computer":
        return adv.COMPUTER_ACCOUNT
    return {adv.INTERNET_FACING: adv.INTERNET_AUTH, adv.CUSTOM: adv.CUSTOM_NO_USERS,
            adv.ADMITS: adv.SHOULD_ADMIT, adv.SERVERS_ONLY: adv.SERVER_CONNECTOR,
            adv.UNKNOWN: adv.UNKNOWN_CONNECTOR}[kind]


ALL = list(itertools.product(VERSIONS, CONNECTORS, ACCOUNTS, FINDINGS))


# --- every combination: the cause, and what must never be offered -------------------------------

@pytest.mark.parametrize("version, conn, acct, found", ALL)
def test_cause_for_every_connector_account_and_finding(version, conn, acct, found):
    a = build(version, conn, acct, found)
    assert a.cause == expected_cause(version, conn, acct, found), a.explanation
    assert a.event_id == 1018
    assert a.fixes and a.explanation and a.refusal is None
    assert set(a.rests_on) <= {adv.DOCS, adv.CODE, adv.INFERENCE}
    assert set(CAUSES[a.cause][1]) <= set(a.rests_on)
    if a.connector_kind.source == "name" and a.cause in (
            adv.INTERNET_AUTH, adv.CUSTOM_NO_USERS, adv.SHOULD_ADMIT, adv.SERVER_CONNECTOR):
        assert adv.INFERENCE in a.rests_on
    # never a grant where no grant can help or belongs
    if a.cause in (adv.DENY_DECIDES, adv.GRANTED_IN_DIRECTORY, adv.COMPUTER_ACCOUNT,
                   adv.BUILTIN, adv.UNKNOWN_CONNECTOR, adv.SERVER_CONNECTOR):
        assert not a.grants
        assert not any("Add-ADPermission" in s.command for f in a.fixes for s in f.steps
                       if "Deny" not in s.command)
    if acct == "computer" or a.account.kind in (adv.BUILTIN_ADMIN, adv.GUEST):
        assert not a.grants
    # the grant on an internet-facing connector comes last and says it widens it
    for fix in a.fixes:
        if fix.widens:
            assert fix is a.fixes[-1] and "widens" in fix.title
    if a.cause == adv.INTERNET_AUTH:
        assert [f.id for f in a.fixes] == ["use_587", "send_anonymously", "grant_submit"]
        assert a.fixes[-1].widens
    # commands: run on the Edge server for an Edge connector, and parse everywhere
    assert ("Edge Transport server" in a.where) == (a.connector_kind.kind == adv.EDGE)
    for command in commands(a):
        check_command(command)


@pytest.mark.parametrize("version, conn, acct, found",
                         [(v, c, a, f) for v, c, a, f in ALL if f in ("none", "granted",
                                                                      "denied_group")])
def test_1020_keeps_its_rule(version, conn, acct, found):
    a = build(version, conn, acct, found, event=1020)
    assert a.cause == expected_cause(version, conn, acct, found, 1020)
    if a.cause == adv.BUILTIN:
        assert not a.grants and a.verify == ()
        assert [f.id for f in a.fixes] == ["own_account"]
        assert "Granting ms-Exch-SMTP-Submit cannot fix this" in a.explanation
        # 2013: read in its code; 2010 (a built-in account), 2016, 2019, SE, unknown: inferred
        assert (adv.INFERENCE in a.rests_on) == (version != "2013")
        if version == "2019":
            assert "inferred from 2013's code" in a.explanation
    else:
        assert a.fixes[0].id == "own_account"
        assert a.rests_on == (adv.DOCS, adv.INFERENCE)
    for command in commands(a):
        check_command(command)


# --- the rows a reviewer reads: ordered fixes per case -------------------------------------------

ROWS = [
    # version, connector, account, finding -> fix ids in order
    ("2019", "frontend_name", "ordinary", "none", ["use_587", "send_anonymously",
                                                   "grant_submit"]),
    ("2013", "internet_dir", "sid", "not granted", ["use_587", "send_anonymously",
                                                    "grant_submit"]),
    ("2010", "internet_dir", "ordinary", "not granted", ["use_587", "send_anonymously",
                                                         "grant_submit"]),
    ("2019", "relay_name", "ordinary", "none", ["stop_authenticating", "add_exchange_users",
                                                "grant_submit_and_relay"]),
    ("2010", "relay_dir", "ordinary", "not granted", ["stop_authenticating",
                                                      "add_exchange_users",
                                                      "grant_submit_and_relay"]),
    ("2019", "client_name", "ordinary", "none", ["find_deciding_entry", "grant_submit"]),
    ("2013", "client_dir", "ordinary", "unknown", ["find_deciding_entry", "grant_submit"]),
    ("2010", "client_name", "ordinary", "not granted", ["grant_submit",
                                                        "restore_exchange_users"]),
    ("2019", "outbound_name", "ordinary", "none", ["use_587"]),
    ("2019", "frontend_name", "computer", "none", ["exchange_servers_group",
                                                   "own_connector_by_address"]),
    ("2010", "relay_dir", "computer", "not granted", ["exchange_servers_group",
                                                      "own_connector_by_address"]),
    ("2019", "client_dir", "ordinary", "denied_explicit", ["remove_deny"]),
    ("2013", "relay_dir", "ordinary", "denied_group", ["remove_deny", "leave_group"]),
    ("2019", "internet_dir", "ordinary", "denied_network", ["remove_deny"]),
    ("2010", "client_dir", "computer", "denied_inherited", ["remove_inherited_deny",
                                                            "leave_group"]),
    ("2019", "client_dir", "ordinary", "denied_unnamed", ["remove_deny"]),
    ("2019", "client_dir", "ordinary", "granted", ["wait_for_cache", "find_hidden_deny",
                                                   "restart_transport"]),
    ("2019", "edge_name", "ordinary", "none", ["use_587", "grant_submit"]),
    ("2019", "edge_name", "computer", "granted", ["use_587"]),
    ("2013", "none", "ordinary", "none", ["find_connector"]),
    ("2019", "client_dir", "builtin", "not granted", ["own_account"]),
]


@pytest.mark.parametrize("version, conn, acct, found, ids", ROWS)
def test_ordered_fixes(version, conn, acct, found, ids):
    assert [f.id for f in build(version, conn, acct, found).fixes] == ids


def test_1018_on_default_frontend_587_first_anonymous_second_grant_last():
    a = build("2019", "frontend_name", "ordinary", "none")
    assert a.connector == "EX01\\Default Frontend EX01"
    assert (a.connector_kind.kind, a.connector_kind.source) == (adv.INTERNET_FACING, "name")
    use_587, anonymous, grant = a.fixes
    assert use_587.lines() == [
        "# read-only: the client submission connector",
        "Get-ReceiveConnector -Identity 'EX01\\Client Frontend EX01' | Format-List Identity,"
        "Enabled,Bindings,RemoteIPRanges,PermissionGroups,AuthMechanism,TransportRole"]
    assert "STARTTLS" in use_587.title and "port-25 binding" in use_587.detail
    assert anonymous.steps == () and "internal recipients only" in anonymous.title
    assert grant.widens and grant.grants and "widens the internet-facing connector" in grant.title
    on = "Get-ReceiveConnector -Identity 'EX01\\Default Frontend EX01' | "
    assert [s.command for s in grant.steps] == [
        on + "Add-ADPermission -User 'CONTOSO\\svc-scanner' -ExtendedRights "
             "'ms-Exch-SMTP-Submit' -WhatIf",
        on + "Add-ADPermission -User 'CONTOSO\\svc-scanner' -ExtendedRights "
             "'ms-Exch-SMTP-Submit'",
        on + "Remove-ADPermission -User 'CONTOSO\\svc-scanner' -ExtendedRights "
             "'ms-Exch-SMTP-Submit' -Confirm:$false"]
    assert grant.steps[0].comment.startswith("try it first")
    assert "only if the grant added the entry" in grant.steps[2].comment
    assert "authenticate on port 25" in a.explanation


def test_on_2010_the_587_connector_is_client_srv():
    a = build("2010", "internet_dir", "ordinary", "not granted")
    assert "Client EX01" in a.fixes[0].detail
    assert "'EX01\\Client EX01'" in a.fixes[0].steps[0].command
    assert a.connector_kind.source == "directory" and a.connector_kind.role == "HubTransport"


def test_custom_connector_gets_exchange_users_added_to_the_groups_it_has():
    a = build("2019", "relay_dir", "ordinary", "not granted")
    add = a.fixes[1]
    each = ("Get-ReceiveConnector -Identity 'EX01\\Relay Scanners' | ForEach-Object { "
            "Set-ReceiveConnector -Identity 'EX01\\Relay Scanners' -PermissionGroups ")
    assert [s.command for s in add.steps] == [
        "Get-ReceiveConnector -Identity 'EX01\\Relay Scanners' | Format-List Identity,Enabled,"
        "Bindings,RemoteIPRanges,PermissionGroups,AuthMechanism,TransportRole",
        each + '"$($_.PermissionGroups), ExchangeUsers" -WhatIf }',
        each + '"$($_.PermissionGroups), ExchangeUsers" }',
        each + "((@(\"$($_.PermissionGroups)\" -split ',\\s*') -ne 'ExchangeUsers' -join ', ') "
               "-replace '^$', 'None') }"]
    # -PermissionGroups replaces the whole list, and the directory cannot see ExchangeServers,
    # ExchangeLegacyServers or Partners: no command sets a list built from what it showed.
    assert not any("-PermissionGroups '" in s.command for s in add.steps)
    assert not add.steps[0].changes and "already lists ExchangeUsers" in add.steps[0].comment
    assert add.steps[3].comment.startswith("undo, only if the change added it")
    grant = a.fixes[2]
    rights = [s.command.split("-ExtendedRights ")[1].split(" ")[0] for s in grant.steps]
    assert rights == ["'ms-Exch-SMTP-Submit'"] * 3 + ["'ms-Exch-SMTP-Accept-Any-Recipient'"] * 3
    assert "fails at RCPT" in a.explanation


def test_custom_connector_without_the_directory_gives_no_permission_groups_change():
    a = build("2019", "relay_name", "ordinary", "none")
    add = a.fixes[1]
    assert not any(s.command.startswith("Set-ReceiveConnector") for s in add.steps)
    assert all(not s.changes for s in add.steps)
    assert "replaces the whole list" in add.detail


def test_a_default_connector_changed_since_setup_is_not_called_custom():
    a = build("2019", "frontend_name", "ordinary", "not granted")   # groups not read: by name
    assert a.cause == adv.INTERNET_AUTH
    fact = ConnectorFact("EX01", "Default Frontend EX01", True, right="not granted",
                         remote_ip_ranges=EVERYWHERE, auth=("Tls",), permission_groups=())
    kind = classify_connector("EX01\\Default Frontend EX01", version="2019", fact=fact)
    assert (kind.kind, kind.default) == (adv.CUSTOM, True)
    found = Finding("CONTOSO\\svc-scanner", T0, found=True, rid=1105, connectors=(fact,))
    a = advise(1018, "CONTOSO\\svc-scanner", "EX01", "Default Frontend EX01", version="2019",
               finding=found)
    assert "changed since setup" in a.explanation and "not one of" not in a.explanation


def test_computer_account_no_per_account_grant():
    a = build("2019", "relay_dir", "computer", "not granted")
    first = a.fixes[0]
    assert first.steps[0].command == ("Get-ExchangeServer -Identity 'APP01' | Format-List "
                                      "Name,ServerRole")
    assert first.steps[-2].command.endswith(
        "-PermissionGroups \"$($_.PermissionGroups), ExchangeServers\" }")
    assert "ExchangeServers" in first.title and "APP01" in first.title
    assert "RemoteIPRanges" in a.fixes[1].detail or "remote IP ranges" in a.fixes[1].detail
    assert not a.grants and "never the fix" in a.explanation


def test_deny_removal_for_the_trustee_never_a_grant():
    a = build("2013", "relay_dir", "ordinary", "denied_group")
    remove, leave = a.fixes
    on = "Get-ReceiveConnector -Identity 'EX01\\Relay Scanners' | "
    assert [s.command for s in remove.steps] == [
        on + f"Remove-ADPermission -User '{GROUP_SID}' -ExtendedRights 'ms-Exch-SMTP-Submit' "
             "-Deny -WhatIf",
        on + f"Remove-ADPermission -User '{GROUP_SID}' -ExtendedRights 'ms-Exch-SMTP-Submit' "
             "-Deny -Confirm:$false",
        on + f"Add-ADPermission -User '{GROUP_SID}' -ExtendedRights 'ms-Exch-SMTP-Submit' "
             "-Deny"]
    assert "CONTOSO\\No SMTP" in remove.detail and "CONTOSO\\No SMTP" in a.explanation
    assert leave.steps == () and "group" in leave.title
    assert "no grant can fix this" in a.explanation and not a.grants


def test_deny_on_network_for_all_extended_rights():
    a = build("2019", "internet_dir", "ordinary", "denied_network")
    (remove,) = a.fixes
    assert ("-User 'S-1-5-2' -AccessRights 'ExtendedRight' -Deny -Confirm:$false"
            in remove.steps[1].command)
    assert "NT AUTHORITY\\NETWORK" in a.explanation and "every account" in a.explanation


def test_inherited_deny_is_not_removed_on_the_connector():
    a = build("2019", "client_dir", "ordinary", "denied_inherited")
    assert a.fixes[0].id == "remove_inherited_deny" and a.fixes[0].steps == ()
    assert "inherited from a parent container" in a.explanation


def test_deny_without_a_named_trustee_shows_the_listing():
    a = build("2019", "client_dir", "ordinary", "denied_unnamed")
    (remove,) = a.fixes
    assert [s.command for s in remove.steps] == [honest_verify_command("EX01\\Client Frontend "
                                                                       "EX01")]
    assert not remove.steps[0].changes


@pytest.mark.parametrize("still, first, words", [
    (None, "wait_for_cache", "configuration cache"),
    (True, "find_hidden_deny", "Events were logged after"),
    (False, "nothing_to_do", "No event has been logged since"),
])
def test_granted_in_the_directory_explains_and_offers_no_grant(still, first, words):
    a = build("2019", "client_dir", "ordinary", "granted", still_failing=still)
    assert a.cause == adv.GRANTED_IN_DIRECTORY and not a.grants
    assert a.fixes[0].id == first and words in a.explanation
    for part in ("granted after the event", "configuration cache", "This Organization",
                 "sIDHistory", "A grant would change nothing", "through CONTOSO\\Scanners"):
        assert part in a.explanation
    restart = [f for f in a.fixes if f.id == "restart_transport"]
    if restart:
        assert restart[0].steps[1].command == "Restart-Service -Name 'MSExchangeFrontEndTransport'"


def test_granted_on_2010_restarts_the_transport_service():
    a = build("2010", "client_dir", "ordinary", "granted")
    (restart,) = [f for f in a.fixes if f.id == "restart_transport"]
    assert restart.steps[1].command == "Restart-Service -Name 'MSExchangeTransport'"


@pytest.mark.parametrize("role, connector", [("Edge", "Relay"), (None, "Default internal "
                                                                       "receive connector EDGE1")])
def test_edge_runs_on_the_edge_server_without_the_directory(role, connector):
    fact = ConnectorFact("EDGE1", connector, True, right="denied", permission_groups=())
    found = Finding("EDGE1\\scanner", T0, found=True, rid=1001, connectors=(fact,))
    a = advise(1018, "EDGE1\\scanner", "EDGE1", connector, version="2019", role=role,
               finding=found)
    assert a.cause == adv.EDGE_TRANSPORT and a.verdict is None
    assert a.where == "the Exchange Management Shell on the Edge Transport server itself"
    assert "AD LDS" in a.explanation and "directory check does not apply" in a.explanation
    assert "Run it on the Edge Transport server" in a.verify_note
    assert "verify` in Slack" not in a.verify_note
    assert a.fixes[0].id == "use_587" and a.fixes[-1].widens


def test_unknown_connector_lists_the_servers_connectors():
    a = build("2013", "none", "ordinary", "none")
    assert a.connector is None and a.connector_kind.kind == adv.UNKNOWN
    assert a.fixes[0].steps[0].command == ("Get-ReceiveConnector -Server 'EX01' | Format-Table "
                                           "Identity,Bindings,AuthMechanism,PermissionGroups,"
                                           "TransportRole")
    assert not a.grants


def test_honest_verify_lists_every_entry_that_can_decide():
    a = build("2019", "client_name", "ordinary", "none", )
    (step,) = a.verify
    assert step.command == (
        "Get-ReceiveConnector -Identity 'EX01\\Client Frontend EX01' | Get-ADPermission"
        " | Where-Object { $_.Deny -or $_.ExtendedRights -like '*SMTP-Submit*' -or"
        " (-not $_.ExtendedRights -and $_.AccessRights -match 'ExtendedRight|GenericAll') }"
        " | Format-Table User,Deny,IsInherited,AccessRights,ExtendedRights")
    assert "-User" not in step.command and not step.changes
    assert "verify` in Slack" not in a.verify_note      # no directory configured
    with_dir = build("2019", "client_dir", "ordinary", "unknown")
    assert "verify` in Slack" in with_dir.verify_note


# --- accounts and connectors ---------------------------------------------------------------------

@pytest.mark.parametrize("logged, known, kind, name", [
    ("CONTOSO\\svc-scanner", {}, adv.ORDINARY, "CONTOSO\\svc-scanner"),
    ("scanner@contoso.com", {}, adv.ORDINARY, "scanner@contoso.com"),
    ("CONTOSO\\EX02$", {}, adv.COMPUTER, "CONTOSO\\EX02$"),
    ("EX02$@contoso.com", {}, adv.COMPUTER, "EX02$@contoso.com"),
    ("CONTOSO\\$", {}, adv.ORDINARY, "CONTOSO\\$"),
    ("CONTOSO\\Boss", {"rid": 500}, adv.BUILTIN_ADMIN, "CONTOSO\\Boss"),
    ("CONTOSO\\Boss", {"builtin": "Administrator"}, adv.BUILTIN_ADMIN, "CONTOSO\\Boss"),
    ("CONTOSO\\Visitor", {"builtin": "Guest", "rid": 501}, adv.GUEST, "CONTOSO\\Visitor"),
    (f"{DOMAIN_SID}-500", {}, adv.BUILTIN_ADMIN, f"{DOMAIN_SID}-500"),
    ("s-1-5-21-1-2-3-501", {}, adv.GUEST, "s-1-5-21-1-2-3-501"),
    ("S-1-5-32-500", {}, adv.UNRESOLVED_SID, "S-1-5-32-500"),   # not a domain's RID 500
    (f"{DOMAIN_SID}-1107", {}, adv.UNRESOLVED_SID, f"{DOMAIN_SID}-1107"),
    (f"{DOMAIN_SID}-1107", {"resolved": "CONTOSO\\svc-mfp"}, adv.ORDINARY, "CONTOSO\\svc-mfp"),
    (f"{DOMAIN_SID}-1301", {"resolved": "CONTOSO\\APP01$"}, adv.COMPUTER, "CONTOSO\\APP01$"),
])
def test_account_kinds(logged, known, kind, name):
    got = classify_account(logged, **known)
    assert (got.kind, got.name) == (kind, name)
    assert got.kind in ACCOUNT_KINDS


def test_an_account_logged_as_a_sid_is_looked_up_by_sid():
    a = build("2019", "frontend_name", "sid", "none")
    assert a.account.kind == adv.UNRESOLVED_SID and a.account.logged_as_sid
    assert a.identify is not None and not a.identify.changes
    pipeline = parse_pipeline(a.identify.command)
    assert pipeline.commands[0].arg("-ArgumentList").value == f"{DOMAIN_SID}-1107"
    assert "Exchange logged a SID" in a.explanation
    assert f"-User '{DOMAIN_SID}-1107'" in a.fixes[-1].steps[1].command
    resolved = advise(1018, f"{DOMAIN_SID}-1107", "EX01", "Default Frontend EX01",
                      version="2019", resolved="CONTOSO\\svc-mfp")
    assert resolved.identify is None
    assert "CONTOSO\\svc-mfp (logged as the SID" in resolved.explanation
    assert "-User 'CONTOSO\\svc-mfp'" in resolved.fixes[-1].steps[1].command


@pytest.mark.parametrize("groups, ranges, auth, kind", [
    (("ExchangeUsers",), ("10.0.0.0/8",), ("Tls",), adv.ADMITS),
    (("AnonymousUsers", "ExchangeUsers"), EVERYWHERE, ALL_AUTH, adv.ADMITS),
    (("AnonymousUsers",), EVERYWHERE, ALL_AUTH, adv.INTERNET_FACING),
    (("AnonymousUsers",), ("0.0.0.0/0",), ("BasicAuth",), adv.INTERNET_FACING),
    (("AnonymousUsers",), (), ("Integrated",), adv.CUSTOM),   # ranges not told: not proven
    (("AnonymousUsers",), ("10.1.2.3", "10.1.2.0/24"), ALL_AUTH, adv.CUSTOM),
    (("AnonymousUsers",), EVERYWHERE, ("Tls", "ExchangeServer"), adv.CUSTOM),  # no sign-in
    ((), EVERYWHERE, ALL_AUTH, adv.CUSTOM),
])
def test_connector_kind_from_the_directory(groups, ranges, auth, kind):
    fact = ConnectorFact("EX01", "Anything", True, remote_ip_ranges=ranges, auth=auth,
                         permission_groups=groups)
    got = classify_connector("EX01\\Anything", version="2019", fact=fact)
    assert (got.kind, got.source, got.groups, got.role) == (kind, "directory", groups,
                                                            "HubTransport")  # unset role


@pytest.mark.parametrize("identity, version, kind", [
    ("EX01\\Default Frontend EX01", "2013", adv.INTERNET_FACING),
    ("ex01\\default frontend ex01", "2019", adv.INTERNET_FACING),
    ("EX01\\Default Frontend EX01", None, adv.INTERNET_FACING),
    ("EX01\\Default Frontend EX01", "2010", adv.CUSTOM),
    ("EX01\\Default EX01", "2010", adv.ADMITS),
    ("EX01\\Default EX01", "2019", adv.ADMITS),
    ("EX01\\Default EX01", None, adv.ADMITS),
    ("EX01\\Client EX01", "2010", adv.ADMITS),
    ("EX01\\Client EX01", "2016", adv.CUSTOM),
    ("EX01\\Client Frontend EX01", "SE", adv.ADMITS),
    ("EX01\\Client Proxy EX01", "2019", adv.ADMITS),
    ("EX01\\Outbound Proxy Frontend EX01", "2019", adv.SERVERS_ONLY),
    ("EX01\\Client Frontend EX02", "2019", adv.CUSTOM),
    ("EDGE1\\Default internal receive connector EDGE1", "2019", adv.EDGE),
    (None, "2019", adv.UNKNOWN),
])
def test_connector_kind_by_name(identity, version, kind):
    got = classify_connector(identity, version=version)
    assert got.kind == kind
    assert got.source == {adv.UNKNOWN: "none"}.get(kind, "name")


def test_a_fact_without_a_readable_dacl_falls_back_to_the_name():
    fact = ConnectorFact("EX01", "Client Frontend EX01", True, right="unknown",
                         why="no DACL", permission_groups=None, role="FrontendTransport")
    got = classify_connector("EX01\\Client Frontend EX01", version="2019", fact=fact)
    assert (got.kind, got.source, got.role) == (adv.ADMITS, "name", "FrontendTransport")


def test_the_verdict_names_the_entry_the_directory_found():
    submit = uuid.UUID("a18293f1-0685-4540-aa63-e32df421b3a2")
    ace = Ace(0x06, 0x10, 0x100, GROUP_SID, submit)        # OD, inherited
    right = Right("denied", ace, Principal(GROUP_SID, "No SMTP"), False, "denied ...")
    fact = ConnectorFact("EX01", "Relay", True, right="denied", why="denied ...",
                         permission_groups=(), **deciding_entry(right))
    found = Finding("CONTOSO\\a", T0, found=True, rid=1105, connectors=(fact,))
    a = advise(1018, "CONTOSO\\a", "EX01", "Relay", version="2019", finding=found)
    assert a.verdict == Verdict("denied", "denied ...", "No SMTP", GROUP_SID, False, True,
                                "submit")
    every = Right("denied", Ace(0x01, 0, 0x100, "S-1-5-15"), Principal("S-1-5-15", None),
                  False, "x")
    assert deciding_entry(every)["scope"] == "extended"
    assert deciding_entry(every)["trustee_sid"] == "S-1-5-15"
    generic = Right("denied", Ace(0x01, 0, 0x10000000, "S-1-1-0"), None, False, "x")
    assert deciding_entry(generic)["scope"] == "all"
    assert deciding_entry(Right("not granted", text="t")) == {}


def test_directory_error_is_an_unknown_verdict():
    fact = ConnectorFact("EX01", "Client Frontend EX01", True, right="granted",
                         permission_groups=("ExchangeUsers",))
    found = Finding("CONTOSO\\a", T0, error="ldaps://dc: no answer", connectors=(fact,))
    a = advise(1018, "CONTOSO\\a", "EX01", "Client Frontend EX01", version="2019",
               finding=found)
    assert a.verdict == Verdict("unknown", "the directory could not be read: ldaps://dc: no "
                                           "answer")
    assert a.cause == adv.SHOULD_ADMIT and "ldaps://dc: no answer" in a.explanation


def test_advice_is_frozen_and_rejects_other_events():
    a = build("2019", "frontend_name", "ordinary", "none")
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.cause = "x"  # type: ignore[misc]
    with pytest.raises(ValueError):
        advise(1035, "CONTOSO\\a", "EX01", "Default Frontend EX01")


def test_a_group_set_receiveconnector_does_not_take_gives_no_change():
    fact = ConnectorFact("EX01", "Relay", True, right="not granted", auth=ALL_AUTH,
                         remote_ip_ranges=("10.0.0.5",), permission_groups=("Custom",))
    found = Finding("CONTOSO\\a", T0, found=True, rid=1105, connectors=(fact,))
    a = advise(1018, "CONTOSO\\a", "EX01", "Relay", version="2019", finding=found)
    assert a.cause == adv.CUSTOM_NO_USERS and a.refusal is None
    assert not any(s.changes for s in a.fixes[1].steps)


def test_permission_groups_take_only_exchanges_names():
    with pytest.raises(UnsafeValueError):
        adv._groups_steps("EX01\\R", (), "ExchangeUsers'; Remove-Item C:\\")


# --- hostile names: every argument one literal equal to its input --------------------------------

QUOTES = "'\u2018\u2019\u201a\u201b"
HOSTILE = [
    "O'Brien",
    *(f"a{q}b{q}{q}" for q in QUOTES),
    "x' -User 'Everyone",
    "x\u2019 ; Remove-Item C:\\ -Recurse ; \u2019",
    "$(Remove-Item C:\\ -Recurse)",
    "`whoami` @(1) ${env:PATH} <!channel> # <#",
    "'@",
    "jürgen.müller 张伟 📠",
]


def hostile_cases():
    for name in HOSTILE:
        account = f"CONTOSO\\{name}"
        connector = f"Relay {name}"
        for found in ("not granted", "denied_group", "granted", "none"):
            yield account, connector, found


@pytest.mark.parametrize("account, connector, found", list(hostile_cases()))
def test_hostile_names_round_trip(account, connector, found):
    identity = connector if "\\" in connector else f"EX01\\{connector}"
    spec = FINDINGS[found]
    finding = verdict = None
    if spec:
        finding = Finding(account, T0, found=True, rid=1105, groups=3, connectors=(
            ConnectorFact("EX01", connector, True, right=spec[0], why="w",
                          remote_ip_ranges=("10.0.0.0/24",), auth=ALL_AUTH,
                          permission_groups=("AnonymousUsers",)),))
        verdict = spec[1] and dataclasses.replace(spec[1], trustee=f"CONTOSO\\G {account}",
                                                  trustee_sid=None)
    for event in (1018, 1020):
        for version in VERSIONS:
            a = advise(event, account, "EX01", connector, version=version, finding=finding,
                       verdict=verdict)
            assert a.refusal is None and a.connector == identity
            all_steps = [*(s for f in a.fixes for s in f.steps), *a.verify,
                         *([a.identify] if a.identify else [])]
            assert all_steps or a.cause == adv.BUILTIN
            for step in all_steps:
                values = check_command(step.command)
                for param, value in values:
                    if param == "-identity" and "Relay" in value:
                        assert value == identity
                    if param in ("-user", "-argumentlist"):
                        assert value in (account, f"CONTOSO\\G {account}")
                assert account not in step.comment and connector not in step.comment


@pytest.mark.parametrize("bad", ["CONTOSO\\a\nb", "CONTOSO\\a\u202eb", "CONTOSO\\a\u200bb", ""])
def test_a_name_that_cannot_go_into_a_command_keeps_its_cause_and_shows_none(bad):
    a = advise(1018, bad, "EX01", "Default Frontend EX01", version="2019")
    assert a.cause == adv.INTERNET_AUTH and a.refusal
    assert [f.id for f in a.fixes] == ["use_587", "send_anonymously", "grant_submit"]
    assert commands(a) == [] and a.verify_note == ""
    b = advise(1018, "CONTOSO\\ok", "EX01", bad or "\u2066", version="2019")
    assert b.refusal and commands(b) == []


def test_a_server_name_that_cannot_go_into_a_command():
    a = advise(1018, "CONTOSO\\ok", "EX01\\bad", "Default Frontend EX01", version="2019")
    assert a.refusal and "server name" in a.refusal and commands(a) == []


# --- helpers -------------------------------------------------------------------------------------

SCRIPT_BLOCKS = {
    "{ $_.Deny -or $_.ExtendedRights -like '*SMTP-Submit*' -or (-not $_.ExtendedRights -and "
    "$_.AccessRights -match 'ExtendedRight|GenericAll') }",
    "{ $_.Translate([System.Security.Principal.SecurityIdentifier]).Value }",
    "{ $_.Translate([System.Security.Principal.NTAccount]).Value }",
}
#: -PermissionGroups as the group-change commands build it: the connector's groups when the
#: command runs, plus or minus one of Exchange's group names (no untrusted text).
GROUP_EXPRESSIONS = {
    *(f'"$($_.PermissionGroups), {g}"' for g in adv.PERMISSION_GROUPS),
    *(f"((@(\"$($_.PermissionGroups)\" -split ',\\s*') -ne '{g}' -join ', ') -replace '^$', "
      "'None')" for g in adv.PERMISSION_GROUPS)}
TYPE_NAMES = {"System.Security.Principal.NTAccount",
              "System.Security.Principal.SecurityIdentifier"}
LITERALS = {"-extendedrights": {SUBMIT_RIGHT, adv.ACCEPT_ANY_RECIPIENT_RIGHT},
            "-accessrights": {"ExtendedRight", "GenericAll"},
            "-name": {"MSExchangeFrontEndTransport", "MSExchangeTransport"}}


def commands(a: Advice) -> list[str]:
    steps = [*(s for f in a.fixes for s in f.steps), *a.verify,
             *([a.identify] if a.identify else [])]
    return [s.command for s in steps]


def check_command(text: str) -> list[tuple[str, str]]:
    """Parse one printed command: every parameter's argument is one single-quoted literal
    (except -Confirm:$false, switches, New-Object's type name); positional arguments only
    script blocks and column lists we wrote. Returns (parameter, literal value) pairs."""
    pipeline = parse_pipeline(text, SWITCHES)
    values = []
    for command in pipeline.commands:
        values += _check(command)
    return values


def _check(command: Command) -> list[tuple[str, str]]:
    out = []
    for param, arg in command.params:
        p = param.lower()
        if p in ("-whatif", "-deny"):
            assert arg is None, (command, param)
        elif p == "-confirm":
            assert arg is not None and (arg.node_type, arg.text) == ("variable", "$false")
        elif p == "-typename":
            assert arg is not None and arg.text in TYPE_NAMES
        elif p == "-permissiongroups" and arg is not None and not arg.is_verbatim_literal:
            assert command.name == "Set-ReceiveConnector" and arg.text in GROUP_EXPRESSIONS
        else:
            assert arg is not None and arg.is_verbatim_literal, (command.name, param, arg)
            assert arg.value is not None
            if p in LITERALS:
                assert arg.value in LITERALS[p]
            out.append((p, arg.value))
    for arg in command.positional:
        if arg.node_type == "script_block_expression" and arg.text not in SCRIPT_BLOCKS:
            # The group change: one Set-ReceiveConnector inside, checked like any command.
            inner = arg.text.removeprefix("{").removesuffix("}").strip()
            assert command.name == "ForEach-Object" and inner.startswith("Set-ReceiveConnector ")
            out += check_command(inner)
        elif arg.node_type == "script_block_expression":
            assert arg.text in SCRIPT_BLOCKS
        else:
            assert arg.node_type == "bareword_list", (command.name, arg)
            assert command.name in ("Format-Table", "Format-List")
    return out
