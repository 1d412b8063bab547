"""`submitwatch check` with and without [directory], against a real Samba AD (the `samba_ad`
session fixture) and the WinRM and Slack stand-ins: every line it prints and its exit status.

The rest of check (WinRM, Slack) is tests/test_service.py's; here the configuration is the same
good one, so the directory alone decides whether check passes.
"""
from __future__ import annotations

import socket
from dataclasses import replace

import pytest

from bot.core.config import KerberosConfig, Secret, parse_directory, with_kerberos
from bot.ops.check import run_check
from tests.samba_ad import PASSWORD, unique

ENV = "DIRECTORY_PASSWORD"


def directory(ad, user="reader", password=PASSWORD, **overrides):
    table = {"urls": [ad.ldaps_url], "user": f"CORP\\{user}", "auth": "simple", "password_env": ENV,
             "ca_file": str(ad.ca_file), "connect_timeout": 3, "read_timeout": 5, **overrides}
    return parse_directory(table, {ENV: password} if password else {})


@pytest.fixture
def check(make_config, slack):
    """check of the usual good setup (EX01, EX02, Slack) with this [directory]:
    (exit status, the lines printed)."""
    def run(directory_config):
        config = make_config(servers=("EX01", "EX02"))
        config = replace(config, directory=directory_config,
                         slack=replace(config.slack, app_token=Secret(slack.app_token)))
        lines: list[str] = []
        status = run_check(config, out=lines.append)
        return status, lines
    return run


@pytest.fixture(scope="module")
def ad(samba_ad):
    """Each configured server has a connector (every Exchange server has some)."""
    for server in ("EX01", "EX02"):
        samba_ad.add_connector(server, unique("Default Frontend"))
    return samba_ad


def test_without_a_directory_one_line_says_the_checks_are_off(check):
    status, lines = check(None)
    assert status == 0, lines
    [off] = [line for line in lines if line[9:].startswith("directory")]
    assert off.startswith("OFF      directory checks are off: no [directory] table in the "
                          "configuration")


def test_the_reader_account_reads_everything(ad, check):
    status, lines = check(directory(ad))
    assert status == 0, "\n".join(lines)
    assert (f"OK       directory: {ad.ldaps_url} accepted CORP\\reader (SIMPLE bind over "
            "TLS)") in lines
    assert ("OK       directory: the configuration partition CN=Configuration,DC=corp,DC=test "
            "is readable") in lines
    for server in ("EX01", "EX02"):
        assert any(line.startswith(f"OK       directory: {server}: ")
                   and "Receive connector(s) readable" in line for line in lines), lines
        assert (f"OK       directory: {server}: their DACLs are readable with the SD-flags "
                "control (DACL only); without it the DC returns none, as it does for any "
                "non-admin") in lines
    assert any(line.startswith("OK       directory: CORP\\reader: SID S-1-5-21-")
               and "token group(s) readable" in line for line in lines)
    assert not [line for line in lines if line.startswith(("FAILED", "FIX"))]


def test_an_account_that_cannot_read_descriptors_gets_the_delegation(ad, check):
    status, lines = check(directory(ad, user="noread"))
    assert status == 1
    assert any(line.startswith("FAILED   directory: EX01: the security descriptor of ")
               and "cannot be read, even with the SD-flags control" in line for line in lines)
    assert ("FAILED   directory: an admin can grant the read-only access needed with one of "
            "these commands per server (nothing else SubmitWatch does needs more):") in lines
    for server in ("EX01", "EX02"):
        protocols = ad.servers[server]
        assert f'FIX      dsacls "{protocols}" /I:T /G "CORP\\noread:GR"' in lines
        assert (f'FIX      Add-ADPermission -Identity "{protocols}" -User "CORP\\noread" '
                "-AccessRights GenericRead -InheritanceType All") in lines
    # the rest of check still ran and passed
    assert any(line.startswith("OK       Socket Mode") for line in lines)


def test_directory_down_is_one_failed_line_in_words(ad, check):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"ldaps://127.0.0.1:{s.getsockname()[1]}"
    status, lines = check(directory(ad, urls=[closed]))
    assert status == 1
    [failed] = [line for line in lines if line.startswith("FAILED")]
    assert failed.startswith(f"FAILED   directory: cannot reach {closed} (127.0.0.1:")
    assert "connection refused (nothing listens there" in failed


def test_wrong_or_missing_password_is_a_failed_line_in_words(ad, check):
    status, lines = check(directory(ad, password="not-the-password"))
    assert status == 1
    [failed] = [line for line in lines if line.startswith("FAILED")]
    # Samba says "data 52e" as AD does; the words come from that code
    assert failed == (f"FAILED   directory: {ad.ldaps_url} rejected the credentials of "
                      f"CORP\\reader: wrong password (check the user and the password in {ENV})")
    status, lines = check(directory(ad, password=None))
    assert status == 1
    assert (f"FAILED   directory: the directory password is not set: put it in the environment "
            f"variable {ENV} (or a file named by {ENV}_FILE)") in lines


def test_a_kerberos_bind_says_as_whom_and_that_it_is_sealed(ad, check, kerberos, kerberos_dc):
    """auth 'kerberos' (tests/test_directory_kerberos.py): the line names the principal and
    the security layer; the principal has the same read-only delegation as `reader`."""
    identity = KerberosConfig(kerberos.client_principal, keytab=str(kerberos.client_keytab),
                              krb5_conf=str(kerberos.krb5_conf))
    config = with_kerberos(parse_directory({"urls": [kerberos_dc.url], "auth": "kerberos",
                                            "connect_timeout": 3, "read_timeout": 5}, {}),
                           identity)
    status, lines = check(config)
    assert status == 0, "\n".join(lines)
    assert (f"OK       directory: {kerberos_dc.url} accepted {kerberos.client_principal} "
            "(Kerberos bind, signed and sealed: SASL GSSAPI with a 256-bit security layer)"
            ) in lines
    assert any(line.startswith(f"OK       directory: {kerberos.client_principal}: SID S-1-5-21-")
               for line in lines), lines
    assert not [line for line in lines if line.startswith(("FAILED", "FIX"))]
