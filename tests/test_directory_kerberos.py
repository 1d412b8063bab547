"""LDAP over Kerberos (issue 24, point 5) against a real Samba AD that requires LDAP signing, as a
hardened DC does (`ldap server require strong auth = yes`, tests/samba_ad.py): its KDC issues the
tickets (the `kerberos` session fixture), and the reader binds with SASL GSSAPI, signed and sealed,
to this run's DC by a name of its own (the `kerberos_dc` fixture: ldap/dc1-<tag>.corp.test).

What is proven here: the Kerberos bind, from a keytab and from a password, reads the very same
findings as SIMPLE over LDAPS (accounts, token groups, DACLs, the Submit right); the DC refuses
SIMPLE without TLS and an unsigned SASL bind; NTLM is no longer offered; and each Kerberos failure
(no KDC, wrong password, no SPN for the name in the URL, an address for a name) is said in words.
Nothing is mocked or skipped.
"""
from __future__ import annotations

import os
import re
import socket
import uuid
from datetime import UTC, datetime

import ldap
import ldap.sasl
import pytest

from bot.core.config import (
    ConfigError,
    KerberosConfig,
    Secret,
    parse_directory,
    with_kerberos,
)
from bot.core.kerberos import Login
from bot.directory.adcheck import check
from bot.directory.reader import Directory, DirectoryError, submit_right
from tests.kerberos_ad import krb5_conf
from tests.samba_ad import BASE_DN, PASSWORD, submit_ace, unique

ENV = "DIRECTORY_PASSWORD"
KERBEROS_ENV = "SUBMITWATCH_KERBEROS_PASSWORD"
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
SEALED = re.compile(r"\(Kerberos bind, signed and sealed: SASL GSSAPI with a (\d+)-bit security "
                    r"layer\)$")


@pytest.fixture(scope="module")
def ad(samba_ad):
    """This module's accounts: kalice (granted by name), kbob (through Kerberos Senders), kcarol
    (in Kerberos Senders, denied by name)."""
    samba_ad.add_group("Kerberos Senders")
    samba_ad.add_user("kalice")
    samba_ad.add_user("kbob", groups=["Kerberos Senders"])
    samba_ad.add_user("kcarol", groups=["Kerberos Senders"])
    return samba_ad


@pytest.fixture(autouse=True)
def kerberos_environment(monkeypatch):
    """bot.core.kerberos.Login points the process at its cache, keytab and krb5.conf through the
    environment: what a test changes there is put back after it. No client keytab to start
    with, so a bind "from a password" cannot take its ticket from one."""
    for name in ("KRB5_CONFIG", "KRB5CCNAME", "KRB5_CLIENT_KTNAME"):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
    monkeypatch.delenv("KRB5_CLIENT_KTNAME", raising=False)


def identity(kerberos, *, password: str | None = None, krb5: str | None = None) -> KerberosConfig:
    """[kerberos] as a user writes it: the client keytab, or a password (from the environment)."""
    conf = krb5 or str(kerberos.krb5_conf)
    if password is None:
        return KerberosConfig(kerberos.client_principal, keytab=str(kerberos.client_keytab),
                              krb5_conf=conf)
    return KerberosConfig(kerberos.client_principal, password_env=KERBEROS_ENV,
                          password=Secret(password), krb5_conf=conf)


def fresh(config: KerberosConfig) -> Login:
    """A login with an empty cache of its own, so the ticket is got in this test (from the
    keytab, or the password), never found left by another."""
    login = Login(config)
    login.ccache = f"MEMORY:test-{uuid.uuid4().hex}"
    return login


def kerberos_directory(urls, config: KerberosConfig):
    return with_kerberos(parse_directory({"urls": list(urls), "auth": "kerberos",
                                          "connect_timeout": 3, "read_timeout": 5}, {}), config)


