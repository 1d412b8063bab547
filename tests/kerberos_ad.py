"""Kerberos for the tests: Samba AD's own KDC (tests/samba_ad.py starts it with the DC) issues
real tickets to SubmitWatch's account for real services, on this run's loopback addresses.

`kerberos_realm(ad, root)` sets up, once per test session:
- the client: the user `svc-submitwatch` (password `CLIENT_PASSWORD`) and a keytab of its keys;
- the WinRM services: for each simulated server a service account `http-<name>` holding the SPN
  `HTTP/<name>-<tag>.corp.test` (AES keys only, as a joined Windows server has), all their keys
  in one keytab, the one the WinRM simulator's acceptor reads (KRB5_KTNAME);
- a krb5.conf naming this run's KDC (no DNS for KDCs or realms, no reverse DNS, host names not
  canonicalised: nothing outside loopback is asked);
- each service host name in /etc/hosts, pointing at 127.0.0.1, where the WinRM simulator listens.
  `<tag>` is this run's (from the process id), so two runs on one machine never share a name,
  and the lines carry the tag and are removed when the session ends. (Kerberos names the
  service by the URL's host name, which must resolve; the tests run as root already, for Samba.)
"""
from __future__ import annotations

import fcntl
import os
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.samba_ad import REALM, SambaAD

CLIENT = "svc-submitwatch"
CLIENT_PASSWORD = "Kerb-Cl1ent-Pass!"
HOSTS = Path("/etc/hosts")
#: AES256 and AES128 (msDS-SupportedEncryptionTypes), as a joined Windows Server's account has.
AES_ONLY = 0x18


@dataclass
class KerberosRealm:
    realm: str
    kdc: str                         # this run's KDC address
    tag: str                         # this run's mark in host names and /etc/hosts
    krb5_conf: Path
    service_keytab: Path
    client_keytab: Path
    client_principal: str
    client_password: str
    hosts: dict[str, str] = field(default_factory=dict)   # server name -> its service host

    def host_of(self, server: str) -> str:
        return self.hosts[server]

    def environ(self) -> dict[str, str]:
        """What a process needs to reach this KDC (the bot sets KRB5_CONFIG from its own
        configuration too; the simulator's acceptor reads KRB5_KTNAME)."""
        return {"KRB5_CONFIG": str(self.krb5_conf), "KRB5_KTNAME": f"FILE:{self.service_keytab}",
                # the acceptor's replay cache in memory, not in /var/tmp
                "KRB5RCACHETYPE": "none"}


def kerberos_realm(ad: SambaAD, root: Path, servers: Iterable[str], tag: str,
                   unregistered: Iterable[str] = ()) -> KerberosRealm:
    """`servers` get their HTTP/ service; `unregistered` only a host name (no account holds
    HTTP/ for it: the "no SPN" case)."""
    root.mkdir(parents=True, exist_ok=True)
    conf = root / "krb5.conf"
    conf.write_text(krb5_conf(ad.address))
    krb = KerberosRealm(REALM, ad.address, tag, conf, root / "http.keytab",
                        root / "client.keytab", f"{CLIENT}@{REALM}", CLIENT_PASSWORD)
    ad.add_user(CLIENT, CLIENT_PASSWORD)
    export_keytab(ad, krb.client_keytab, f"{CLIENT}@{REALM}")
    for server in servers:
        host = krb.hosts[server] = f"{server.lower()}-{tag}.{REALM.lower()}"
        add_service(ad, f"http-{server.lower()}", host)
        export_keytab(ad, krb.service_keytab, f"HTTP/{host}@{REALM}")
    for server in unregistered:
        krb.hosts[server] = f"{server.lower()}-{tag}.{REALM.lower()}"
    return krb


def krb5_conf(kdc: str, *, timesync: bool = True, lifetime: str | None = None) -> str:
    """A krb5.conf for this run's KDC. `timesync` off: a client clock over 5 minutes off is
    refused ("Clock skew too great") instead of being corrected from the KDC's answer."""
    extra = "" if timesync else "    kdc_timesync = 0\n"
    if lifetime:
        extra += f"    ticket_lifetime = {lifetime}\n"
    return (f"[libdefaults]\n    default_realm = {REALM}\n    dns_lookup_kdc = false\n"
            "    dns_lookup_realm = false\n    rdns = false\n"
            "    dns_canonicalize_hostname = false\n    udp_preference_limit = 0\n"
            f"    kdc_timeout = 3000\n    max_retries = 1\n{extra}"
            f"[realms]\n    {REALM} = {{\n        kdc = {kdc}:88\n    }}\n"
            f"[domain_realm]\n    .{REALM.lower()} = {REALM}\n    {REALM.lower()} = {REALM}\n")


def add_service(ad: SambaAD, account: str, host: str) -> None:
    """A service account holding HTTP/<host>, with AES keys only."""
    user = ad.add_user(account)
    _samba_tool(ad, "spn", "add", f"HTTP/{host}", account)
    ad.modify(user.dn, **{"msDS-SupportedEncryptionTypes": str(AES_ONLY)})


def export_keytab(ad: SambaAD, path: Path, principal: str) -> None:
    """Add the principal's keys to the keytab (exportkeytab appends to an existing file)."""
    _samba_tool(ad, "domain", "exportkeytab", str(path), f"--principal={principal}")
    if not path.exists() or not path.stat().st_size:
        raise AssertionError(f"samba-tool wrote no keys for {principal} into {path}")


def _samba_tool(ad: SambaAD, *args: str) -> str:
    done = subprocess.run(["samba-tool", *args, "-s", str(ad.conf)], capture_output=True,
                          text=True, timeout=60)
    if done.returncode:
        raise AssertionError(f"samba-tool {' '.join(args[:2])} failed: {done.stderr[-1500:]}")
    return done.stdout


@contextmanager
def hosts_entries(names: Iterable[str], tag: str, address: str = "127.0.0.1") -> Iterator[None]:
    """These names in /etc/hosts for the duration, each line marked with this run's tag; the
    file is rewritten under a lock, so two runs' edits never interleave."""
    mark = f"# submitwatch-tests {tag}"
    lines = [f"{address} {name} {mark}" for name in names]
    _edit_hosts(lambda text: text + ("" if text.endswith("\n") or not text else "\n")
                + "\n".join(lines) + "\n")
    try:
        yield
    finally:
        _edit_hosts(lambda text: "".join(line for line in text.splitlines(keepends=True)
                                         if not line.rstrip().endswith(mark)))


def _edit_hosts(change) -> None:
    with open(HOSTS.with_name(".hosts.submitwatch-tests.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        HOSTS.write_text(change(HOSTS.read_text()))


def run_tag(pid: int | None = None) -> str:
    """This run's tag: letters and digits only, a DNS label's and a file name's worth."""
    return f"r{pid or os.getpid()}"

