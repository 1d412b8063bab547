"""The read-only directory reader (bot/directory/reader.py, bot/directory/secdesc.py) against a real Samba AD DC.

No LDAP is mocked: the `samba_ad` session fixture (tests/samba_ad.py) provisions Samba's domain
controller, and every descriptor read here was written by Samba's own SDDL parser
(samba-tool dsacl set, ldbmodify), never by our code.

The reader binds here with SIMPLE over LDAPS (the test CA's certificate, verified); the session's
Samba requires LDAP signing (`ldap server require strong auth = yes`), as a hardened DC does, so
SIMPLE without TLS is refused. The Kerberos bind (signed and sealed) and those refusals are
tests/test_directory_kerberos.py's, which reads the same findings as here through it.
"""
from __future__ import annotations

import dataclasses
import re
import socket
import ssl
import uuid

import pytest

from bot.core.config import ConfigError, DirectoryConfig, parse_directory
from bot.directory.reader import (
    ACCEPT_ANY_RECIPIENT,
    ACCEPT_ROUTING_HEADERS,
    BYPASS_ANTI_SPAM,
    Directory,
    DirectoryError,
    _transport_problem,
    check_access,
    submit_right,
)
from bot.directory.secdesc import (
    SecurityDescriptorError,
    parse_security_descriptor,
    sid_to_bytes,
)
from tests.samba_ad import (
    BASE_DN,
    BASIC_AUTH,
    DC_NAME,
    FRONTEND_TRANSPORT,
    HUB_TRANSPORT,
    PASSWORD,
    THIS_ORGANIZATION,
    TLS,
    exchange_users_aces,
    loopback_addresses,
    submit_ace,
    unique,
)

ENV = "DIRECTORY_PASSWORD"


def reader_config(ad, user="reader", password=PASSWORD, **overrides) -> DirectoryConfig:
    table = {"urls": [ad.ldaps_url], "user": f"CORP\\{user}", "auth": "simple",
             "password_env": ENV, "ca_file": str(ad.ca_file), "connect_timeout": 3,
             "read_timeout": 5, **overrides}
    return parse_directory(table, {ENV: password})


@pytest.fixture(scope="module")
def ad(samba_ad):
    """The session's directory with this module's accounts: alice (granted explicitly), bob
    (in SMTP Senders), carol (in SMTP Senders and denied by name), dave (nothing)."""
    samba_ad.add_group("SMTP Senders")
    samba_ad.add_group("Blocked Senders")
    samba_ad.add_user("alice")
    samba_ad.add_user("bob", groups=["SMTP Senders"])
    samba_ad.add_user("carol", groups=["SMTP Senders", "Blocked Senders"])
    samba_ad.add_user("dave")
    return samba_ad


@pytest.fixture(scope="module")
def directory(ad):
    with Directory(reader_config(ad)) as d:
        yield d


def connector(ad, directory, aces=(), server="EX01", **kwargs):
    name = unique("Client Frontend")
    ad.add_connector(server, name, aces=aces, **kwargs)
    found = directory.connector(server, name)
    assert found is not None
    return found


# --- the Submit right, decided from DACLs Samba wrote ---------------------------------------

def test_granted_explicitly(ad, directory):
    alice = directory.account("CORP\\alice")
    c = connector(ad, directory, [submit_ace(ad.users["alice"].sid)])
    right = submit_right(alice, c)
    assert right.status == "granted" and right.explicit
    assert right.via.sid == ad.users["alice"].sid
    assert "explicitly to the account" in right.text and c.name in right.text
    # dave, in none of it, is not granted: the right is about the token, not the connector
    assert submit_right(directory.account("CORP\\dave"), c).status == "not granted"


def test_granted_through_a_group(ad, directory):
    bob = directory.account("bob@corp.test")
    group = ad.groups["SMTP Senders"]
    assert any(g.sid == group.sid and g.name == "SMTP Senders" for g in bob.groups)
    right = submit_right(bob, connector(ad, directory, [submit_ace(group.sid)]))
    assert right.status == "granted" and not right.explicit
    assert right.via.name == "SMTP Senders"
    assert f"through SMTP Senders ({group.sid})" in right.text


