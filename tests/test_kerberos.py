"""WinRM over Kerberos, against a real KDC (Samba AD's, tests/kerberos_ad.py) and the WinRM
simulator's Kerberos acceptor (sim/kerberos_server.py): real tickets, real MS-WSMV message
encryption, real pywinrm. Each failure a Windows admin meets is said in words."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.core import kerberos as krb
from bot.core.config import ConfigError, parse_config
from bot.engine.poller import poll_server_once
from bot.ops.check import run_check
from bot.sources.winrm import WinRMSource
from sim.eventlog import EventLog
from sim.winrm_server import WinRMSimulator
from store import db as store
from tests.conftest import BOT_TOKEN, CHANNEL, WINRM_PASSWORD, WINRM_USER
from tests.kerberos_ad import CLIENT_PASSWORD, krb5_conf
from tests.samba_ad import REALM

FE = "MSExchangeFrontEndTransport"


@pytest.fixture
def kdc_logs():
    return {name: EventLog(f"{name}.contoso.local", first_record=100)
            for name in ("EX01", "EX02", "EX03")}


def simulator(kerberos, logs, auth="kerberos", users=None):
    sim = WinRMSimulator(logs, users=users or {kerberos.client_principal: "-",
                                               WINRM_USER: WINRM_PASSWORD}, auth=auth)
    for name in logs:
        sim.set_service_host(name, kerberos.host_of(name))
    return sim


@pytest.fixture
def kerberos_winrm(kerberos, kdc_logs):
    """Kerberos only, as a server in a domain that refuses NTLM."""
    with simulator(kerberos, kdc_logs) as sim:
        yield sim


def kerberos_config(kerberos, sim, db_path, *, servers=("EX01",), table=None, extra=None,
                    environ=None):
    """A configuration as a user writes it: servers by their DNS names, transport kerberos."""
    entries = [{"name": name, "url": sim.url_for(name, kerberos.host_of(name)),
                "transport": "kerberos"} for name in servers]
    raw = {"slack": {"channel": CHANNEL}, "store": {"path": db_path},
           "polling": {"operation_timeout": 2, "read_timeout": 5},
           "servers": entries,
           "kerberos": table if table is not None else {
               "principal": kerberos.client_principal, "keytab": str(kerberos.client_keytab),
               "krb5_conf": str(kerberos.krb5_conf)},
           **(extra or {})}
    return parse_config(raw, {"SLACK_BOT_TOKEN": BOT_TOKEN, **(environ or {})})


def write_toml(tmp_path, kerberos, sim, krb5_conf) -> Path:
    """The configuration file of a `submitwatch` process: EX01 over Kerberos with the keytab."""
    path = tmp_path / "submitwatch.toml"
    path.write_text(f"""
[slack]
channel = "{CHANNEL}"
api_url = "http://127.0.0.1:9/api/"

[store]
path = "{tmp_path / 'sw.db'}"

[kerberos]
principal = "{kerberos.client_principal}"
keytab = "{kerberos.client_keytab}"
krb5_conf = "{krb5_conf}"