def simple_directory(ad, **overrides):
    table = {"urls": [ad.ldaps_url], "user": "CORP\\reader", "auth": "simple",
             "password_env": ENV, "ca_file": str(ad.ca_file), "connect_timeout": 3,
             "read_timeout": 5, **overrides}
    return parse_directory(table, {ENV: PASSWORD})


def assert_sealed(directory: Directory, principal: str) -> None:
    assert directory.bound_as.startswith(f"{principal} (Kerberos bind")
    layer = SEALED.search(directory.bound_as)
    assert layer and int(layer.group(1)) >= 56, directory.bound_as  # 56 bits and up: encrypted


def connectors(ad):
    """Three connectors on EX01: kalice granted by name, Kerberos Senders granted, kcarol denied
    by name ahead of the group's grant."""
    group = ad.groups["Kerberos Senders"].sid
    names = {}
    for key, aces in (("by name", [submit_ace(ad.users["kalice"].sid)]),
                      ("by group", [submit_ace(group)]),
                      ("denied", [submit_ace(ad.users["kcarol"].sid, deny=True),
                                  submit_ace(group)])):
        names[key] = unique("Kerberos Frontend")
        ad.add_connector("EX01", names[key], aces=aces)
    return names


# --- the bind, and what it reads ----------------------------------------------------------------

def test_a_kerberos_bind_from_a_keytab_is_sealed_and_reads_what_simple_reads(ad, kerberos,
                                                                            kerberos_dc):
    names = connectors(ad)
    config = identity(kerberos)
    login = fresh(config)
    with Directory(kerberos_directory([kerberos_dc.url], config), login=login) as sealed, \
            Directory(simple_directory(ad)) as simple:
        assert sealed.url == kerberos_dc.url
        assert_sealed(sealed, kerberos.client_principal)
        assert login.ensure().source == f"keytab {kerberos.client_keytab}"
        assert simple.bound_as == "CORP\\reader (SIMPLE bind over TLS)"
        # the findings, bind against bind
        for who in ("CORP\\kalice", "kbob@corp.test", "CORP\\kcarol", "CORP\\Administrator",
                    ad.users["kalice"].sid):
            assert sealed.account(who) == simple.account(who), who
        for name in names.values():
            assert sealed.connector("EX01", name) == simple.connector("EX01", name)
            for who in ("CORP\\kalice", "CORP\\kbob", "CORP\\kcarol"):
                assert (submit_right(sealed.account(who), sealed.connector("EX01", name))
                        == submit_right(simple.account(who), simple.connector("EX01", name)))
        # and what they are
        right = lambda who, key: submit_right(sealed.account(who),  # noqa: E731
                                              sealed.connector("EX01", names[key]))
        assert right("CORP\\kalice", "by name").status == "granted"
        assert right("CORP\\kalice", "by name").explicit
        assert right("CORP\\kbob", "by group").via.name == "Kerberos Senders"
        assert right("CORP\\kcarol", "denied").status == "denied"
        assert right("CORP\\kbob", "denied").status == "granted"
        assert right("CORP\\kalice", "by group").status == "not granted"
        admin = sealed.account("CORP\\Administrator")
        assert admin.rid == 500 and admin.is_builtin_admin
        assert sealed.account("CORP\\kalice").rid == ad.users["kalice"].rid
        assert sealed.config_base() == f"CN=Configuration,{BASE_DN}"
        # a non-admin gets the DACLs only with the SD-flags control, under Kerberos too
        assert sealed.descriptors_without_control("EX01") == 0


def test_a_kerberos_bind_from_a_password(ad, kerberos, kerberos_dc):
    names = connectors(ad)
    config = identity(kerberos, password=kerberos.client_password)
    login = fresh(config)
    with Directory(kerberos_directory([kerberos_dc.url], config), login=login) as sealed:
        assert "KRB5_CLIENT_KTNAME" not in os.environ   # no keytab to fall back on
        assert login.ensure().source == "password"
        assert_sealed(sealed, kerberos.client_principal)
        kalice = sealed.account("CORP\\kalice")
        assert submit_right(kalice, sealed.connector("EX01", names["by name"])).status == "granted"
        assert submit_right(kalice, sealed.connector("EX01", names["denied"])).status == \
            "not granted"