def test_granted_through_authenticated_users_is_the_exchange_users_group(ad, directory):
    dave = directory.account("CORP\\dave")
    rights = [submit_ace("AU")] + [f"(OA;;CR;{guid};;AU)" for guid in (
        ACCEPT_ANY_RECIPIENT, BYPASS_ANTI_SPAM, ACCEPT_ROUTING_HEADERS)]
    c = connector(ad, directory, rights)
    right = submit_right(dave, c)
    assert right.status == "granted" and right.via.sid == "S-1-5-11"
    assert "Authenticated Users" in right.text
    assert c.permission_groups == ("ExchangeUsers",)
    # Submit alone for Authenticated Users grants, but is not the whole ExchangeUsers group
    only_submit = connector(ad, directory, [submit_ace("AU")])
    assert submit_right(dave, only_submit).status == "granted"
    assert only_submit.permission_groups == ()


def test_an_explicit_deny_wins_over_a_group_grant(ad, directory):
    carol = directory.account("CORP\\carol")
    c = connector(ad, directory, [submit_ace(ad.groups["SMTP Senders"].sid)])
    assert submit_right(carol, c).status == "granted"
    # as an admin would add it: samba-tool dsacl set (Samba puts the new ACE first)
    ad.add_ace(c.dn, submit_ace(ad.users["carol"].sid, deny=True))
    c = directory.connector("EX01", c.name)
    right = submit_right(carol, c)
    assert right.status == "denied" and right.explicit
    assert right.ace.is_deny and right.ace.sid == ad.users["carol"].sid
    assert "Deny entry for the account itself" in right.text
    # a Deny for a group the account is in wins the same way, and names the group
    blocked = ad.groups["Blocked Senders"]
    ad.set_aces(c.dn, [submit_ace(blocked.sid, deny=True), submit_ace(ad.users["carol"].sid)])
    right = submit_right(carol, directory.connector("EX01", c.name))
    assert right.status == "denied" and right.via.name == "Blocked Senders"
    # bob is in SMTP Senders, not Blocked Senders: the Deny is not his
    assert submit_right(directory.account("CORP\\bob"), c).status == "granted"


def test_the_dacl_order_decides_not_the_kind_of_entry(ad, directory):
    """AuthZ walks the DACL as stored: an Allow placed before a Deny (a non-canonical order,
    which Samba keeps as written) grants. Admin tools write Denies first; we read, not fix."""
    carol = directory.account("CORP\\carol")
    c = connector(ad, directory, [submit_ace(ad.users["carol"].sid),
                                  submit_ace(ad.groups["Blocked Senders"].sid, deny=True)])
    assert submit_right(carol, c).status == "granted"


def test_not_granted_names_what_was_searched(ad, directory):
    dave = directory.account("CORP\\dave")
    c = connector(ad, directory)  # only what it inherits: the admins' full control, no Submit
    right = submit_right(dave, c)
    assert right.status == "not granted" and right.ace is None
    assert "no entry in its DACL gives ms-Exch-SMTP-Submit to dave" in right.text


def test_inherit_only_and_other_rights_do_not_count_but_all_extended_rights_do(ad, directory):
    alice = directory.account("CORP\\alice")
    sid = ad.users["alice"].sid
    inherit_only = connector(ad, directory, [f"(OA;CIIO;CR;{SUBMIT_GUID};;{sid})"])
    assert submit_right(alice, inherit_only).status == "not granted"
    send_as = connector(ad, directory, [f"(OA;;CR;ab721a54-1e2f-11d0-9819-00aa0040529b;;{sid})"])
    assert submit_right(alice, send_as).status == "not granted"  # Send-As is not Submit
    read_only = connector(ad, directory, [f"(A;;RPLCLORC;;;{sid})"])
    assert submit_right(alice, read_only).status == "not granted"
    all_rights = connector(ad, directory, [f"(A;;CR;;;{sid})"])  # every extended right
    assert submit_right(alice, all_rights).status == "granted"
    full_control = connector(ad, directory, [f"(A;;GA;;;{sid})"])  # Samba maps GA on write
    assert submit_right(alice, full_control).status == "granted"


def test_a_grant_inherited_from_the_container(ad, directory):
    server = unique("EX").replace("-", "")[:15]
    protocols = ad.add_server(server)
    receive = f"CN=SMTP Receive Connectors,{protocols}"
    ad.add_ace(receive, f"(OA;CI;CR;{SUBMIT_GUID};;{ad.groups['SMTP Senders'].sid})")
    c = connector(ad, directory, server=server)
    right = submit_right(directory.account("CORP\\bob"), c)
    assert right.status == "granted" and right.ace.inherited
    assert "inherited from a parent container" in right.text


