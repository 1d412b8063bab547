"""From a real directory to the fix: bot.directory.adcheck.check reads Samba AD (the `samba_ad`
session fixture, nothing mocked), bot.exchange.advice.advise turns its Finding into the cause and
the fixes, for each case DOMAIN.md section 6 names.

Every connector is built in the Exchange-shaped tree with its DACL written by Samba's own tools
(tests/samba_ad.py), each on a server of its own so that its default name (Default Frontend
<SRV>, Client Frontend <SRV>) is the one Exchange setup gives it.
"""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.core.config import parse_directory
from bot.core.findings import Finding
from bot.directory.adcheck import check
from bot.exchange.advice import (
    COMPUTER,
    COMPUTER_ACCOUNT,
    CUSTOM,
    CUSTOM_NO_USERS,
    DENY_DECIDES,
    GRANTED_IN_DIRECTORY,
    INFERENCE,
    INTERNET_AUTH,
    INTERNET_FACING,
    ORDINARY,
    SHOULD_ADMIT,
    UNRESOLVED_SID,
    Advice,
    advise,
)
from tests.samba_ad import (
    BASIC_AUTH,
    BASIC_AUTH_REQUIRE_TLS,
    EDGE_TRANSPORT_SERVERS,
    EXCHANGE_SERVER,
    EXCHANGE_SERVERS_RIGHTS,
    FRONTEND_TRANSPORT,
    HUB_TRANSPORT_SERVERS,
    INTEGRATED,
    PASSWORD,
    THIS_ORGANIZATION,
    TLS,
    anonymous_users_aces,
    exchange_users_aces,
    rights_aces,
    submit_ace,
    unique,
)