def test_the_alert_finding_is_the_same_through_either_bind(ad, kerberos, kerberos_dc):
    """adcheck.check, as the poller and the fix-loop call it (the process's own login)."""
    names = connectors(ad)
    places = [("EX01", names["denied"]), ("EX01", names["by name"])]
    for who in ("CORP\\kcarol", "CORP\\kalice"):
        through_kerberos = check(kerberos_directory([kerberos_dc.url], identity(kerberos)), who,
                                 places, NOW)
        assert through_kerberos.error is None and through_kerberos.found
        assert through_kerberos == check(simple_directory(ad), who, places, NOW)
    assert [c.right for c in through_kerberos.connectors] == ["not granted", "granted"]


def test_the_configuration_binds_as_the_kerberos_principal(kerberos, kerberos_dc, make_config):
    identity_table = {"principal": kerberos.client_principal,
                      "keytab": str(kerberos.client_keytab),
                      "krb5_conf": str(kerberos.krb5_conf)}
    config = make_config(directory={"urls": [kerberos_dc.url], "auth": "kerberos"},
                         kerberos=identity_table)
    assert config.directory.user == kerberos.client_principal
    assert config.directory.kerberos == config.kerberos and config.directory.password_env is None
    with Directory(config.directory) as directory:
        assert_sealed(directory, kerberos.client_principal)
    with pytest.raises(ConfigError, match=re.escape(
            "directory: auth 'kerberos' needs a [kerberos] table naming SubmitWatch's principal")):
        make_config(directory={"urls": [kerberos_dc.url], "auth": "kerberos"})


# --- what a DC that requires signing refuses ----------------------------------------------------

def test_the_dc_refuses_simple_without_tls_and_an_unsigned_sasl_bind(ad, kerberos, kerberos_dc):
    plain = simple_directory(ad, urls=[ad.ldap_url], allow_insecure_simple=True)
    with pytest.raises(DirectoryError) as refused:
        Directory(plain).connect()
    assert str(refused.value) == (
        f"{ad.ldap_url} refused a SIMPLE bind without TLS: this DC requires LDAP signing (a "
        "signed or encrypted connection), as hardened DCs do. Use ldaps://, or auth = "
        "'kerberos' (signed and sealed over ldap://)")
    # SIMPLE over LDAPS stays as it was
    with Directory(simple_directory(ad)) as over_tls:
        assert over_tls.bound_as == "CORP\\reader (SIMPLE bind over TLS)"
        assert over_tls.account("CORP\\kalice").sid == ad.users["kalice"].sid
    # the same ticket, in a SASL bind without a security layer: refused
    fresh(identity(kerberos)).ensure()
    unsigned = ldap.initialize(kerberos_dc.url)
    unsigned.set_option(ldap.OPT_X_SASL_NOCANON, 1)
    unsigned.set_option(ldap.OPT_X_SASL_SSF_MAX, 0)
    with pytest.raises(ldap.STRONG_AUTH_REQUIRED) as strong:
        unsigned.sasl_interactive_bind_s("", ldap.sasl.gssapi())
    assert "Sign or Seal are required" in strong.value.args[0]["info"]


def test_ntlm_is_no_longer_offered(ad):
    with pytest.raises(ConfigError) as raised:
        simple_directory(ad, auth="ntlm")
    assert str(raised.value) == (
        "directory.auth 'ntlm' is no longer offered: the NTLM bind SubmitWatch's LDAP library "
        "sends is refused by Samba and by domains that have turned NTLM off, so it could not be "
        "proven against any DC. Use auth = 'kerberos' (SASL GSSAPI, signed and sealed, as "
        "SubmitWatch's [kerberos] principal: docs/kerberos.md) or auth = 'simple' over ldaps://")


# --- Kerberos failures, in words ----------------------------------------------------------------