SUBMIT_GUID = "a18293f1-0685-4540-aa63-e32df421b3a2"


# --- connector facts ----------------------------------------------------------------------------

def test_connector_facts(ad, directory):
    c = connector(ad, directory, bindings=["10.0.0.5:587"], remote_ip_ranges=["10.0.0.0/8"],
                  role=HUB_TRANSPORT, security_flags=TLS | BASIC_AUTH, fqdn="mail.corp.test")
    assert (c.server, c.enabled, c.bindings, c.remote_ip_ranges) == (
        "EX01", True, ("10.0.0.5:587",), ("10.0.0.0/8",))
    assert (c.role, c.auth_mechanisms, c.fqdn) == ("HubTransport", ("Tls", "BasicAuth"),
                                                  "mail.corp.test")
    assert c.dacl_readable and c.dacl_problem is None
    assert c.dn.startswith(f"CN={c.name},CN=SMTP Receive Connectors,CN=Protocols,CN=EX01,")
    unset = connector(ad, directory, role=None, security_flags=None, enabled=None)
    # unset attributes mean what Exchange's schema defaults say
    assert unset.enabled and unset.role is None
    assert unset.auth_mechanisms == ("Tls", "BasicAuth", "BasicAuthRequireTLS", "ExchangeServer")


def test_a_disabled_connector(ad, directory):
    c = connector(ad, directory, [submit_ace(ad.users["alice"].sid)], enabled=False,
                  role=FRONTEND_TRANSPORT)
    assert not c.enabled and c.role == "FrontendTransport"
    # the right is still what the DACL says: whether a disabled connector matters is the
    # caller's to say
    assert submit_right(directory.account("CORP\\alice"), c).status == "granted"


def test_a_connector_or_server_that_does_not_exist(ad, directory):
    connector(ad, directory)  # EX01 has at least one
    assert directory.connector("EX01", "No Such Connector") is None
    with pytest.raises(DirectoryError, match="no Exchange server named EX99"):
        directory.connectors("EX99")
    assert directory.account("CORP\\nobody-here") is None
    assert directory.account("nobody@corp.test") is None


def test_connectors_lists_a_servers_connectors_by_name(ad, directory):
    server = unique("EX").replace("-", "")[:15]
    ad.add_server(server)
    for name in ("Zeta", "alpha", "Default Frontend"):
        ad.add_connector(server, name)
    assert [c.name for c in directory.connectors(server)] == ["alpha", "Default Frontend",
                                                             "Zeta"]
    assert directory.connector(server, "default frontend").name == "Default Frontend"


# --- accounts ---------------------------------------------------------------------------------

def test_account_facts_and_its_token(ad, directory):
    bob = directory.account("CORP\\bob")
    assert (bob.sid, bob.sam_account_name, bob.user_principal_name) == (
        ad.users["bob"].sid, "bob", "bob@corp.test")
    assert bob.dn == f"CN=bob,CN=Users,{BASE_DN}" and not bob.disabled
    names = {g.name for g in bob.groups}
    assert {"Domain Users", "SMTP Senders"} <= names
    assert {"S-1-1-0", "S-1-5-11", bob.sid} <= bob.token
    assert not bob.is_builtin_admin and not bob.is_guest
    # the three ways Exchange may write the name find the same account
    assert directory.account("bob").sid == directory.account("bob@CORP.TEST").sid == bob.sid


def test_the_rid_decides_the_builtin_administrator_not_the_name(ad, directory):
    admin = directory.account("CORP\\Administrator")
    assert admin.is_builtin_admin and admin.rid == 500
    assert directory.account("CORP\\Guest").is_guest
    look_alike = ad.add_user(unique("Administrator")[:20])
    assert not directory.account(f"CORP\\{look_alike.name}").is_builtin_admin
    ad.modify(ad.administrator.dn, sAMAccountName="breakglass")  # renamed, as many shops do
    try:
        renamed = directory.account("CORP\\breakglass")
        assert renamed.is_builtin_admin and renamed.sid == admin.sid
        assert directory.account("CORP\\Administrator") is None
    finally:
        ad.modify(ad.administrator.dn, sAMAccountName="Administrator")