[[servers]]
name = "EX01"
url = "{sim.url_for('EX01', kerberos.host_of('EX01'))}"
transport = "kerberos"
""")
    return path


def poll(db, config, name="EX01"):
    server = {s.name: s for s in config.servers}[name]
    return poll_server_once(db, WinRMSource(server, config.polling), config)


def test_a_poll_over_kerberos_with_a_keytab_stores_the_events(db, db_path, kerberos,
                                                               kerberos_winrm, kdc_logs):
    kdc_logs["EX01"].append(FE, 1020, ("CONTOSO\\svc-scanner",))
    config = kerberos_config(kerberos, kerberos_winrm, db_path)
    source = WinRMSource(config.servers[0], config.polling)
    first = poll_server_once(db, source, config)
    assert first.error is None and first.stored == 1
    kdc_logs["EX01"].append(FE, 1020, ("CONTOSO\\svc-scanner",))
    second = poll_server_once(db, source, config)
    assert second.error is None and second.stored == 1
    stats = kerberos_winrm.stats("EX01")
    # one handshake: the authenticated, encrypted connection is kept between polls
    assert stats.auth_successes == 1 and stats.encrypted_requests >= 6
    assert stats.unencrypted_requests == 0
    # the ticket lives in this process's own cache, never a shared one
    assert os.environ["KRB5CCNAME"] == f"MEMORY:submitwatch-{os.getpid()}"


def test_a_poll_over_kerberos_with_a_password_turned_into_a_ticket(db, db_path, kerberos,
                                                                    kerberos_winrm, kdc_logs):
    kdc_logs["EX02"].append(FE, 1018, ("CONTOSO\\app", "Client Frontend EX02"))
    config = kerberos_config(kerberos, kerberos_winrm, db_path, servers=("EX02",), table={
        "principal": kerberos.client_principal, "password_env": "KRB_PASSWORD",
        "krb5_conf": str(kerberos.krb5_conf)}, environ={"KRB_PASSWORD": CLIENT_PASSWORD})
    result = poll(db, config, "EX02")
    assert result.error is None and result.stored == 1


def test_a_poll_over_kerberos_inside_https(db, db_path, tmp_path, kerberos, kdc_logs):
    """Port 5986: Kerberos signs in, TLS protects the messages (no message encryption on top,
    as pywinrm and Windows do over https)."""
    from tests.tls import make_pki
    host = kerberos.host_of("EX01")
    pki = make_pki(tmp_path, names=(host,))
    with WinRMSimulator(kdc_logs, users={kerberos.client_principal: "-"}, auth="kerberos",
                        tls=pki.server_context()) as sim:
        sim.set_service_host("EX01", host)
        kdc_logs["EX01"].append(FE, 1020, ("CONTOSO\\over-tls",))
        config = kerberos_config(kerberos, sim, db_path, extra={"servers": [{
            "name": "EX01", "url": sim.url_for("EX01", host), "transport": "kerberos",
            "ca_bundle": str(pki.ca_file)}]})
        assert config.servers[0].url.startswith(f"https://{host}:")
        result = poll(db, config)
        assert result.error is None and result.stored == 1
        stats = sim.stats("EX01")
        assert stats.auth_successes == 1 and stats.encrypted_requests == 0


def test_check_names_the_mechanism_and_the_principal(db_path, kerberos, kerberos_winrm):
    config = kerberos_config(kerberos, kerberos_winrm, db_path)
    lines: list[str] = []
    run_check(config, lines.append)
    host = kerberos.host_of("EX01")
    assert (f"OK       EX01: signed in with Kerberos as {kerberos.client_principal} for "
            f"HTTP/{host}, message encryption on") in lines


def test_a_server_that_refuses_ntlm_refuses_an_ntlm_poll_in_words(db, kerberos, kerberos_winrm,
                                                                  make_config):
    config = make_config(servers=[{"name": "EX01", "url": kerberos_winrm.url_for("EX01")}])
    result = poll(db, config)
    assert result.error and "refused NTLM (it answered SubmitWatch's NTLM token with no " \
        "challenge): the server, or its domain, takes Kerberos only" in result.error
    assert kerberos_winrm.last_auth_error("EX01") == ("an NTLM token, and this server takes "
                                                      "Kerberos only")


def test_negotiate_takes_kerberos_and_ntlm_alike(db, db_path, kerberos, kdc_logs, make_config):
    with simulator(kerberos, kdc_logs, auth="negotiate") as sim:
        kdc_logs["EX01"].append(FE, 1020, ("CONTOSO\\one",))
        by_kerberos = poll(db, kerberos_config(kerberos, sim, db_path))
        assert by_kerberos.error is None and by_kerberos.stored == 1
        ntlm = parse_config({
            "slack": {"channel": CHANNEL}, "store": {"path": db_path},
            "servers": [{"name": "EX02", "url": sim.url_for("EX02"), "username": WINRM_USER,
                         "password_env": "WINRM_PASSWORD"}]},
            {"SLACK_BOT_TOKEN": BOT_TOKEN, "WINRM_PASSWORD": WINRM_PASSWORD})
        kdc_logs["EX02"].append(FE, 1020, ("CONTOSO\\two",))
        by_ntlm = poll(db, ntlm, "EX02")
        assert by_ntlm.error is None and by_ntlm.stored == 1


def test_allow_ntlm_false_refuses_an_ntlm_server_in_the_configuration(db_path, kerberos,
                                                                      kerberos_winrm):
    with pytest.raises(ConfigError, match="EX09: transport 'ntlm' may authenticate with NTLM, "
                                          "and kerberos.allow_ntlm is false"):
        kerberos_config(kerberos, kerberos_winrm, db_path, table={
            "principal": kerberos.client_principal, "keytab": str(kerberos.client_keytab),
            "allow_ntlm": False}, extra={"servers": [
                {"name": "EX09", "url": "https://ex09.contoso.com:5986/wsman",
                 "username": "CONTOSO\\svc", "password_env": "PW"}]},
            environ={"PW": "x"})


def test_a_url_with_an_address_is_refused_for_kerberos(db_path, kerberos, kerberos_winrm):
    with pytest.raises(ConfigError, match="EX01: transport 'kerberos' needs the server's DNS "
                                          "name in its url, not the address 127.0.0.1"):
        kerberos_config(kerberos, kerberos_winrm, db_path, extra={"servers": [
            {"name": "EX01", "url": kerberos_winrm.url_for("EX01"), "transport": "kerberos"}]})


def test_a_service_without_spn_is_said_with_the_setspn_command(db, db_path, kerberos,
                                                                kerberos_winrm):
    config = kerberos_config(kerberos, kerberos_winrm, db_path, servers=("EX03",))
    result = poll(db, config, "EX03")
    host = kerberos.host_of("EX03")
    assert result.error is not None
    assert f"the domain has no service principal HTTP/{host}" in result.error
    assert f"`setspn -Q HTTP/{host}`" in result.error


def fresh_login(table: dict, environ: dict | None = None, name: str = "t") -> krb.Login:
    """A login of its own (its own cache, holding no ticket yet), for the failures to get one."""
    config = parse_config({"slack": {"channel": CHANNEL}, "kerberos": table},
                          {"SLACK_BOT_TOKEN": BOT_TOKEN, **(environ or {})})
    assert config.kerberos is not None
    return krb.Login(config.kerberos, ccache=f"MEMORY:test-{name}")


@pytest.fixture
def restore_kerberos_environment(kerberos):
    """A login points this process's KRB5CCNAME (and KRB5_CONFIG) at its own: put them back."""
    yield
    for name in ("KRB5CCNAME", "KRB5_CLIENT_KTNAME"):
        os.environ.pop(name, None)
    os.environ["KRB5_CONFIG"] = str(kerberos.krb5_conf)
    krb._logins.clear()


