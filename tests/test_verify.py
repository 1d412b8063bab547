"""`/submitwatch verify` against a real Samba AD (the `samba_ad` session fixture, nothing mocked).

Every descriptor here was written by Samba's own tools (tests/samba_ad.py); the answer is what
the slash command would send (tests/helpers.py `ask`), read as a person reads it (prose) and
checked for inertness (no markup from a name reaches mrkdwn). The reader binds with SIMPLE over
LDAPS (ldap3's NTLM bind is refused by Samba: see tests/test_directory.py).
"""
from __future__ import annotations

import socket
from datetime import timedelta

import pytest

from bot.core.config import parse_config
from bot.slack.blocks import BUDGET, size
from tests.blocks import mrkdwn_texts, preformatted, prose
from tests.helpers import NOW, Feed, ask, assert_no_markup
from tests.samba_ad import PASSWORD, submit_ace, unique

ENV = "DIRECTORY_PASSWORD"


def make_config(ad, servers=("EX01", "EX02"), directory=True, **overrides):
    """A configuration as a user writes it, its [directory] pointed at the Samba DC."""
    raw: dict = {
        "slack": {"channel": "C0ALERTS"},
        "servers": [{"name": name, "url": "https://127.0.0.1:5986/wsman", "username": "u",
                     "password_env": "PW"} for name in servers],
    }
    if directory:
        raw["directory"] = {"urls": [ad.ldaps_url], "user": "CORP\\reader", "auth": "simple",
                            "password_env": ENV, "ca_file": str(ad.ca_file),
                            "connect_timeout": 3, "read_timeout": 5, **overrides}
    return parse_config(raw, {"SLACK_BOT_TOKEN": "xoxb-test", "PW": "secret", ENV: PASSWORD})


@pytest.fixture(scope="module")
def ad(samba_ad):
    """This module's accounts (fresh names: the directory is the whole session's)."""
    senders = samba_ad.add_group(unique("Verify Senders"))
    samba_ad.add_user(unique("granted")[:20])
    samba_ad.add_user(unique("member")[:20], groups=[senders.name])
    samba_ad.add_user(unique("nobody")[:20])
    return samba_ad


def user(ad, prefix):
    return next(u for name, u in ad.users.items() if name.startswith(prefix))


def group(ad):
    return next(g for name, g in ad.groups.items() if name.startswith("Verify Senders"))


def fresh_server(ad):
    """A server of its own, so a listing of every connector holds only this test's."""
    name = unique("VX").replace("-", "")[:15]
    ad.add_server(name)
    return name


def verify(db, config, clock, text):
    reply = ask(db, config, clock, text)
    # whatever the answer, no name in it may be markup, and it fits one Slack message
    assert_no_markup(mrkdwn_texts(reply.blocks or []) + [reply.text])
    assert len(reply.blocks or []) <= 50
    return reply, prose(reply.blocks or [])


# --- the right on one connector ---------------------------------------------------------------

def test_granted_explicitly_with_the_connectors_facts(ad, db, clock):
    alice = user(ad, "granted")
    name = unique("Client Frontend")
    ad.add_connector("EX01", name, aces=[submit_ace(alice.sid)], bindings=["10.0.0.5:587"],
                     remote_ip_ranges=["10.0.0.0/8"])
    reply, words = verify(db, make_config(ad), clock, f"verify CORP\\{alice.name} 'EX01\\{name}'")
    assert f"`CORP\\{alice.name}` is in the directory: SID `{alice.sid}`, RID {alice.rid}" in words
    assert f"*Connector* `EX01\\{name}`: Submit *granted*" in words
    assert f"granted on EX01\\{name} explicitly to the account: " in words
    assert "enabled: yes; role: FrontendTransport; auth: `Tls`, `Integrated`, `BasicAuth`, " \
           "`BasicAuthRequireTLS`; permission groups: none" in words
    assert "bindings: `10.0.0.5:587`" in words and "remote IP ranges: `10.0.0.0/8`" in words
    assert "built-in" not in words and "disabled" not in words
    assert reply.text == f"Verify CORP\\{alice.name}: Submit 1 granted"


def test_granted_through_a_group(ad, db, clock):
    bob, senders = user(ad, "member"), group(ad)
    name = unique("Client Frontend")
    ad.add_connector("EX01", name, aces=[submit_ace(senders.sid)])
    _, words = verify(db, make_config(ad), clock, f"verify {bob.upn} EX01\\{name}")
    assert f"*Connector* `EX01\\{name}`: Submit *granted*" in words
    assert f"through {senders.name} ({senders.sid})" in words


def test_granted_to_authenticated_users_shows_the_exchange_users_group(ad, db, clock):
    dave = user(ad, "nobody")
    name = unique("Client Frontend")
    ad.add_connector("EX01", name, aces=[submit_ace("AU")] + [
        f"(OA;;CR;{guid};;AU)" for guid in ("5c82f031-4e4c-4326-88e1-8c4f0cad9de5",
                                            "d19299b4-86c2-4c9a-8fa7-acb70c63023a",
                                            "04031f4f-7c36-43ea-9b49-4bd0f5f1e6af")])
    _, words = verify(db, make_config(ad), clock, f"verify CORP\\{dave.name} 'EX01\\{name}'")
    assert "Submit *granted*" in words and "Authenticated Users (S-1-5-11)" in words
    assert "permission groups: `ExchangeUsers`" in words