def test_a_disabled_account_says_so(ad, directory):
    user = ad.add_user(unique("gone")[:20], disabled=True)
    assert directory.account(f"CORP\\{user.name}").disabled


# --- what a reader that may not read descriptors gets -----------------------------------------

def test_an_account_that_cannot_read_descriptors(ad, directory):
    c = connector(ad, directory, [submit_ace(ad.users["alice"].sid)])
    with Directory(reader_config(ad, user="noread")) as blind:
        seen = blind.connector("EX01", c.name)
        alice = blind.account("CORP\\alice")
        # the connector's attributes are there, its DACL is not, even with the control
        assert seen.bindings == c.bindings and seen.enabled
        assert not seen.dacl_readable and seen.permission_groups is None
        right = submit_right(alice, seen)
        assert right.status == "unknown"
        assert "noread may not read the connector's security descriptor" in right.text
        lines = check_access(blind, ["EX01"])
    failed = [text for status, text in lines if status == "FAILED"]
    assert any("cannot be read, even with the SD-flags control" in t for t in failed)
    fixes = [text for status, text in lines if status == "FIX"]
    protocols = ad.servers["EX01"]
    assert f'dsacls "{protocols}" /I:T /G "CORP\\noread:GR"' in fixes
    assert (f'Add-ADPermission -Identity "{protocols}" -User "CORP\\noread" -AccessRights '
            "GenericRead -InheritanceType All") in fixes


def test_the_delegation_check_prints_is_the_one_that_works(ad, directory):
    """An account with no delegation sees no connector; granted what `check` prints (generic
    read on CN=Protocols, inherited: the SDDL dsacls /I:T /G user:GR writes), it reads them all."""
    user = ad.add_user(unique("svc")[:20])
    server = unique("EX").replace("-", "")[:15]
    ad.add_server(server)
    ad.add_connector(server, "Client Frontend")
    with Directory(reader_config(ad, user=user.name)) as fresh:
        with pytest.raises(DirectoryError) as raised:
            fresh.connector(server, "Client Frontend")
        # CN=Protocols itself is visible (a container's default descriptor lets Authenticated
        # Users read it), the connectors below it are not
        assert (f"CORP\\{user.name} sees no Receive connector of {server} under "
                f"{ad.servers[server]}") in str(raised.value)
        assert any(line.startswith("dsacls ") for line in raised.value.fix)
        ad.add_ace(ad.servers[server], f"(A;CI;RPLCLORC;;;{user.sid})")
        assert fresh.connector(server, "Client Frontend").dacl_readable


def test_the_sd_flags_control_makes_the_difference(ad, directory):
    c = connector(ad, directory, [submit_ace(ad.users["alice"].sid)])
    ad.add_connector("EX02", unique("Default Frontend"))
    assert c.dacl_readable  # read with the control
    assert directory.descriptors_without_control("EX01") == 0  # a non-admin gets none without
    lines = check_access(directory, ["EX01", "EX02"], account="CORP\\bob")
    assert ("OK", "directory: EX01: their DACLs are readable with the SD-flags control (DACL "
                  "only); without it the DC returns none, as it does for any non-admin") in lines
    assert not [line for line in lines if line[0] in ("FAILED", "FIX")]
    assert any(s == "OK" and "CORP\\bob: SID" in t and "token group(s)" in t for s, t in lines)
    assert any(s == "OK" and "configuration partition CN=Configuration" in t for s, t in lines)
    with Directory(reader_config(ad, user="Administrator", password=ad.administrator.password)
                   ) as admin:
        assert admin.descriptors_without_control("EX01") > 0  # an admin gets them anyway


# --- failures, in words ----------------------------------------------------------------------

def test_directory_down(ad):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"ldaps://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(DirectoryError, match=rf"cannot reach {closed} .*connection refused"):
        Directory(reader_config(ad, urls=[closed])).connect()
    # the next URL is tried when one is down
    with Directory(reader_config(ad, urls=[closed, ad.ldaps_url])) as d:
        assert d.url == ad.ldaps_url


def test_wrong_password(ad):
    with pytest.raises(DirectoryError) as raised:
        Directory(reader_config(ad, password="not-the-password")).connect()
    assert str(raised.value).startswith(f"{ad.ldaps_url} rejected the credentials of CORP\\reader")
    assert f"the password in {ENV}" in str(raised.value)