def test_a_wrong_password_is_said_in_words(kerberos, restore_kerberos_environment):
    login = fresh_login({"principal": kerberos.client_principal, "password_env": "P",
                         "krb5_conf": str(kerberos.krb5_conf)}, {"P": "not-the-password"},
                        "wrong-password")
    with pytest.raises(krb.KerberosError) as caught:
        login.ensure()
    assert str(caught.value) == (f"the KDC refused {kerberos.client_principal}'s key: the "
                                 "password is wrong, or the keytab was exported before the "
                                 "password last changed (export it again)")


def test_a_keytab_of_another_principal_is_said_in_words(kerberos,
                                                        restore_kerberos_environment):
    keytab = kerberos.client_keytab
    login = fresh_login({"principal": f"nobody-here@{REALM}", "keytab": str(keytab),
                         "krb5_conf": str(kerberos.krb5_conf)}, name="other-keytab")
    with pytest.raises(krb.KerberosError, match=f"the keytab {keytab} gave no ticket for "
                                                f"nobody-here@{REALM}: it may hold no key"):
        login.ensure()


def test_no_kdc_reachable_is_said_in_words(tmp_path, kerberos, restore_kerberos_environment):
    closed = tmp_path / "krb5.conf"
    # a loopback address of this run where nothing listens on port 88
    closed.write_text(krb5_conf(kerberos.kdc.rsplit(".", 1)[0] + ".254"))
    login = fresh_login({"principal": kerberos.client_principal, "password_env": "P",
                         "krb5_conf": str(closed)}, {"P": CLIENT_PASSWORD}, "no-kdc")
    with pytest.raises(krb.KerberosError, match=f"no KDC of realm CORP.TEST answered .* check "
                                                f"the realm's kdc lines in {closed}"):
        login.ensure()


