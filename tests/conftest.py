"""Shared fixtures: real servers on 127.0.0.1 and real SQLite files, nothing mocked."""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from bot.core.config import parse_config
from sim.eventlog import EventLog
from sim.slack_api import SlackStandIn
from sim.winrm_server import WinRMSimulator
from store import db as store
from store.db import open_db

WINRM_USER = "CONTOSO\\svc-submitwatch"
WINRM_PASSWORD = "Sup3r-s3cret-winrm"
BOT_TOKEN = "xoxb-test-token-0123456789"
CHANNEL = "C0ALERTS"


@pytest.fixture
def logs():
    return {"EX01": EventLog("EX01.contoso.local", first_record=1000),
            "EX02": EventLog("EX02.contoso.local", first_record=50_000)}


@pytest.fixture
def winrm(logs):
    with WinRMSimulator(logs, users={WINRM_USER: WINRM_PASSWORD}, auth="ntlm") as sim:
        yield sim


@pytest.fixture
def slack():
    with SlackStandIn(bot_token=BOT_TOKEN, channels=(CHANNEL, "C0EX02")) as stand_in:
        yield stand_in


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "submitwatch.db")


@pytest.fixture
def db(db_path):
    database = open_db(db_path)
    yield database
    database.conn.close()


@pytest.fixture
def make_config(winrm, slack, db_path):
    """Build a Config the way a user would write it, pointed at the local servers."""
    def server_entry(server):
        """A server name, or a dict of keys to set on top of that server's usual entry."""
        extra = server if isinstance(server, dict) else {"name": server}
        return {"url": winrm.url_for(extra["name"]), "username": WINRM_USER,
                "password_env": "WINRM_PASSWORD", **extra}

    def make(servers=("EX01", "EX02"), password=WINRM_PASSWORD, environ=None, **tables):
        raw = {
            "slack": {"channel": CHANNEL, "api_url": slack.api_url},
            "store": {"path": db_path},
            "polling": {"batch_size": 500, "operation_timeout": 2, "read_timeout": 5},
            "incidents": {"update_interval": "10s"},
            "servers": [server_entry(s) for s in servers],
        }
        for table, values in tables.items():
            if isinstance(values, dict):
                raw.setdefault(table, {}).update(values)
            else:
                raw[table] = values
        environ = {"SLACK_BOT_TOKEN": BOT_TOKEN, "WINRM_PASSWORD": password, **(environ or {})}
        return parse_config(raw, environ)
    return make


class Clock:
    """A clock the test moves by hand (passed in; nothing is frozen or slept)."""

    def __init__(self, start: datetime | None = None):
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def posted(logs, db, make_config, slack, clock):
    """One open incident for CONTOSO\\svc-scanner on EX01, posted to Slack."""
    from tests.helpers import scanner, sweep
    config = make_config(servers=("EX01", "EX02"))
    scanner(logs["EX01"], 2)
    sweep(db, config, clock)
    [message] = slack.messages(CHANNEL)
    [incident] = store.open_incidents(db).values()
    return config, incident, message


@pytest.fixture(scope="session")
def samba_ad(tmp_path_factory):
    """A real Samba AD domain controller with an Exchange-shaped configuration partition
    (tests/samba_ad.py), once per session, on a loopback address of this run's own (reach it
    by `samba_ad.ldaps_url` / `ldap_url`). Fails, never skips, without Samba."""
    from tests.samba_ad import SambaUnavailable, running_samba
    try:
        with running_samba(tmp_path_factory.mktemp("samba-ad")) as ad:
            yield ad
    except SambaUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def kerberos(samba_ad, tmp_path_factory):
    """Samba AD's KDC with SubmitWatch's account, the WinRM services HTTP/<server>-<tag>.corp.test
    of EX01 and EX02 (EX03's name has no SPN; the three names in /etc/hosts for the session),
    keytabs and a krb5.conf
    (tests/kerberos_ad.py), and this process's environment pointing at them."""
    from tests.kerberos_ad import hosts_entries, kerberos_realm, run_tag
    tag = run_tag()
    realm = kerberos_realm(samba_ad, tmp_path_factory.mktemp("kerberos"), ("EX01", "EX02"), tag,
                           unregistered=("EX03",))
    saved = {name: os.environ.get(name) for name in realm.environ()}
    os.environ.update(realm.environ())
    try:
        with hosts_entries(realm.hosts.values(), tag):
            yield realm
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- before anything runs: the directory tests need root ----------------------------------------