def test_a_dc_that_does_not_answer_times_out(ad):
    with socket.socket() as silent:  # accepts the connection (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"ldap://127.0.0.1:{silent.getsockname()[1]}"
        config = reader_config(ad, urls=[url], allow_insecure_simple=True, read_timeout=1)
        with pytest.raises(DirectoryError, match=r"no answer within 1s \(read_timeout\)"):
            Directory(config).connect()


def test_untrusted_certificate(ad):
    table = {"urls": [ad.ldaps_url], "user": "CORP\\reader", "auth": "simple", "password_env": ENV}
    with pytest.raises(DirectoryError, match="TLS certificate is not trusted.*set directory.ca_file"):
        Directory(parse_directory(table, {ENV: PASSWORD})).connect()


def test_simple_over_plain_ldap_only_when_allowed(ad):
    with pytest.raises(ConfigError, match="over ldaps:// only"):
        reader_config(ad, urls=[ad.ldap_url])
    # allowed, it is still the DC's to refuse: tests/test_directory_kerberos.py


def test_missing_password_is_said_at_connect(ad):
    config = parse_directory({"urls": [ad.ldaps_url], "user": "CORP\\reader",
                              "password_env": ENV}, {})
    with pytest.raises(DirectoryError, match=f"environment variable {ENV}"):
        Directory(config).connect()


def test_check_access_on_an_unreachable_directory_is_one_failed_line(ad):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"ldaps://127.0.0.1:{s.getsockname()[1]}"
    lines = check_access(Directory(reader_config(ad, urls=[closed])), ["EX01"])
    assert len(lines) == 1 and lines[0][0] == "FAILED" and "cannot reach" in lines[0][1]


# --- configuration ------------------------------------------------------------------------------

def test_parse_directory_rules():
    env = {ENV: "pw"}
    base = {"urls": ["ldaps://dc01.contoso.com"], "user": "CONTOSO\\svc", "password_env": ENV}
    config = parse_directory(base, env)
    assert (config.auth, config.verify_tls, config.connect_timeout, config.read_timeout) == (
        "simple", True, 5.0, 15.0)
    assert config.password.reveal() == "pw" and "pw" not in repr(config)
    cases = [
        ({"urls": []}, "directory.urls must be a list of LDAP URLs"),
        ({"urls": ["https://dc01"]}, "is not an LDAP URL"),
        ({"urls": ["ldap://dc01/DC=x"]}, "no base DN"),
        ({"auth": "ntlm"}, "directory.auth 'ntlm' is no longer offered"),
        ({"auth": "negotiate"}, "directory.auth must be 'kerberos' or 'simple'"),
        ({"urls": ["ldap://dc01"]}, "over ldaps:// only"),
        ({"auth": "kerberos"}, "directory.user is not used with auth 'kerberos'"),
        ({"verify_tls": "no"}, "directory.verify_tls must be true or false"),
        ({"read_timeout": "soon"}, "directory.read_timeout must be a duration"),
        ({"password": "x"}, "secrets never go in the config file"),
        ({"base": "DC=x"}, "unknown key 'directory.base'"),
    ]
    for change, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_directory({**base, **change}, env)
    with pytest.raises(ConfigError, match="directory.password_env is required"):
        parse_directory({k: v for k, v in base.items() if k != "password_env"}, env)
    assert parse_directory({**base, "auth": "simple", "urls": ["ldap://127.0.0.1"],
                            "allow_insecure_simple": True}, env).auth == "simple"


# --- the parser against what Samba returns ----------------------------------------------------