def test_a_ticket_near_its_end_is_renewed_before_the_poll(db, db_path, kerberos, kerberos_winrm,
                                                          kdc_logs):
    """A new ticket whenever the one held has less than renew_before left: with renew_before
    past any ticket's lifetime, every poll starts from a fresh one and none is lost."""
    config = kerberos_config(kerberos, kerberos_winrm, db_path, table={
        "principal": kerberos.client_principal, "password_env": "KRB_PASSWORD",
        "krb5_conf": str(kerberos.krb5_conf)}, environ={"KRB_PASSWORD": CLIENT_PASSWORD})
    login = krb.login_for(config.kerberos)
    login.renew_before = 10 * 24 * 3600.0
    try:
        for n in range(3):
            kdc_logs["EX01"].append(FE, 1020, (f"CONTOSO\\renew-{n}",))
            result = poll(db, config)     # each poll a new source: a new connection too
            assert result.error is None and result.stored == 1
    finally:
        login.renew_before = krb.RENEW_BEFORE
    assert len(store.open_incidents(db)) == 3


def test_a_client_clock_ten_minutes_off_is_said_with_both_clocks(tmp_path, kerberos,
                                                                 kerberos_winrm):
    """`submitwatch check` in a process whose clock is 10 minutes ahead (libfaketime), with a
    krb5.conf that does not correct for it (kdc_timesync = 0)."""
    import libfaketime
    strict = tmp_path / "krb5.conf"
    strict.write_text(krb5_conf(kerberos.kdc, timesync=False))
    config = write_toml(tmp_path, kerberos, kerberos_winrm, strict)
    _, preload = libfaketime.get_reload_information()   # LD_PRELOAD, LD_LIBRARY_PATH, ...
    env = {**os.environ, **preload, "SLACK_BOT_TOKEN": BOT_TOKEN, "FAKETIME": "+10m",
           "FAKETIME_DONT_FAKE_MONOTONIC": "1", "DONT_FAKE_MONOTONIC": "1"}
    done = subprocess.run([sys.executable, "-m", "bot.cli", "--config", str(config), "check"],
                          capture_output=True, text=True, timeout=120, env=env,
                          cwd=Path(__file__).resolve().parent.parent)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "the clocks are more than 5 minutes apart" in out, out
    assert "This machine says" in out and "the server says" in out, out


@pytest.mark.parametrize(("said", "words"), [
    # the texts GSSAPI and pykerberos gave against Samba's KDC and MIT's acceptor
    ("Minor (2529639068): Cannot contact any KDC for realm 'CORP.TEST'",
     "no KDC of realm CORP.TEST answered"),
    ("authGSSClientStep() failed: (('Unspecified GSS failure.  Minor code may provide more "
     "information', 851968), ('Server not found in Kerberos database', -1765328377))",
     "the domain has no service principal HTTP/ex01.corp.test"),
    ("Minor (2529638936): Preauthentication failed", "the password is wrong"),
    ("Client 'nobody@CORP.TEST' not found in Kerberos database",
     "the domain has no account svc@CORP.TEST"),
    ("Keytab contains no suitable keys for svc@CORP.TEST", "the keytab holds no key of svc@"),
    ("Minor (2529638930): Client's credentials have been revoked",
     "svc@CORP.TEST is disabled, locked out or expired"),
    ("(('Unspecified GSS failure', 851968), ('Ticket expired', -1765328352))",
     "the ticket expired"),
    ("Minor (2529638949): Clock skew too great", "the clocks are more than 5 minutes apart"),
    ("something else entirely", "Kerberos failed: something else entirely"),
])
def test_each_kerberos_error_in_words(said, words):
    config = parse_config({"slack": {"channel": CHANNEL}, "kerberos": {
        "principal": "svc@CORP.TEST", "password_env": "P"}},
        {"SLACK_BOT_TOKEN": BOT_TOKEN, "P": "x"}).kerberos
    assert words in krb.in_words(said, config, service="HTTP/ex01.corp.test")