def test_an_explicit_deny_wins_over_a_group_grant(ad, db, clock):
    bob, senders = user(ad, "member"), group(ad)
    name = unique("Client Frontend")
    dn = ad.add_connector("EX01", name, aces=[submit_ace(senders.sid)])
    ad.add_ace(dn, submit_ace(bob.sid, deny=True))  # as an admin would: Samba puts it first
    reply, words = verify(db, make_config(ad), clock, f"verify CORP\\{bob.name} 'EX01\\{name}'")
    assert f"*Connector* `EX01\\{name}`: Submit *DENIED*" in words
    assert "by a Deny entry for the account itself" in words and "wins over any grant" in words
    assert reply.text == f"Verify CORP\\{bob.name}: Submit 1 denied"


def test_not_granted(ad, db, clock):
    dave = user(ad, "nobody")
    name = unique("Client Frontend")
    ad.add_connector("EX01", name)
    _, words = verify(db, make_config(ad), clock, f"verify CORP\\{dave.name} 'EX01\\{name}'")
    assert "Submit *not granted*" in words
    assert f"no entry in its DACL gives ms-Exch-SMTP-Submit to {dave.name}" in words


def test_a_disabled_connector_says_so_beside_the_right(ad, db, clock):
    alice = user(ad, "granted")
    name = unique("Client Frontend")
    ad.add_connector("EX01", name, aces=[submit_ace(alice.sid)], enabled=False)
    _, words = verify(db, make_config(ad), clock, f"verify CORP\\{alice.name} 'EX01\\{name}'")
    assert "Submit *granted*" in words
    assert "The connector is *disabled*: it takes no mail at all" in words
    assert "enabled: no" in words


def test_a_connector_that_does_not_exist(ad, db, clock):
    alice = user(ad, "granted")
    ad.add_connector("EX01", unique("Client Frontend"))  # the server has connectors, not this
    _, words = verify(db, make_config(ad), clock,
                      f"verify CORP\\{alice.name} 'EX01\\No Such Connector'")
    assert "*Connector* `EX01\\No Such Connector`: *not found*" in words
    # a server the directory does not know is said in the directory's words
    _, words = verify(db, make_config(ad), clock, f"verify CORP\\{alice.name} 'EX99\\Relay'")
    assert "*EX99*: the directory could not answer: no Exchange server named EX99" in words


def test_the_rid_500_administrator_is_stated_as_a_fact(ad, db, clock):
    name = unique("Client Frontend")
    ad.add_connector("EX01", name, aces=[submit_ace("AU")])
    reply, words = verify(db, make_config(ad), clock, f"verify CORP\\Administrator 'EX01\\{name}'")
    assert f"SID `{ad.administrator.sid}`, RID 500" in words
    assert "It *is* the domain's built-in Administrator (RID 500, whatever it is named now): " \
           "Exchange refuses this account SMTP submission whatever a connector grants" in words
    assert reply.text == ("Verify CORP\\Administrator: the domain's built-in Administrator "
                          "(RID 500), refused whatever its rights")


def test_a_disabled_account_says_so(ad, db, clock):
    gone = ad.add_user(unique("gone")[:20], disabled=True)
    _, words = verify(db, make_config(ad), clock, f"verify CORP\\{gone.name} EX01\\Whatever")
    assert "The account is *disabled* in the directory: it cannot log on at all" in words


def test_an_account_not_in_the_directory(ad, db, clock):
    _, words = verify(db, make_config(ad), clock, "verify CORP\\no-such-person EX01\\Whatever")
    assert "no account `CORP\\no-such-person` in the directory" in words


# --- every connector of every configured server -----------------------------------------------

def test_without_a_connector_every_servers_connectors_the_named_one_first(ad, db, clock):
    alice = user(ad, "granted")
    server = fresh_server(ad)
    for name in ("Alpha", "Client Frontend", "Default Frontend"):
        ad.add_connector(server, name, aces=[submit_ace(alice.sid)] if name == "Alpha" else [])
    config = make_config(ad, servers=(server, "EX404"))
    # the account's own events named Client Frontend (written with the Exchange host in front)
    Feed(db, config).burst(f"CORP\\{alice.name}", NOW - timedelta(hours=1), 2, server=server,
                           connector=f"{server}\\Client Frontend")
    reply, words = verify(db, config, clock, f"verify CORP\\{alice.name}")
    titles = [line for line in words.splitlines() if line.startswith("*Connector*")]
    assert titles == [
        f"*Connector* `{server}\\Client Frontend` (named by this account's events): Submit "
        "*not granted*",
        f"*Connector* `{server}\\Alpha`: Submit *granted*",
        f"*Connector* `{server}\\Default Frontend`: Submit *not granted*"]
    # a configured server the directory does not know spoils only its own line
    assert "*EX404*: the directory could not answer: no Exchange server named EX404" in words
    assert reply.text == f"Verify CORP\\{alice.name}: Submit 1 granted, 2 not granted"