def test_the_parser_reads_what_samba_wrote(ad):
    """Our parse of Samba's binary descriptors, written out as SDDL, equals Samba's own SDDL of
    the same objects: a connector with object ACEs, and CN=Users (inherit-only ACEs, inherited
    object types, an owner and a group)."""
    alias = {"AU": "S-1-5-11", "AN": "S-1-5-7", "SY": "S-1-5-18", "BA": "S-1-5-32-544",
             "PS": "S-1-5-10", "ED": "S-1-5-9", "RU": "S-1-5-32-554", "WD": "S-1-1-0",
             "DA": f"{ad.domain_sid}-512", "EA": f"{ad.domain_sid}-519",
             "AO": "S-1-5-32-548", "PO": "S-1-5-32-550", "SO": "S-1-5-32-549",
             "CA": f"{ad.domain_sid}-517", "RS": f"{ad.domain_sid}-553",
             "CO": "S-1-3-0", "ER": "S-1-5-32-573"}
    dn = ad.add_connector("EX01", unique("Parsed"), aces=[
        submit_ace(ad.users["alice"].sid, deny=True), submit_ace("AU"),
        f"(OA;CI;RP;{uuid.uuid4()};{uuid.uuid4()};AN)"])
    for target in (dn, f"CN=Users,{BASE_DN}"):
        sd = parse_security_descriptor(ad.descriptor(target, sdflags=0x07))
        samba = ad.sddl(target)
        owner, group = re.match(r"O:(\w+|S-[\d-]+)G:(\w+|S-[\d-]+)D:", samba).groups()
        assert (sd.owner, sd.group) == (alias.get(owner, owner), alias.get(group, group))
        dacl = samba.split("D:", 1)[1].split("S:", 1)[0]  # ldbsearch shows the SACL too
        theirs = re.findall(r"\(([^)]*)\)", dacl)
        ours = [ace.sddl()[1:-1] for ace in sd.dacl]

        def normal(ace: str) -> str:
            kind, flags, rights, obj, inh, sid = ace.split(";")
            return ";".join([kind, "".join(sorted(re.findall("..", flags))),
                             "".join(sorted(re.findall("..", rights))), obj.lower(),
                             inh.lower(), alias.get(sid, sid)])
        assert [normal(a) for a in ours] == [normal(a) for a in theirs]


def test_the_parser_refuses_what_is_not_a_descriptor(ad):
    real = ad.descriptor(f"CN=Users,{BASE_DN}")
    assert parse_security_descriptor(real).dacl
    for broken in (b"", real[:19], real[:40], b"\x02" + real[1:], real[:2] + b"\x00\x00" + real[4:]):
        with pytest.raises(SecurityDescriptorError):
            parse_security_descriptor(broken)
    assert sid_to_bytes("S-1-5-11") == bytes([1, 1, 0, 0, 0, 0, 0, 5, 11, 0, 0, 0])
    with pytest.raises(SecurityDescriptorError):
        sid_to_bytes("not a sid")


# --- robustness (review findings) ----------------------------------------------------------

def test_an_account_whose_token_groups_cannot_be_read_gets_no_verdict(ad, directory):
    c = connector(ad, directory, [submit_ace("AU")])
    blind = dataclasses.replace(directory.account("CORP\\alice"), groups=())
    right = submit_right(blind, c)
    assert right.status == "unknown" and "gave no token groups" in right.text


def test_a_guest_logon_is_not_an_authenticated_user(ad, directory):
    c = connector(ad, directory, [submit_ace("AU")])
    guest = directory.account("CORP\\Guest")
    assert guest.is_guest and submit_right(guest, c).status == "not granted"
    assert submit_right(directory.account("CORP\\dave"), c).status == "granted"


def test_a_wrong_ca_file_is_said_in_words(ad):
    with pytest.raises(DirectoryError, match=re.escape(ad.ldaps_url)):
        with Directory(reader_config(ad, ca_file="/nonexistent/ca.pem")) as d:
            d.config_base()


def test_a_name_utf8_cannot_carry_is_refused_in_words(directory):
    with pytest.raises(DirectoryError, match="not valid text"):
        directory.account("CORP\\ab\ud800c")


def test_an_account_of_another_domain_is_not_taken_for_its_namesake_here(ad, directory):
    assert directory.account("corp.test\\alice").sid == ad.users["alice"].sid   # DNS name too
    assert "corp" in directory.domain_names()
    with pytest.raises(DirectoryError, match=r"CHILD\\alice is an account of the domain CHILD"):
        directory.account("CHILD\\alice")


# --- the token Exchange builds (DOMAIN.md 6) ---------------------------------------------------

NETWORK = "S-1-5-2"
#: A group of another domain of the forest (S-1-5-21-<another domain>-RID).
FOREIGN_GROUP = "S-1-5-21-1111111111-2222222222-3333333333-1107"