def test_no_kdc_is_said_in_words(kerberos, kerberos_dc, tmp_path):
    with socket.socket() as s:   # a port nothing listens on, as the realm's only KDC
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    conf = tmp_path / "krb5.conf"
    conf.write_text(krb5_conf(kerberos.kdc).replace(f"{kerberos.kdc}:88", f"127.0.0.1:{closed}"))
    config = identity(kerberos, krb5=str(conf))
    with pytest.raises(DirectoryError) as raised:
        Directory(kerberos_directory([kerberos_dc.url], config), login=fresh(config)).connect()
    assert str(raised.value).startswith(
        f"no Kerberos ticket for {kerberos.client_principal}: no KDC of realm CORP.TEST answered "
        f"(Kerberos, port 88): check the realm's kdc lines in {conf}")


def test_a_wrong_password_is_said_in_words(kerberos, kerberos_dc):
    config = identity(kerberos, password="Not-The-Passw0rd!")
    with pytest.raises(DirectoryError) as raised:
        Directory(kerberos_directory([kerberos_dc.url], config), login=fresh(config)).connect()
    assert str(raised.value) == (
        f"no Kerberos ticket for {kerberos.client_principal}: the KDC refused "
        f"{kerberos.client_principal}'s key: the password is wrong, or the keytab was exported "
        "before the password last changed (export it again)")


def test_a_dc_name_without_an_spn_is_said_in_words(kerberos, kerberos_dc):
    config = identity(kerberos)
    host = kerberos_dc.nospn_url.removeprefix("ldap://")
    with pytest.raises(DirectoryError) as raised:
        Directory(kerberos_directory([kerberos_dc.nospn_url], config),
                  login=fresh(config)).connect()
    assert str(raised.value) == (
        f"{kerberos_dc.nospn_url}: the domain has no service principal ldap/{host}, so the KDC "
        "issues no ticket for it: a domain controller registers ldap/<its DNS name> on its "
        "computer account (`setspn -L <DC>` lists them, `setspn -Q ldap/"
        f"{host}` shows who has this one). Name the DC in directory.urls as it is registered "
        f"(an alias needs `setspn -S ldap/{host} <DC>`)")
    # not the account's fault: the next DC is tried
    with Directory(kerberos_directory([kerberos_dc.nospn_url, kerberos_dc.url], config),
                   login=fresh(config)) as directory:
        assert directory.url == kerberos_dc.url


def test_a_dc_that_is_down_is_said_in_words(kerberos, kerberos_dc):
    with socket.socket() as s:
        s.bind((kerberos_dc.address, 0))
        closed = s.getsockname()[1]
    url = f"{kerberos_dc.url}:{closed}"
    config = identity(kerberos)
    with pytest.raises(DirectoryError) as raised:
        Directory(kerberos_directory([url], config), login=fresh(config)).connect()
    assert str(raised.value).startswith(f"cannot reach {url} ({kerberos_dc.host}:{closed}): "
                                        "connection refused")


def test_an_address_or_ldaps_in_the_url_is_refused_for_kerberos(ad, kerberos_dc):
    for url, words in (
            (f"ldap://{ad.address}", f"auth 'kerberos' needs the DC's DNS name, not the address "
                                     f"{ad.address}: the ticket is for the service ldap/<DC "
                                     "name>"),
            (f"ldaps://{kerberos_dc.host}", "auth 'kerberos' signs and seals the connection "
                                            "itself (SASL GSSAPI), over ldap:// (port 389)")):
        with pytest.raises(ConfigError, match=re.escape(words)):
            parse_directory({"urls": [url], "auth": "kerberos"}, {})
    with pytest.raises(ConfigError, match=re.escape(
            "directory.user is not used with auth 'kerberos': it binds as [kerberos].principal")):
        parse_directory({"urls": [kerberos_dc.url], "auth": "kerberos", "user": "CORP\\reader",
                         "password_env": ENV}, {})
