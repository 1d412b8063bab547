"""SubmitWatch's own Kerberos ticket: one identity ([kerberos]) for every Kerberos connection,
WinRM (bot.sources.winrm) and LDAP (bot.directory) alike.

The ticket-granting ticket lives in a credential cache private to this process
(`MEMORY:submitwatch-<pid>`, which nothing else can read and which ends with the process), never
in a shared one such as /tmp/krb5cc_<uid>. KRB5CCNAME points every library of the process at it
(pywinrm's Kerberos transport, GSSAPI for LDAP).

- With a keytab (`kerberos.keytab`: `LoadCredential=` under systemd), MIT Kerberos fetches the
  ticket from it when first needed and again whenever it has expired (KRB5_CLIENT_KTNAME).
- With a password (`kerberos.password_env`), `ensure` gets the ticket in the process
  (gss_acquire_cred_with_password) and again before it expires: `renew_before` ahead.

Errors are said in words a Windows admin knows (`in_words`): no KDC, clocks apart, no SPN for
the service, wrong password or keytab, an expired ticket.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from bot.core.config import KerberosConfig

log = logging.getLogger("submitwatch")

#: Get a new ticket this long before the current one ends (a poll must never start with a
#: ticket that expires during it).
RENEW_BEFORE = 600.0


class KerberosError(Exception):
    """Getting SubmitWatch's ticket failed; the message says why and what to do."""


@dataclass(frozen=True)
class Ticket:
    principal: str
    lifetime: float          # seconds left
    source: str              # "keytab /path" or "password"