def test_the_token_holds_network_this_organization_and_sid_history(ad, directory):
    user = ad.add_user(unique("migrated")[:20])
    former = "S-1-5-21-1000000001-2000000002-3000000003-1234"
    ad.set_sid_history(user.dn, [former])
    account = directory.account(f"CORP\\{user.name}")
    assert account.sid_history == (former,)
    assert {user.sid, former, "S-1-1-0", NETWORK, "S-1-5-11", THIS_ORGANIZATION} <= account.token
    assert directory.account("CORP\\dave").sid_history == ()
    # a Guest logon is no authenticated user, but it is a network logon all the same
    guest = directory.account("CORP\\Guest").token
    assert NETWORK in guest and "S-1-5-11" not in guest and THIS_ORGANIZATION not in guest

    granted = submit_right(account, connector(ad, directory, [submit_ace(NETWORK)]))
    assert granted.status == "granted" and granted.via.name == "NT AUTHORITY\\NETWORK"
    denied = submit_right(account, connector(ad, directory, [
        submit_ace(THIS_ORGANIZATION, deny=True), *exchange_users_aces()]))
    assert denied.status == "denied" and denied.via.sid == THIS_ORGANIZATION
    assert "NT AUTHORITY\\This Organization (S-1-5-15)" in denied.text
    # an entry for the former SID names the account itself, and says how
    by_history = submit_right(account, connector(ad, directory, [submit_ace(former)]))
    assert by_history.status == "granted" and by_history.explicit
    assert by_history.via.sid == former
    assert f"explicitly to the account by its former SID {former} (sIDHistory)" in by_history.text
    refused = submit_right(account, connector(ad, directory, [submit_ace(former, deny=True),
                                                              *exchange_users_aces()]))
    assert refused.status == "denied" and refused.explicit
    assert f"Deny entry for the account itself by its former SID {former}" in refused.text
    # dave, without that history, is not concerned by either entry
    assert submit_right(directory.account("CORP\\dave"),
                        connector(ad, directory, [submit_ace(former)])).status == "not granted"


def test_a_deny_for_a_group_of_another_domain_leaves_the_right_unknown(ad, directory):
    """tokenGroups from this DC lists its own domain's groups only: a Deny for another domain's
    group (a domain-local group of the Exchange server's domain) may be the account's."""
    dave = directory.account("CORP\\dave")
    c = connector(ad, directory, [submit_ace(FOREIGN_GROUP, deny=True), *exchange_users_aces()])
    right = submit_right(dave, c)
    assert right.status == "unknown" and right.ace is None
    assert (f"a Deny entry for {FOREIGN_GROUP}, a group of another domain, may apply: "
            "SubmitWatch reads the groups of corp.test only") in right.text
    assert ("without it, the account would be granted Submit through NT AUTHORITY\\"
            "Authenticated Users (S-1-5-11)") in right.text
    # nothing grants it either: still unknown, as the Deny would make it "denied"
    alone = submit_right(dave, connector(ad, directory, [submit_ace(FOREIGN_GROUP, deny=True)]))
    assert alone.status == "unknown" and "no entry would grant the account Submit" in alone.text
    # an entry for all extended rights denies Submit too
    everything = submit_right(dave, connector(ad, directory, [f"(D;;CR;;;{FOREIGN_GROUP})",
                                                              submit_ace("AU")]))
    assert everything.status == "unknown"
    # a Deny after the grant that decides cannot change it (AuthZ stops at the grant)
    after = connector(ad, directory, [submit_ace(dave.sid), submit_ace(FOREIGN_GROUP, deny=True)])
    assert submit_right(dave, after).status == "granted"
    # a Deny for an allow-only right (Send-As), or an allow, of that domain does not count
    send_as = f"(OD;;CR;ab721a54-1e2f-11d0-9819-00aa0040529b;;{FOREIGN_GROUP})"
    assert submit_right(dave, connector(ad, directory, [send_as, submit_ace("AU")])
                        ).status == "granted"
    # a group of the account's own domain that its token lacks is simply not its
    own = connector(ad, directory, [submit_ace(f"{ad.domain_sid}-99999", deny=True),
                                    submit_ace("AU")])
    assert submit_right(dave, own).status == "granted"
    # a SID of another domain that the token holds (its sIDHistory) decides as any other
    user = ad.add_user(unique("moved")[:20])
    ad.set_sid_history(user.dn, [FOREIGN_GROUP.rsplit("-", 1)[0] + "-1500"])
    moved = directory.account(f"CORP\\{user.name}")
    held = connector(ad, directory, [submit_ace(moved.sid_history[0], deny=True),
                                     submit_ace("AU")])
    assert submit_right(moved, held).status == "denied"


