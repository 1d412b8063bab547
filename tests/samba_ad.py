"""A real Active Directory for the tests: Samba's AD domain controller, provisioned into a temporary
directory and serving LDAP on a loopback address of its own (127.a.b.c, picked per run from the
process id: see loopback_addresses), with an Exchange-shaped configuration partition. Two test
runs on one machine each get their own Samba on their own address; tests reach it through the
fixture's `ldap_url` / `ldaps_url`, never a fixed address.

Provisioned once per test session (5-9 s with its setup), then each test adds the connectors,
users, groups and ACEs it needs. Two independent writers are used on purpose, so that what
bot/directory/reader.py and bot/directory/secdesc.py read was never written by our own code:
- LDAP (ldap3, as Administrator, over LDAPS with a test CA) for the schema, the tree, users and
  groups;
- Samba's own tools on the database file for security descriptors: `samba-tool dsacl set` to add
  one ACE, `ldbmodify` with an SDDL value to replace the explicit ACEs (Samba parses SDDL and
  recomputes inherited ACEs itself). The running server sees those writes at once (one ldb,
  file-locked).

Needs the Debian packages samba, samba-ad-dc, samba-ad-provision and ldb-tools (.ci/debian-packages
installs them), and root, as Samba's LDAP ports (389, 636, 3268, 3269) are fixed (hence one
address per run rather than one port per run).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import ldap3
from ldap3.protocol.microsoft import security_descriptor_control

from tests.tls import TestPKI, make_pki

PACKAGES = "samba samba-ad-dc samba-ad-provision ldb-tools"
REALM = "CORP.TEST"
DOMAIN = "CORP"
BASE_DN = "DC=corp,DC=test"
CONFIG_DN = f"CN=Configuration,{BASE_DN}"
SCHEMA_DN = f"CN=Schema,{CONFIG_DN}"
ORG = "Corp Org"
ADMIN_GROUP = "Exchange Administrative Group (FYDIBOHF23SPDLT)"
EXCHANGE_DN = f"CN=Microsoft Exchange,CN=Services,{CONFIG_DN}"
SERVERS_DN = f"CN=Servers,CN={ADMIN_GROUP},CN=Administrative Groups,CN={ORG},{EXCHANGE_DN}"
ADMIN_PASSWORD = "Adm1n-Pass-Test!"
PASSWORD = "Us3r-Pass-Test!"  # every test user's password (Samba's complexity rules apply)
HOST_NAME = "dc1"
DC_NAME = f"{HOST_NAME}.{REALM.lower()}"   # the DC's name, which its certificate also holds

SUBMIT = "a18293f1-0685-4540-aa63-e32df421b3a2"  # ms-Exch-SMTP-Submit (Exchange's rights GUID)
# Exchange's other extended rights the permission groups carry (ms-Exch-SMTP-*), by rightsGuid.
ACCEPT_ANY_RECIPIENT = "5c82f031-4e4c-4326-88e1-8c4f0cad9de5"
ACCEPT_ANY_SENDER = "b857b50b-94a2-4b53-93f6-41cebd2fced0"
ACCEPT_AUTHORITATIVE_DOMAIN_SENDER = "c22841f4-96cb-498a-ac02-f9a87c74eb14"
BYPASS_ANTI_SPAM = "d19299b4-86c2-4c9a-8fa7-acb70c63023a"
ACCEPT_ROUTING_HEADERS = "04031f4f-7c36-43ea-9b49-4bd0f5f1e6af"
AUTHENTICATED_USERS = "S-1-5-11"
ANONYMOUS_LOGON = "S-1-5-7"
THIS_ORGANIZATION = "S-1-5-15"
#: MS Exchange\Hub Transport Servers and Edge Transport Servers: fixed SIDs, the same in every
#: forest, that the ExchangeServers permission group names besides <Domain>\Exchange Servers.
HUB_TRANSPORT_SERVERS = "S-1-9-1419165041-1139599005-3936102811-1022490595-21"
EDGE_TRANSPORT_SERVERS = "S-1-9-1419165041-1139599005-3936102811-1022490595-22"

#: The permission groups' rights (DOMAIN.md 6): AnonymousUsers for ANONYMOUS LOGON, ExchangeUsers
#: for Authenticated Users. ExchangeServers and ExchangeLegacyServers carry about 19 rights on a
#: real server; these tests give them the six whose GUIDs they know (Submit among them).
ANONYMOUS_USERS_RIGHTS = (SUBMIT, ACCEPT_ANY_SENDER, ACCEPT_AUTHORITATIVE_DOMAIN_SENDER,
                          ACCEPT_ROUTING_HEADERS)
EXCHANGE_USERS_RIGHTS = (SUBMIT, ACCEPT_ANY_RECIPIENT, BYPASS_ANTI_SPAM, ACCEPT_ROUTING_HEADERS)
EXCHANGE_SERVERS_RIGHTS = (SUBMIT, ACCEPT_ANY_RECIPIENT, ACCEPT_ANY_SENDER,
                           ACCEPT_AUTHORITATIVE_DOMAIN_SENDER, BYPASS_ANTI_SPAM,
                           ACCEPT_ROUTING_HEADERS)

# The schema extension. PRIVATE TEST OIDs, not Microsoft's: they sit under 1.3.6.1.4.1.32473, the
# enterprise number RFC 5612 reserves for documentation and examples, so they can never collide
# with a real schema. Only the lDAPDisplayNames (what the reader asks for) are Exchange's.
_OID = "1.3.6.1.4.1.32473.14"
#: (lDAPDisplayName, attributeSyntax, oMSyntax, single-valued): Unicode string, integer, boolean.
ATTRIBUTES = (
    ("msExchSmtpReceiveBindings", "2.5.5.12", 64, False),
    ("msExchSmtpReceiveRemoteIPRanges", "2.5.5.12", 64, False),
    ("msExchSMTPReceiveInboundSecurityFlag", "2.5.5.9", 2, True),
    ("msExchSmtpReceiveRole", "2.5.5.9", 2, True),
    ("msExchSmtpReceiveEnabled", "2.5.5.8", 1, True),
    ("msExchSMTPReceiveConnectorFQDN", "2.5.5.12", 64, True),
    ("msExchSmtpReceiveProtocolLoggingLevel", "2.5.5.9", 2, True),
)
CONNECTOR_CLASS = "msExchSmtpReceiveConnector"

# Exchange's values (ReceiveConnector.cs, AuthMechanisms.cs, ServerRole.cs).
FRONTEND_TRANSPORT, HUB_TRANSPORT = 16384, 32
TLS, INTEGRATED, BASIC_AUTH, BASIC_AUTH_REQUIRE_TLS, EXCHANGE_SERVER = 1, 2, 4, 8, 16


class SambaUnavailable(RuntimeError):
    """Samba cannot run here: the message says what to install or change."""


@dataclass(frozen=True)
class TestUser:
    name: str          # sAMAccountName
    dn: str
    sid: str
    password: str = PASSWORD

    @property
    def upn(self) -> str:
        return f"{self.name}@{REALM.lower()}"

    @property
    def rid(self) -> int:
        return int(self.sid.rsplit("-", 1)[1])


@dataclass(frozen=True)
class TestGroup:
    name: str
    dn: str
    sid: str


def submit_ace(who: str, deny: bool = False) -> str:
    """An ms-Exch-SMTP-Submit ACE in SDDL for a SID or SDDL alias (AU, AN), as
    `Add-ADPermission -ExtendedRights ms-Exch-SMTP-Submit [-Deny]` writes it."""
    return f"(O{'D' if deny else 'A'};;CR;{SUBMIT};;{who})"


def rights_aces(who: str, rights: Iterable[str]) -> list[str]:
    """One allow ACE per extended right for a SID, as Exchange writes a permission group."""
    return [f"(OA;;CR;{right};;{who})" for right in rights]


def anonymous_users_aces() -> list[str]:
    """The AnonymousUsers permission group's entries: ANONYMOUS LOGON's four rights."""
    return rights_aces(ANONYMOUS_LOGON, ANONYMOUS_USERS_RIGHTS)


def exchange_users_aces() -> list[str]:
    """The ExchangeUsers permission group's entries: Authenticated Users' four rights."""
    return rights_aces(AUTHENTICATED_USERS, EXCHANGE_USERS_RIGHTS)


@dataclass
class SambaAD:
    root: Path
    pki: TestPKI
    process: subprocess.Popen
    domain_sid: str = ""
    #: The loopback address this run's Samba serves on, which its certificate names, and a
    #: second one it also serves on that the certificate does not name (for the tests of a
    #: URL whose host the certificate lacks).
    address: str = "127.0.0.1"
    unnamed_address: str = ""
    admin: ldap3.Connection = field(init=False, repr=False)
    users: dict[str, TestUser] = field(default_factory=dict)
    groups: dict[str, TestGroup] = field(default_factory=dict)
    servers: dict[str, str] = field(default_factory=dict)  # name -> DN of its CN=Protocols
    #: Seconds taken by provisioning, starting, and all of the session's setup.
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "smb.conf"

    @property
    def sam(self) -> Path:
        return self.root / "private" / "sam.ldb"

    @property
    def ca_file(self) -> Path:
        return self.pki.ca_file

    @property
    def administrator(self) -> TestUser:
        return self.users["Administrator"]

    @property
    def ldap_url(self) -> str:
        return f"ldap://{self.address}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://{self.address}"

    # --- LDAP as Administrator --------------------------------------------------------------

    def connect_admin(self) -> None:
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(self.pki.ca_file))
        server = ldap3.Server(self.ldaps_url, use_ssl=True, tls=tls, get_info=ldap3.NONE,
                              connect_timeout=5)
        self.admin = ldap3.Connection(server, user=f"CN=Administrator,CN=Users,{BASE_DN}",
                                      password=ADMIN_PASSWORD, authentication=ldap3.SIMPLE,
                                      auto_bind=True, check_names=False, raise_exceptions=False,
                                      receive_timeout=10)

    def _ok(self, done: bool, what: str) -> None:
        if not done and self.admin.result["description"] != "entryAlreadyExists":
            raise AssertionError(f"Samba refused to {what}: {self.admin.result['description']} "
                                 f"{self.admin.result['message']}")

    def add(self, dn: str, object_class: str | list[str], **attributes) -> str:
        self._ok(self.admin.add(dn, object_class, attributes or None), f"add {dn}")
        return dn

    def modify(self, dn: str, **replace) -> None:
        changes = {name: [(ldap3.MODIFY_REPLACE, value if isinstance(value, list) else [value])]
                   for name, value in replace.items()}
        self._ok(self.admin.modify(dn, changes), f"modify {dn}")

    def delete(self, dn: str) -> None:
        self._ok(self.admin.delete(dn), f"delete {dn}")

    def sid_of(self, dn: str) -> str:
        from bot.directory.secdesc import sid_from_bytes
        self.admin.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["objectSid"])
        return sid_from_bytes(self.admin.response[0]["raw_attributes"]["objectSid"][0])[0]

    def descriptor(self, dn: str, sdflags: int = 0x04) -> bytes:
        """The object's nTSecurityDescriptor as Samba sends it (DACL only by default)."""
        self.admin.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["nTSecurityDescriptor"],
                          controls=security_descriptor_control(sdflags=sdflags))
        return self.admin.response[0]["raw_attributes"]["nTSecurityDescriptor"][0]

    # --- the domain ---------------------------------------------------------------------------

    def add_user(self, name: str, password: str = PASSWORD, groups: Iterable[str] = (),
                 disabled: bool = False) -> TestUser:
        dn = f"CN={name},CN=Users,{BASE_DN}"
        # unicodePwd is the quoted password in UTF-16-LE, and Samba takes it only over TLS.
        self.add(dn, "user", sAMAccountName=name, userPrincipalName=f"{name}@{REALM.lower()}",
                 unicodePwd=f'"{password}"'.encode("utf-16-le"),
                 userAccountControl=str(512 | (2 if disabled else 0)))
        user = self.users[name] = TestUser(name, dn, self.sid_of(dn), password)
        for group in groups:
            self.add_member(group, dn)
        return user

    def add_computer(self, name: str) -> TestUser:
        """A computer account NAME$ in CN=Computers (a workstation trust account: a user
        object of class computer, as joining a machine to the domain makes one)."""
        dn = f"CN={name},CN=Computers,{BASE_DN}"
        self.add(dn, "computer", sAMAccountName=f"{name}$",
                 unicodePwd=f'"{PASSWORD}"'.encode("utf-16-le"), userAccountControl="4096")
        computer = self.users[f"{name}$"] = TestUser(f"{name}$", dn, self.sid_of(dn))
        return computer

    def set_sid_history(self, dn: str, sids: Iterable[str]) -> None:
        """Give the account these sIDHistory SIDs, as a domain migration (ADMT) leaves them.
        Samba refuses it over LDAP ("sidHistory ... cannot be created or changed over LDAP!",
        relax control or not: only DsAddSidHistory may, as on Windows); ldbmodify on the
        database file writes it as the system would."""
        values = "".join(f"sIDHistory: {sid}\n" for sid in sids)
        self._run("ldbmodify", "-H", str(self.sam), input=(
            f"dn: {dn}\nchangetype: modify\nreplace: sIDHistory\n{values}"))

    def add_group(self, name: str, members: Iterable[str] = ()) -> TestGroup:
        dn = f"CN={name},CN=Users,{BASE_DN}"
        self.add(dn, "group", sAMAccountName=name)
        group = self.groups[name] = TestGroup(name, dn, self.sid_of(dn))
        for member in members:
            self.add_member(name, member)
        return group

    def add_member(self, group: str, member_dn: str) -> None:
        self._ok(self.admin.modify(self.groups[group].dn,
                                   {"member": [(ldap3.MODIFY_ADD, [member_dn])]}),
                 f"add {member_dn} to {group}")

    # --- the Exchange configuration -----------------------------------------------------------

    def extend_schema(self) -> None:
        for n, (name, syntax, om_syntax, single) in enumerate(ATTRIBUTES, 1):
            self.add(f"CN={name},{SCHEMA_DN}", "attributeSchema", attributeID=f"{_OID}.1.{n}",
                     lDAPDisplayName=name, adminDisplayName=name, attributeSyntax=syntax,
                     oMSyntax=om_syntax, isSingleValued="TRUE" if single else "FALSE")
        self._schema_update_now()  # the class may name the attributes only once they are loaded
        self.add(f"CN={CONNECTOR_CLASS},{SCHEMA_DN}", "classSchema",
                 governsID=f"{_OID}.2.1", lDAPDisplayName=CONNECTOR_CLASS,
                 adminDisplayName=CONNECTOR_CLASS, subClassOf="top", objectClassCategory="1",
                 rDNAttID="cn", possSuperiors=["container"],
                 mayContain=[name for name, *_ in ATTRIBUTES])
        self._schema_update_now()

    def _schema_update_now(self) -> None:
        self._ok(self.admin.modify("", {"schemaUpdateNow": [(ldap3.MODIFY_REPLACE, ["1"])]}),
                 "reload the schema")

    def add_server(self, name: str) -> str:
        """CN=<name>,CN=Servers,... with CN=Protocols and CN=SMTP Receive Connectors under it
        (all `container` objects: the real classes carry nothing the reader needs). The reader
        account gets the read-only delegation `check` recommends, on CN=Protocols: generic read
        (RP, LC, LO, RC), inherited by everything below; `noread` the same without READ_CONTROL,
        so it sees connectors but not their security descriptors."""
        dn = SERVERS_DN
        for rdn in (f"CN={name}", "CN=Protocols", "CN=SMTP Receive Connectors"):
            dn = self.add(f"{rdn},{dn}", "container")
        protocols = self.servers[name] = f"CN=Protocols,CN={name},{SERVERS_DN}"
        self.set_aces(protocols, [f"(A;CI;RPLCLORC;;;{self.users['reader'].sid})",
                                  f"(A;CI;RPLCLO;;;{self.users['noread'].sid})"])
        return protocols

    def add_connector(self, server: str, name: str, *, aces: Iterable[str] = (),
                      bindings: Iterable[str] = ("0.0.0.0:587", "[::]:587"),
                      remote_ip_ranges: Iterable[str] = ("::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                                                         "0.0.0.0-255.255.255.255"),
                      role: int | None = FRONTEND_TRANSPORT,
                      security_flags: int | None = TLS | BASIC_AUTH | BASIC_AUTH_REQUIRE_TLS
                      | INTEGRATED, enabled: bool | None = True, fqdn: str | None = None) -> str:
        """A Receive connector under the server (added with add_server first), with these
        explicit ACEs (SDDL) on top of what it inherits; None leaves an attribute unset."""
        values: dict[str, object] = {
            "msExchSmtpReceiveBindings": list(bindings),
            "msExchSmtpReceiveRemoteIPRanges": list(remote_ip_ranges),
            "msExchSmtpReceiveRole": None if role is None else str(role),
            "msExchSMTPReceiveInboundSecurityFlag":
                None if security_flags is None else str(security_flags),
            "msExchSmtpReceiveEnabled": None if enabled is None else ("TRUE" if enabled
                                                                      else "FALSE"),
            "msExchSMTPReceiveConnectorFQDN": fqdn or f"{server.lower()}.{REALM.lower()}",
        }
        dn = f"CN={name},CN=SMTP Receive Connectors,{self.servers[server]}"
        self.add(dn, CONNECTOR_CLASS, **{k: v for k, v in values.items() if v not in (None, [])})
        aces = list(aces)
        if aces:
            self.set_aces(dn, aces)
        return dn

    # --- security descriptors, written by Samba's own SDDL parser -----------------------------

    def sddl(self, dn: str) -> str:
        """The object's security descriptor in SDDL, as Samba prints it."""
        out = self._run("ldbsearch", "-H", str(self.sam), "-b", dn, "-s", "base",
                        "nTSecurityDescriptor")
        value = re.search(r"^nTSecurityDescriptor: (.*(?:\n .*)*)", out, re.M)
        if not value:
            raise AssertionError(f"no nTSecurityDescriptor for {dn}: {out}")
        return value.group(1).replace("\n ", "")

    def add_ace(self, dn: str, ace: str) -> None:
        """Add one ACE, as an admin would with `samba-tool dsacl set` (Samba places it)."""
        self._run("samba-tool", "dsacl", "set", "-s", str(self.conf), "-H", str(self.sam),
                  f"--objectdn={dn}", f"--sddl={ace}")

    def set_aces(self, dn: str, aces: Iterable[str]) -> None:
        """Replace the object's explicit ACEs by these, in this order (inherited ones stay)."""
        owner_group, _ = self.sddl(dn).split("D:", 1)
        self._ldbmodify(dn, f"{owner_group}D:{''.join(aces)}")

    def remove_ace(self, dn: str, ace: str) -> None:
        """Remove an explicit ACE, written as Samba prints it (see sddl())."""
        aces = self.explicit_aces(dn)
        if ace not in aces:
            raise AssertionError(f"{ace} is not an explicit ACE of {dn}: {aces}")
        aces.remove(ace)
        self.set_aces(dn, aces)

    def explicit_aces(self, dn: str) -> list[str]:
        dacl = self.sddl(dn).split("D:", 1)[1]
        aces = re.findall(r"\([^)]*\)", dacl)
        return [a for a in aces if "ID" not in a.split(";")[1]]  # ID: inherited

    def _ldbmodify(self, dn: str, sddl: str) -> None:
        ldif = (f"dn: {dn}\nchangetype: modify\nreplace: nTSecurityDescriptor\n"
                f"nTSecurityDescriptor: {sddl}\n")
        self._run("ldbmodify", "-H", str(self.sam), input=ldif)

    def _run(self, *command: str, input: str | None = None) -> str:
        done = subprocess.run(command, input=input, capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise AssertionError(f"{' '.join(command[:3])} failed ({done.returncode}): "
                                 f"{done.stderr.strip()[-2000:]}")
        return done.stdout

    # --- life cycle ---------------------------------------------------------------------------

    def log_tail(self, lines: int = 30) -> str:
        log = self.root / "samba.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def loopback_addresses(pid: int, attempt: int = 0) -> tuple[str, str]:
    """Two addresses in 127.0.0.0/8 for the run of process `pid`: 127.a.b.c, with a in 1..64
    (so never 127.0.0.1, which other test servers use), and 127.(a+64).b.c. Distinct pids
    (below 2**22, Linux's limit) give distinct addresses; `attempt` moves to other ones when
    something already listens there (a Samba left over by a killed run whose pid came back)."""
    n = (pid + attempt * 7919) % (1 << 22)
    a, b, c = 1 + (n >> 16), (n >> 8) & 0xFF, n & 0xFF
    return f"127.{a}.{b}.{c}", f"127.{a + 64}.{b}.{c}"


def _listening(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def pick_addresses(pid: int | None = None) -> tuple[str, str]:
    """This run's pair of loopback addresses (loopback_addresses) where nothing listens on
    Samba's LDAP ports yet."""
    pid = os.getpid() if pid is None else pid
    for attempt in range(20):
        pair = loopback_addresses(pid, attempt)
        if not any(_listening(address, port) for address in pair for port in (389, 636)):
            return pair
    raise SambaUnavailable(f"something listens on ports 389/636 of every loopback address "
                           f"tried for process {pid} (Samba servers left over by interrupted "
                           "runs?); stop them first")


def require_samba() -> None:
    """Raise SambaUnavailable, saying what to do, when Samba AD cannot run on this machine."""
    missing = [tool for tool in ("samba", "samba-tool", "ldbmodify", "ldbsearch")
               if shutil.which(tool) is None]
    if not Path("/usr/share/samba/setup").is_dir():
        missing.append("/usr/share/samba/setup")  # samba-ad-provision's templates
    if missing:
        raise SambaUnavailable(
            f"the directory tests need Samba's AD domain controller ({', '.join(missing)} not "
            f"found): install the Debian packages {PACKAGES} (`apt-get install {PACKAGES}`, "
            "or run `bash .ci/debian-packages` as root)")
    if os.geteuid() != 0:
        raise SambaUnavailable("the directory tests run Samba's LDAP server, whose ports (389, "
                               "636) are fixed below 1024: run them as root (CI does)")


def provision(root: Path) -> str:
    """`samba-tool domain provision` into root; returns the domain SID."""
    done = subprocess.run(
        ["samba-tool", "domain", "provision", f"--targetdir={root}", f"--realm={REALM}",
         f"--domain={DOMAIN}", "--server-role=dc", f"--adminpass={ADMIN_PASSWORD}",
         f"--host-name={HOST_NAME}", "--dns-backend=NONE"],  # no DNS: tests use addresses
        capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise SambaUnavailable(f"samba-tool domain provision failed: {done.stderr[-2000:]}")
    sid = re.search(r"DOMAIN SID:\s+(S-1-5-21-[\d-]+)", done.stdout + done.stderr)
    if not sid:
        raise SambaUnavailable(f"provisioning printed no domain SID: {done.stdout[-1000:]}")
    return sid.group(1)


def configure(root: Path, pki: TestPKI, addresses: Iterable[str]) -> None:
    """Edit the provisioned smb.conf: these loopback addresses only, LDAP and the KDC only, LDAP
    signing required as on a hardened DC (`ldap server require strong auth = yes`, Windows'
    "LDAP server signing requirements = Require signing": a SIMPLE bind without TLS and a SASL
    bind without signing or sealing are refused), schema updates allowed, our test CA's
    certificate, and pid and log files inside root (not /run or /var/log, so that nothing of
    this test DC lives outside its temporary directory).

    `interfaces = 127.a.b.c/8` with `bind interfaces only` makes Samba (4.17) listen on that
    address itself, although lo carries only 127.0.0.1/8: the /8 tells it which interface; a
    bare address would have to be one lo carries."""
    os.chmod(pki.key_file, 0o600)  # Samba refuses a TLS key others may read
    settings = {
        "interfaces": " ".join(f"{address}/8" for address in addresses),
        # kdc: Samba's own KDC issues the Kerberos tests' tickets (tests/kerberos_ad.py)
        "bind interfaces only": "yes", "server services": "ldap, cldap, kdc",
        "ldap server require strong auth": "yes", "dsdb:schema update allowed": "true",
        "tls enabled": "yes", "tls keyfile": str(pki.key_file),
        "tls certfile": str(pki.cert_file), "tls cafile": str(pki.ca_file),
        "pid directory": str(root / "run"), "log file": str(root / "samba.log"),
        "log level": "1",
    }
    (root / "run").mkdir(exist_ok=True)
    conf = root / "etc" / "smb.conf"
    lines = [line for line in conf.read_text().splitlines()
             if line.split("=")[0].strip().lower() not in settings]
    at = lines.index("[global]") + 1
    lines[at:at] = [f"\t{key} = {value}" for key, value in settings.items()]
    conf.write_text("\n".join(lines) + "\n")


def wait_for_ldap(ad: SambaAD, deadline: float) -> None:
    """Until the RootDSE answers over LDAP and LDAPS (the TLS keys load last)."""
    last: Exception | None = None
    while time.monotonic() < deadline:
        if ad.process.poll() is not None:
            raise SambaUnavailable(f"samba exited with {ad.process.returncode} while starting:\n"
                                   f"{ad.log_tail()}")
        try:
            ad.connect_admin()
            return
        except ldap3.core.exceptions.LDAPException as exc:
            last = exc
            time.sleep(0.05)
    raise SambaUnavailable(f"Samba's LDAP server did not answer within the deadline ({last}):\n"
                           f"{ad.log_tail()}")


@contextmanager
def running_samba(root: Path, servers: Iterable[str] = ("EX01", "EX02")) -> Iterator[SambaAD]:
    """A provisioned and started Samba AD with the schema extension, the Exchange tree for these
    servers, the `reader` account SubmitWatch binds as (read-only delegation on each server's
    CN=Protocols), `noread` (may see connectors, not their descriptors); stopped on exit."""
    require_samba()
    address, unnamed = pick_addresses()
    timings = {}
    started = time.monotonic()
    domain_sid = provision(root / "dc")
    timings["provision"] = time.monotonic() - started
    pki = make_pki(root, names=(DC_NAME, address))
    configure(root / "dc", pki, (address, unnamed))
    log = open(root / "samba.out", "wb")
    process = subprocess.Popen(["samba", "-i", "-M", "single", "-s",
                                str(root / "dc" / "etc" / "smb.conf")],
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    ad = SambaAD(root / "dc", pki, process, domain_sid, address=address,
                 unnamed_address=unnamed, timings=timings)
    try:
        wait_for_ldap(ad, time.monotonic() + 30)
        timings["start"] = time.monotonic() - started - timings["provision"]
        ad.users["Administrator"] = TestUser("Administrator", f"CN=Administrator,CN=Users,"
                                             f"{BASE_DN}", f"{domain_sid}-500", ADMIN_PASSWORD)
        ad.extend_schema()
        dn = f"CN=Services,{CONFIG_DN}"
        for rdn in ("CN=Microsoft Exchange", f"CN={ORG}", "CN=Administrative Groups",
                    f"CN={ADMIN_GROUP}", "CN=Servers"):
            dn = ad.add(f"{rdn},{dn}", "container")
        assert dn == SERVERS_DN
        ad.add_user("reader")
        ad.add_user("noread")
        for server in servers:
            ad.add_server(server)
        timings["setup"] = time.monotonic() - started
        yield ad
    finally:
        ad.stop()
        log.close()


def unique(prefix: str) -> str:
    """A fresh name, so tests sharing the session's directory never meet."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