class Login:
    """The process's Kerberos login; `ensure` before each connection. Thread-safe."""

    def __init__(self, config: KerberosConfig, renew_before: float = RENEW_BEFORE,
                 ccache: str | None = None):
        self.config = config
        self.renew_before = renew_before
        self.ccache = ccache or f"MEMORY:submitwatch-{os.getpid()}"
        self._lock = threading.Lock()

    def ensure(self, url: str | None = None) -> Ticket:
        """A ticket with more than `renew_before` left, in this process's cache; KerberosError
        in words when there is none to be had (`url`: the server it is for, whose clock the
        words give when the clocks are apart)."""
        import gssapi
        with self._lock:
            self._environment()
            try:
                creds = self._cached()
                if creds is None or creds.lifetime < self.renew_before:
                    creds = self._acquire()
                    log.info("Kerberos: a ticket for %s from its %s, valid %d minutes",
                             self.config.principal, self._source(), (creds.lifetime or 0) // 60)
                return Ticket(self.config.principal, float(creds.lifetime or 0), self._source())
            except gssapi.exceptions.GSSError as exc:
                raise KerberosError(in_words(str(exc), self.config, host=url)) from None

    def _environment(self) -> None:
        if self.config.krb5_conf:
            os.environ["KRB5_CONFIG"] = self.config.krb5_conf
        os.environ["KRB5CCNAME"] = self.ccache
        if self.config.keytab:
            os.environ["KRB5_CLIENT_KTNAME"] = f"FILE:{self.config.keytab}"
        else:   # no ticket from a keytab behind the password's back
            os.environ.pop("KRB5_CLIENT_KTNAME", None)

    def _name(self):
        import gssapi
        return gssapi.Name(self.config.principal, gssapi.NameType.kerberos_principal)

    def _cached(self):
        """The ticket in the cache, if any is there and still valid."""
        import gssapi
        try:
            creds = gssapi.Credentials(name=self._name(), usage="initiate",
                                       store={"ccache": self.ccache})
            return creds if creds.lifetime else None
        except gssapi.exceptions.GSSError:
            return None    # nothing cached yet, or expired

    def _acquire(self):
        import gssapi
        import gssapi.raw
        if self.config.keytab:
            store = {"ccache": self.ccache, "client_keytab": f"FILE:{self.config.keytab}"}
            creds = gssapi.Credentials(name=self._name(), usage="initiate", store=store)
            # Asking for the lifetime makes MIT get the ticket now, so a bad keytab fails here.
            if not creds.lifetime:
                raise KerberosError(f"the keytab {self.config.keytab} gave no ticket for "
                                    f"{self.config.principal}")
            return creds
        password = self.config.password
        if password is None:
            raise KerberosError(f"{self.config.password_env} is not set: the password of "
                                f"{self.config.principal} ([kerberos].password_env)")
        acquired = gssapi.raw.acquire_cred_with_password(
            self._name(), password.reveal().encode("utf-8"), usage="initiate")
        gssapi.raw.store_cred_into({"ccache": self.ccache}, acquired.creds, usage="initiate",
                                   overwrite=True, set_default=True)
        return gssapi.Credentials(acquired.creds)

    def _source(self) -> str:
        return f"keytab {self.config.keytab}" if self.config.keytab else "password"


_logins: dict[tuple, Login] = {}
_logins_lock = threading.Lock()


def login_for(config: KerberosConfig) -> Login:
    """The process's one Login for this identity (every connection shares its ticket)."""
    key = (config.principal, config.keytab, config.password_env, config.krb5_conf)
    with _logins_lock:
        login = _logins.get(key)
        if login is None:
            login = _logins[key] = Login(config)
        return login


def in_words(text: str, config: KerberosConfig | None = None, *, service: str | None = None,
             host: str | None = None) -> str:
    """A GSSAPI or Kerberos error (its message text, which names the KDC's error) in words a
    Windows admin acts on. `service`: the SPN asked for (HTTP/ex01.contoso.com)."""
    principal = config.principal if config else "SubmitWatch's principal"
    realm = config.realm if config else "the realm"
    conf = (config.krb5_conf if config and config.krb5_conf else None) or os.environ.get(
        "KRB5_CONFIG", "/etc/krb5.conf")
    lowered = text.lower()
    if "cannot contact any kdc" in lowered or "cannot find kdc" in lowered:
        return (f"no KDC of realm {realm} answered (Kerberos, port 88): check the realm's kdc "
                f"lines in {conf} (or DNS SRV records _kerberos._tcp.{realm.lower()}) and that "
                "this machine may reach a domain controller on port 88")
    if "clock skew too great" in lowered:
        return ("the clocks are more than 5 minutes apart (Kerberos refuses a ticket then): "
                f"this machine's clock and the domain's must agree. {clocks(host)}. Sync this "
                "machine with the domain's time (chrony or systemd-timesyncd against a domain "
                "controller)")
    if "server not found in kerberos database" in lowered:
        spn = service or "HTTP/<server's DNS name>"
        return (f"the domain has no service principal {spn}: no account holds that SPN, so no "
                f"ticket can be issued for it. `setspn -Q {spn}` shows who has it. A server's "
                "own DNS name is served by its computer account (Active Directory maps HTTP/ to "
                "its HOST/ SPNs, `setspn -L <server>`); an alias or a load balancer's name needs "
                "an SPN of its own (`setspn -S HTTP/<name> <account>`). Use the server's own "
                "name in the url")
    if "preauthentication failed" in lowered or "password incorrect" in lowered:
        return (f"the KDC refused {principal}'s key: the password is wrong, or the keytab was "
                "exported before the password last changed (export it again)")
    if "not found in kerberos database" in lowered:   # the client's own principal
        return (f"the domain has no account {principal}: check [kerberos].principal (the "
                "account's userPrincipalName or sAMAccountName@REALM)")
    if "no suitable keys" in lowered or "no key table entry" in lowered \
            or "key table entry not found" in lowered:
        return (f"the keytab holds no key of {principal}: `klist -k <keytab>` lists whose keys it "
                "holds; export it again for this principal")
    if "revoked" in lowered:
        return f"the KDC says {principal} is disabled, locked out or expired"
    if "ticket expired" in lowered:
        return ("the ticket expired (it is renewed before it ends; this one ended sooner: a "
                "clock step, or a short ticket lifetime in the domain's policy)")
    if "no kerberos credentials" in lowered or "no credentials cache" in lowered \
            or "no credentials were supplied" in lowered:
        if config is not None and config.keytab:
            return (f"the keytab {config.keytab} gave no ticket for {principal}: it may hold no "
                    f"key of {principal} (`klist -k {config.keytab}` lists whose keys it "
                    "holds; export it again for this principal)")
        return (f"there is no ticket for {principal}: give [kerberos] a keytab or a "
                "password_env")
    return f"Kerberos failed: {text.strip()[:300]}"


def clocks(url: str | None) -> str:
    """Both clocks, this machine's and the server's (from its HTTP Date header), when the
    server answers."""
    from datetime import UTC, datetime
    mine = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    theirs = server_clock(url) if url else None
    if theirs is None:
        return f"This machine says {mine}"
    return f"This machine says {mine}, the server says {theirs}"


def server_clock(url_or_host: str) -> str | None:
    """The time a web server's Date header gives (an unauthenticated request, answered 401 by
    WinRM), or None when it does not answer."""
    import email.utils
    import urllib.error
    import urllib.request
    url = url_or_host if "://" in url_or_host else f"http://{url_or_host}:5985/wsman"
    request = urllib.request.Request(url, method="POST", data=b"")
    # Straight to the server: no proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=3) as answer:
            date = answer.headers.get("Date")
    except urllib.error.HTTPError as exc:
        date = exc.headers.get("Date")
    except OSError:
        return None
    if not date:
        return None
    try:
        return email.utils.parsedate_to_datetime(date).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError):
        return None