def test_an_account_logged_as_its_sid_is_found_by_its_object_sid(ad, directory):
    alice = ad.users["alice"]
    found = directory.account(alice.sid)
    assert (found.sid, found.sam_account_name, found.query) == (alice.sid, "alice", alice.sid)
    assert found.qualified_name == "CORP\\alice" and found.netbios == "CORP"
    assert found.domain == "corp.test"
    assert directory.account(f" {alice.sid.lower()} ").sid == alice.sid
    assert directory.account(f"{ad.domain_sid}-987654") is None      # no account has it
    assert directory.account("S-1-5-21-1-2-3-99999999999") is None   # no SID can be that
    assert directory.account("CORP\\alice").qualified_name == "CORP\\alice"


# --- a certificate for another name -----------------------------------------------------------

def test_a_certificate_for_another_name_names_both(ad):
    """Samba also serves on an address its certificate does not name: the message says the
    certificate's names and the URL's host, not 'not trusted', and never the certificate
    dict ldap3 puts in its exception."""
    url = f"ldaps://{ad.unnamed_address}"
    with pytest.raises(DirectoryError) as raised:
        Directory(reader_config(ad, urls=[url])).connect()
    message = str(raised.value)
    assert message == (f"{url}: the DC's certificate is for {DC_NAME}, {ad.address}, not "
                       f"{ad.unnamed_address}: use the name the certificate has in "
                       f"directory.urls (ldaps://{DC_NAME})")
    for raw in ("{", "subjectAltName", "serialNumber", "not trusted"):
        assert raw not in message
    # the next URL is tried: a name mismatch is not the account's fault
    with Directory(reader_config(ad, urls=[url, ad.ldaps_url])) as d:
        assert d.url == ad.ldaps_url


def test_ssls_own_name_mismatch_errors_read_the_same(ad):
    """Python's ssl, checking the name itself, raises SSLCertVerificationError 62 (a host
    name) or 64 (an IP address) without the certificate: its names are read from the DC."""
    config = reader_config(ad)
    context = ssl.create_default_context(cafile=str(ad.ca_file))
    for server_name, code in (("dc9.corp.test", 62), (ad.unnamed_address, 64)):
        with socket.create_connection((ad.unnamed_address, 636), timeout=3) as sock:
            with pytest.raises(ssl.SSLCertVerificationError) as raised:
                context.wrap_socket(sock, server_hostname=server_name)
        assert raised.value.verify_code == code
        url = f"ldaps://{ad.unnamed_address}:636"
        assert _transport_problem(url, config, raised.value) == (
            f"{url}: the DC's certificate is for {DC_NAME}, {ad.address}, not "
            f"{ad.unnamed_address}: use the name the certificate has in directory.urls "
            f"(ldaps://{DC_NAME}:636)")


def test_an_untrusted_certificate_says_why_in_ssls_words_only(ad):
    table = {"urls": [ad.ldaps_url], "user": "CORP\\reader", "auth": "simple",
             "password_env": ENV}
    with pytest.raises(DirectoryError) as raised:
        Directory(parse_directory(table, {ENV: PASSWORD})).connect()
    assert str(raised.value) == (
        f"{ad.ldaps_url}: the DC's TLS certificate is not trusted (unable to get local issuer "
        "certificate): set directory.ca_file to the CA that issued the DC's certificate")


# --- one Samba per run --------------------------------------------------------------------------

def test_each_run_gets_loopback_addresses_of_its_own():
    seen: dict[str, int] = {}
    for pid in [*range(2, 70_000), *range((1 << 22) - 2_000, 1 << 22)]:
        address, unnamed = loopback_addresses(pid)
        assert address not in seen, (pid, seen.get(address))
        seen[address] = pid
        assert address != "127.0.0.1" and unnamed != address
        assert address.startswith("127.") and unnamed.startswith("127.")
        assert all(0 <= int(part) <= 255 for part in unnamed.split("."))
    assert loopback_addresses(4242, attempt=1) != loopback_addresses(4242)