def test_many_connectors_are_capped_and_counted(ad, db, clock):
    server = fresh_server(ad)
    for n in range(30):
        ad.add_connector(server, f"Relay {n:02d}")
    reply, words = verify(db, make_config(ad, servers=(server,)), clock,
                          f"verify CORP\\{user(ad, 'nobody').name}")
    # As many as fit Slack's size budget (at most 25), and the rest counted, never cut silently.
    shown = words.count("*Connector*")
    assert 15 <= shown <= 25
    assert f"{30 - shown} more connector(s) not shown" in words
    assert size(reply.blocks) <= BUDGET


# --- names from events and people are never markup ---------------------------------------------

def test_hostile_names_stay_inert(ad, db, clock):
    account = "CORP\\<!channel> *bold* & `tick` <@U0BOSS>"
    connector = "EX01\\<!here> _it_ & ~x~"
    text = (f'verify "{account}" "{connector}"'.replace("&", "&amp;").replace("<", "&lt;")
            .replace(">", "&gt;"))   # as Slack sends it
    reply, words = verify(db, make_config(ad), clock, text)
    assert "&lt;!channel&gt; *bold* &amp; ˋtickˋ &lt;@U0BOSS&gt;" in words
    # a hostile name that really is a connector's: the directory's names are untrusted too
    name = unique("Relay & *x* `y`")
    ad.add_connector("EX01", name)
    reply, words = verify(db, make_config(ad), clock,
                          f"verify CORP\\{user(ad, 'nobody').name} 'EX01\\{name}'")
    assert "Submit *not granted*" in words
    assert name.replace("&", "&amp;").replace("`", "ˋ") in words


# --- the directory absent or unable to answer ----------------------------------------------------

def test_without_a_directory_it_says_how_to_turn_it_on(ad, db, clock):
    reply, words = verify(db, make_config(ad, directory=False), clock, "verify CORP\\someone")
    assert reply.text == "Directory checks are off: CORP\\someone cannot be verified"
    assert "no `[directory]` in its configuration. To turn them on, add one with `urls`" in words
    assert "`password_env`" in words and "`submitwatch check`" in words


def test_directory_down_is_said_in_words(ad, db, clock):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"ldaps://127.0.0.1:{s.getsockname()[1]}"
    reply, words = verify(db, make_config(ad, urls=[closed]), clock, "verify CORP\\someone")
    assert f"The directory could not answer: cannot reach {closed}" in words
    assert "connection refused" in words
    assert reply.text == "Verify CORP\\someone: the directory could not answer"


def test_an_account_that_cannot_read_descriptors_gets_the_delegation(ad, db, clock):
    name = unique("Client Frontend")
    ad.add_connector("EX01", name, aces=[submit_ace(user(ad, "granted").sid)])
    config = make_config(ad, user="CORP\\noread")
    _, words = verify(db, config, clock, f"verify CORP\\{user(ad, 'granted').name} 'EX01\\{name}'")
    assert "Submit *unknown*" in words
    assert "noread may not read the connector's security descriptor" in words
    assert "permission groups: unknown (its DACL could not be read)" in words


def test_a_server_the_reader_may_not_list_prints_the_delegation(ad, db, clock):
    server = fresh_server(ad)
    ad.add_connector(server, "Client Frontend")
    # a fresh account with no delegation at all: it sees CN=Protocols but no connector in it
    blind = ad.add_user(unique("svc")[:20])
    config = make_config(ad, servers=(server,), user=f"CORP\\{blind.name}")
    reply, words = verify(db, config, clock, f"verify CORP\\{blind.name} '{server}\\Client "
                                             "Frontend'")
    assert f"CORP\\{blind.name} sees no Receive connector of {server}" in words
    [commands] = preformatted(reply.blocks)
    assert f'dsacls "{ad.servers[server]}" /I:T /G "CORP\\{blind.name}:GR"' in commands


# --- the command itself -------------------------------------------------------------------------

@pytest.mark.parametrize("text, error", [
    ("verify", "name the account, like `CONTOSO\\svc-scanner`"),
    ("verify CORP\\a Relay", "write the connector as `SERVER\\Name`"),
    ("verify CORP\\a EX01\\", "write the connector as `SERVER\\Name`"),
    ("verify #4242", "there is no incident #4242"),
])
def test_mistakes_get_the_usage(ad, db, clock, text, error):
    reply = ask(db, make_config(ad, directory=False), clock, text)
    assert error in reply.text
    assert "Usage: `/submitwatch verify &lt;account&gt; [SERVER\\Connector]`" in reply.text


def test_help_names_verify(ad, db, clock):
    reply = ask(db, make_config(ad, directory=False), clock, "help")
    assert "`/submitwatch verify &lt;account&gt; [SERVER\\Connector]`: what Active Directory " \
           "says now, read-only" in reply.text