ENV = "DIRECTORY_PASSWORD"
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
EVERY_ADDRESS = ("::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "0.0.0.0-255.255.255.255")
#: What Default Frontend and Client Frontend offer (DOMAIN.md 6).
FRONTEND_AUTH = TLS | BASIC_AUTH | BASIC_AUTH_REQUIRE_TLS | EXCHANGE_SERVER | INTEGRATED
CLIENT_AUTH = TLS | BASIC_AUTH | BASIC_AUTH_REQUIRE_TLS | INTEGRATED
#: A group of another domain of the forest (S-1-5-21-<another domain>-RID).
FOREIGN_GROUP = "S-1-5-21-1111111111-2222222222-3333333333-1107"


@pytest.fixture(scope="module")
def ad(samba_ad):
    """The session's directory with the forest's Exchange groups, as setup makes them."""
    samba_ad.add_group("Exchange Servers")
    samba_ad.add_group("ExchangeLegacyInterop")
    return samba_ad


def reader(ad):
    return parse_directory({"urls": [ad.ldaps_url], "user": "CORP\\reader", "auth": "simple",
                            "password_env": ENV, "ca_file": str(ad.ca_file),
                            "connect_timeout": 3, "read_timeout": 5}, {ENV: PASSWORD})


def fresh_server(ad) -> str:
    name = unique("EX").replace("-", "")[:15]
    ad.add_server(name)
    return name


def default_frontend(ad, server: str) -> str:
    """Default Frontend <SRV> as setup makes it: port 25, every remote address, sign-in offered,
    AnonymousUsers (ANONYMOUS LOGON's four rights), ExchangeServers (Exchange Servers, and
    the Hub and Edge Transport Servers SIDs) and ExchangeLegacyServers (ExchangeLegacyInterop)."""
    name = f"Default Frontend {server}"
    aces = [*anonymous_users_aces()]
    for sid in (ad.groups["Exchange Servers"].sid, HUB_TRANSPORT_SERVERS, EDGE_TRANSPORT_SERVERS,
                ad.groups["ExchangeLegacyInterop"].sid):
        aces += rights_aces(sid, EXCHANGE_SERVERS_RIGHTS)
    ad.add_connector(server, name, aces=aces, bindings=("0.0.0.0:25", "[::]:25"),
                     remote_ip_ranges=EVERY_ADDRESS, role=FRONTEND_TRANSPORT,
                     security_flags=FRONTEND_AUTH)
    return name


def client_frontend(ad, server: str, aces) -> str:
    """Client Frontend <SRV>: port 587, sign-in offered, these entries (ExchangeUsers' among
    them where the test gives them)."""
    name = f"Client Frontend {server}"
    ad.add_connector(server, name, aces=aces, bindings=("0.0.0.0:587", "[::]:587"),
                     remote_ip_ranges=EVERY_ADDRESS, role=FRONTEND_TRANSPORT,
                     security_flags=CLIENT_AUTH)
    return name


def run(ad, account: str, server: str, connector: str,
        **options) -> tuple[Finding, Advice]:
    """The directory check of the account on the connector, and the advice for a 1018 there."""
    place = f"{server}\\{connector}"
    finding = check(reader(ad), account, [(server, connector)], NOW, named=[place])
    assert finding.error is None, finding.error
    [fact] = finding.connectors
    assert fact.found and fact.named, fact
    advice = advise(1018, account, server, place, version="2019", finding=finding, **options)
    return finding, advice


def first_fix(advice: Advice) -> str:
    return advice.fixes[0].id


# --- (a) the internet-facing connector ----------------------------------------------------------

def test_a_signin_on_default_frontend_is_sent_to_port_587(ad):
    server = fresh_server(ad)
    connector = default_frontend(ad, server)
    user = ad.add_user(unique("scanner")[:20])
    finding, advice = run(ad, f"CORP\\{user.name}", server, connector)
    [fact] = finding.connectors
    assert (fact.right, fact.permission_groups, fact.trustee) == ("not granted",
                                                                  ("AnonymousUsers",), None)
    assert advice.cause == INTERNET_AUTH and first_fix(advice) == "use_587"
    assert (advice.connector_kind.kind, advice.connector_kind.source) == (INTERNET_FACING,
                                                                          "directory")
    assert not advice.fixes[0].grants
    # the widening grant comes last and says so
    assert advice.fixes[-1].grants and advice.fixes[-1].widens
    # the same connector admits an Exchange server's computer account through Exchange Servers
    exchange = ad.add_computer(unique("EXSRV").replace("-", "")[:15])
    ad.add_member("Exchange Servers", exchange.dn)
    finding, advice = run(ad, f"CORP\\{exchange.name}", server, connector)
    [fact] = finding.connectors
    assert (fact.right, fact.trustee, fact.explicit) == ("granted", "Exchange Servers", False)
    assert advice.cause == GRANTED_IN_DIRECTORY


# --- (b) a custom anonymous relay -----------------------------------------------------------------

def test_a_signin_on_an_anonymous_relay_is_told_to_stop_signing_in(ad):
    server = fresh_server(ad)
    connector = unique("Relay Printers")
    ad.add_connector(server, connector, aces=anonymous_users_aces(),
                     bindings=("0.0.0.0:25",), remote_ip_ranges=("10.20.0.10-10.20.0.30",),
                     role=FRONTEND_TRANSPORT, security_flags=CLIENT_AUTH)
    user = ad.add_user(unique("printer")[:20])
    finding, advice = run(ad, f"CORP\\{user.name}", server, connector)
    assert finding.connectors[0].right == "not granted"
    assert advice.cause == CUSTOM_NO_USERS and first_fix(advice) == "stop_authenticating"
    assert advice.connector_kind.kind == CUSTOM
    assert advice.connector_kind.groups == ("AnonymousUsers",)
    assert "remote IP ranges limited to some addresses" in advice.connector_kind.reason


# --- (c), (d) a Deny decides --------------------------------------------------------------------

def test_a_deny_through_a_group_on_client_frontend_is_removed_not_outgranted(ad):
    server = fresh_server(ad)
    blocked = ad.add_group(unique("Blocked Senders"))
    user = ad.add_user(unique("blocked")[:20], groups=[blocked.name])
    connector = client_frontend(ad, server, [submit_ace(blocked.sid, deny=True),
                                             *exchange_users_aces()])
    finding, advice = run(ad, f"CORP\\{user.name}", server, connector)
    [fact] = finding.connectors
    assert fact.permission_groups == ("ExchangeUsers",)
    assert advice.cause == DENY_DECIDES and first_fix(advice) == "remove_deny"
    verdict = advice.verdict
    assert (verdict.status, verdict.trustee, verdict.trustee_sid, verdict.explicit,
            verdict.inherited, verdict.scope) == ("denied", blocked.name, blocked.sid, False,
                                                  False, "submit")
    assert [f.id for f in advice.fixes] == ["remove_deny", "leave_group"]
    assert not advice.grants
    assert blocked.sid in "\n".join(advice.fixes[0].lines())
    # the same Deny set on the container above is inherited, so it comes after the
    # connector's own entries: ExchangeUsers' explicit grant decides first
    server = fresh_server(ad)
    ad.add_ace(f"CN=SMTP Receive Connectors,{ad.servers[server]}",
               f"(OD;CI;CR;a18293f1-0685-4540-aa63-e32df421b3a2;;{blocked.sid})")
    connector = client_frontend(ad, server, exchange_users_aces())
    finding, advice = run(ad, f"CORP\\{user.name}", server, connector)
    assert advice.cause == GRANTED_IN_DIRECTORY
    assert (advice.verdict.trustee, advice.verdict.inherited) == (
        "NT AUTHORITY\\Authenticated Users", False)
    # on a connector without an explicit grant it decides, and is removed where it is set
    relay = unique("Relay")
    ad.add_connector(server, relay, remote_ip_ranges=("10.1.1.1",))
    finding, advice = run(ad, f"CORP\\{user.name}", server, relay)
    assert advice.cause == DENY_DECIDES and first_fix(advice) == "remove_inherited_deny"
    assert (advice.verdict.trustee, advice.verdict.inherited) == (blocked.name, True)


def test_a_deny_on_this_organization_refuses_every_account(ad):
    server = fresh_server(ad)
    connector = client_frontend(ad, server, [submit_ace(THIS_ORGANIZATION, deny=True),
                                             *exchange_users_aces()])
    user = ad.add_user(unique("anyone")[:20])
    finding, advice = run(ad, f"CORP\\{user.name}", server, connector)
    assert finding.connectors[0].right == "denied"
    assert advice.cause == DENY_DECIDES and first_fix(advice) == "remove_deny"
    verdict = advice.verdict
    assert (verdict.trustee, verdict.trustee_sid, verdict.explicit, verdict.inherited) == (
        "NT AUTHORITY\\This Organization", THIS_ORGANIZATION, False, False)
    assert "every sign-in carries, so it refuses every account" in advice.explanation
    assert "leave_group" not in [f.id for f in advice.fixes]


# --- (e) a grant through sIDHistory -------------------------------------------------------------

def test_a_grant_to_the_accounts_former_sid_counts(ad):
    server = fresh_server(ad)
    user = ad.add_user(unique("migrated")[:20])
    former = "S-1-5-21-1000000001-2000000002-3000000003-2345"
    ad.set_sid_history(user.dn, [former])
    connector = client_frontend(ad, server, [submit_ace(former)])  # no ExchangeUsers
    finding, advice = run(ad, f"CORP\\{user.name}", server, connector)
    [fact] = finding.connectors
    assert (fact.right, fact.trustee_sid, fact.explicit) == ("granted", former, True)
    assert f"by its former SID {former} (sIDHistory)" in fact.why
    assert advice.cause == GRANTED_IN_DIRECTORY and first_fix(advice) == "wait_for_cache"
    assert advice.verdict.trustee_sid == former
    assert not advice.grants
    # without the history, the same account's token has no Submit there
    ad.set_sid_history(user.dn, [])
    finding, advice = run(ad, f"CORP\\{user.name}", server, connector)
    assert finding.connectors[0].right == "not granted"
    # Client Frontend by name, but without ExchangeUsers: changed since setup
    assert advice.cause == CUSTOM_NO_USERS and advice.connector_kind.default


# --- (f) a computer account -----------------------------------------------------------------------

def test_a_computer_account_gets_the_exchange_servers_group_never_a_grant(ad):
    server = fresh_server(ad)
    connector = default_frontend(ad, server)
    host = ad.add_computer(unique("HOST").replace("-", "")[:15])
    account = f"CORP\\{host.name}"
    assert account.endswith("$")
    finding, advice = run(ad, account, server, connector)
    assert finding.found and finding.name == account
    assert finding.connectors[0].right == "not granted"
    assert advice.account.kind == COMPUTER
    assert advice.cause == COMPUTER_ACCOUNT and first_fix(advice) == "exchange_servers_group"
    assert not advice.grants


# --- (g) a SID string as the account ------------------------------------------------------------

def test_a_sid_exchange_logged_is_resolved_or_stays_unresolved(ad):
    server = fresh_server(ad)
    connector = default_frontend(ad, server)
    user = ad.add_user(unique("bysid")[:20])
    finding, advice = run(ad, user.sid, server, connector)
    assert finding.found and (finding.sid, finding.name) == (user.sid, f"CORP\\{user.name}")
    advice = advise(1018, user.sid, server, f"{server}\\{connector}", version="2019",
                    finding=finding, resolved=finding.name)
    assert (advice.account.kind, advice.account.name, advice.account.logged_as_sid) == (
        ORDINARY, f"CORP\\{user.name}", True)
    assert advice.cause == INTERNET_AUTH
    # a SID no account of the domain has
    nobody = f"{ad.domain_sid}-987654"
    finding = check(reader(ad), nobody, [(server, connector)], NOW)
    assert finding.error is None and not finding.found and finding.name is None
    [fact] = finding.connectors
    assert fact.right == "unknown"
    assert fact.why.startswith(f"no account has the SID {nobody} in corp.test")
    advice = advise(1018, nobody, server, f"{server}\\{connector}", version="2019",
                    finding=finding, resolved=finding.name)
    assert advice.account.kind == UNRESOLVED_SID and advice.identify is not None
    assert nobody in advice.identify.command


# --- (h) a Deny for a group of another domain -------------------------------------------------------

def test_a_deny_for_another_domains_group_gives_no_verdict(ad):
    server = fresh_server(ad)
    connector = client_frontend(ad, server, [submit_ace(FOREIGN_GROUP, deny=True),
                                             *exchange_users_aces()])
    user = ad.add_user(unique("maybe")[:20])
    finding, advice = run(ad, f"CORP\\{user.name}", server, connector)
    [fact] = finding.connectors
    assert fact.right == "unknown" and fact.trustee is None
    assert f"a Deny entry for {FOREIGN_GROUP}, a group of another domain, may apply" in fact.why
    assert advice.verdict.status == "unknown"
    assert advice.cause not in (GRANTED_IN_DIRECTORY, DENY_DECIDES)
    assert advice.cause == SHOULD_ADMIT and first_fix(advice) == "find_deciding_entry"
    assert INFERENCE in advice.rests_on
    assert "a group of another domain" in advice.explanation