def _parse(kerberos_table=None, servers=(), environ=None):
    raw = {"slack": {"channel": CHANNEL}, "servers": list(servers)}
    if kerberos_table is not None:
        raw["kerberos"] = kerberos_table
    return parse_config(raw, {"SLACK_BOT_TOKEN": BOT_TOKEN, **(environ or {})})


KERBEROS_SERVER = {"name": "EX01", "url": "http://ex01.contoso.com:5985/wsman",
                   "transport": "kerberos"}


@pytest.mark.parametrize(("table", "servers", "said"), [
    (None, [KERBEROS_SERVER], "EX01: transport 'kerberos' needs a [kerberos] table"),
    ({"principal": "svc-submitwatch", "password_env": "P"}, [],
     "kerberos.principal must be a Kerberos principal with its realm in capitals"),
    ({"principal": "svc@CONTOSO.COM"}, [], "[kerberos] needs exactly one of keytab"),
    ({"principal": "svc@CONTOSO.COM", "keytab": "/nonexistent/k", "password_env": "P"}, [],
     "[kerberos] needs exactly one of keytab"),
    ({"principal": "svc@CONTOSO.COM", "keytab": "/nonexistent/sw.keytab"}, [],
     "kerberos.keytab /nonexistent/sw.keytab cannot be read: No such file or directory"),
    ({"principal": "svc@CONTOSO.COM", "password_env": "P"},
     [{**KERBEROS_SERVER, "username": "CONTOSO\\svc"}],
     "servers.EX01: transport 'kerberos' signs in as [kerberos].principal; remove username"),
])
def test_kerberos_configuration_mistakes_are_named(table, servers, said):
    with pytest.raises(ConfigError) as caught:
        _parse(table, servers, {"P": "x"})
    assert said in str(caught.value)


def test_a_file_that_is_not_a_keytab_is_refused(tmp_path):
    not_keytab = tmp_path / "sw.keytab"
    not_keytab.write_text("password123\n")
    with pytest.raises(ConfigError, match="is not a keytab file"):
        _parse({"principal": "svc@CONTOSO.COM", "keytab": str(not_keytab)})


def test_the_keytab_may_come_from_systemd_credentials(tmp_path, monkeypatch):
    (tmp_path / "submitwatch.keytab").write_bytes(b"\x05\x02")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    config = _parse({"principal": "svc@CONTOSO.COM",
                     "keytab": "$CREDENTIALS_DIRECTORY/submitwatch.keytab"}, [KERBEROS_SERVER])
    assert config.kerberos.keytab == str(tmp_path / "submitwatch.keytab")
    assert config.servers[0].kerberos is config.kerberos   # the server signs in as it
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError, match="CREDENTIALS_DIRECTORY is not set"):
        _parse({"principal": "svc@CONTOSO.COM",
                "keytab": "$CREDENTIALS_DIRECTORY/submitwatch.keytab"})


def test_each_restart_gets_its_own_ticket_and_loses_no_poll(tmp_path, kerberos, kerberos_winrm,
                                                           kdc_logs):
    """`poll-once` twice: each process starts with no ticket (its cache lived in its memory
    and ended with it), gets one from the keytab, and polls; no credential cache is written
    where another process could read it."""
    config = write_toml(tmp_path, kerberos, kerberos_winrm, kerberos.krb5_conf)
    caches = set(Path("/tmp").glob("krb5cc*"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KRB5CC")}
    env["SLACK_BOT_TOKEN"] = BOT_TOKEN
    for n in range(2):
        kdc_logs["EX01"].append(FE, 1020, (f"CONTOSO\\restart-{n}",))
        done = subprocess.run([sys.executable, "-m", "bot.cli", "--config", str(config),
                               "poll-once"], capture_output=True, text=True, timeout=120,
                              env=env, cwd=Path(__file__).resolve().parent.parent)
        assert "EX01: 1 new event(s)" in done.stdout, done.stdout + done.stderr
    assert kerberos_winrm.stats("EX01").auth_successes == 2      # one sign-in per process
    assert set(Path("/tmp").glob("krb5cc*")) == caches