#: The marker conftest puts on every test that uses the samba_ad fixture (directly or through
#: another fixture): `-m "not samba"` leaves those out.
SAMBA_MARK = "samba"


def pytest_configure(config):
    config.addinivalue_line("markers", f"{SAMBA_MARK}: runs Samba's AD domain controller "
                                       "(tests/samba_ad.py), so it needs root; set by conftest "
                                       "on every test that uses the samba_ad fixture")


def _uses_samba(item) -> bool:
    return "samba_ad" in getattr(item, "fixturenames", ())


@pytest.hookimpl(tryfirst=True)   # before -m deselects by marker
def pytest_collection_modifyitems(items):
    for item in items:
        if _uses_samba(item):
            item.add_marker(SAMBA_MARK)


def samba_needs_root(selected: int, euid: int) -> str | None:
    """The one line a run says before it starts when `selected` tests need Samba AD and the
    user (`euid`) is not root; None when the run can go ahead. Samba AD needs root twice: its
    provisioning sets owners and ACLs on its files (as another user, `samba-tool domain
    provision` stops at "Unable to chown a file"), and its LDAP ports (389, 636) are fixed and
    below 1024. Without this, each of those tests fails on its own, in many lines."""
    if euid == 0 or not selected:
        return None
    return (f"{selected} selected test(s) need root: they run Samba's AD domain controller, whose "
            "provisioning chowns its files and whose LDAP ports 389 and 636 are below 1024 "
            "(tests/samba_ad.py). Run `make test` as root (CI does; .ci/debian-packages also "
            "installs Samba with apt-get), or leave those tests out: "
            "`.venv/bin/python -m pytest -m 'not samba'`")


def pytest_collection_finish(session):
    if session.config.option.collectonly:
        return
    why = samba_needs_root(sum(map(_uses_samba, session.items)), os.geteuid())
    if why:
        pytest.exit(why, returncode=pytest.ExitCode.USAGE_ERROR)


# --- the DC under a name of this run's, for the Kerberos LDAP bind ------------------------------

@dataclass(frozen=True)
class KerberosDC:
    """How the Kerberos LDAP tests reach this run's DC by name: `url` names a host whose SPN
    ldap/<host> the DC holds; `nospn_url` a host that resolves to the same DC but that no
    account holds an SPN for."""
    host: str
    url: str
    nospn_url: str
    address: str


@pytest.fixture(scope="session")
def kerberos_dc(samba_ad, kerberos):
    """This run's DC as dc1-<tag>.corp.test: the SPN ldap/dc1-<tag>.corp.test on the DC's own
    account (what `setspn -S ldap/<alias> DC1` does for a DC's alias), that name and
    nospn-<tag>.corp.test in /etc/hosts at the DC's address (per run, so two runs never share
    a name: Kerberos names the service by the URL's host, which must resolve), and SubmitWatch's
    principal (the `kerberos` fixture's account) given the read-only delegation `check`
    recommends on each server's CN=Protocols, as the `reader` account has."""
    from tests.kerberos_ad import CLIENT, _samba_tool, hosts_entries
    host = f"dc1-{kerberos.tag}.{kerberos.realm.lower()}"
    nospn = f"nospn-{kerberos.tag}.{kerberos.realm.lower()}"
    _samba_tool(samba_ad, "spn", "add", f"ldap/{host}", "DC1$")
    client = samba_ad.users[CLIENT]
    for protocols in samba_ad.servers.values():
        samba_ad.add_ace(protocols, f"(A;CI;RPLCLORC;;;{client.sid})")
    # a mark of its own: the `kerberos` fixture's teardown removes its lines, not these
    with hosts_entries((host, nospn), f"{kerberos.tag}-ldap", address=samba_ad.address):
        yield KerberosDC(host, f"ldap://{host}", f"ldap://{nospn}", samba_ad.address)
