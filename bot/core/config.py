"""Load and check `submitwatch.toml`: strict, with errors that name the key and what is allowed.

Secrets never live in the file. They come from environment variables (or a file named by the
variable with `_FILE` appended, for Docker/systemd credentials) and are wrapped in `Secret` so a
stray log line or traceback shows `Secret('***')`, never the value.
"""
from __future__ import annotations

import importlib.util
import ipaddress
import math
import os
import re
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bot.core.model import Event, Incident

DEFAULT_CONFIG_NAME = "submitwatch.toml"
SLACK_API_URL = "https://slack.com/api/"
TRANSPORTS = ("ntlm", "kerberos", "credssp", "ssl", "basic", "certificate")
MODES = ("socket", "http")
#: Transports whose support pywinrm leaves to optional packages: (modules, what to install).
TRANSPORT_PACKAGES = {"kerberos": (("kerberos", "winkerberos"), "submitwatch[kerberos]"),
                      "credssp": (("requests_credssp",), "pywinrm[credssp]")}
SECRET_ENV = {
    "bot_token": "SLACK_BOT_TOKEN",
    "app_token": "SLACK_APP_TOKEN",
    "signing_secret": "SLACK_SIGNING_SECRET",
}
_SECRET_WORDS = ("token", "password", "secret")
#: Every key the file may hold, per table (docs/configuration.md's reference is checked against
#: this).
KEYS = {
    "slack": {"channel", "api_url", "mode", "http_host", "http_port", "public_url"},
    "store": {"path", "retention"},
    "polling": {"interval", "jitter", "lookback", "batch_size", "operation_timeout",
                "read_timeout", "delivery_interval", "alert_after_failures", "max_output"},
    "incidents": {"quiet_period", "update_interval", "reminder_after", "reminder_interval",
                  "storm_threshold", "storm_window", "confirm_after"},
    "permissions": {"users", "groups", "channels", "group_cache"},
    "metrics": {"host", "port"},
    "otlp": {"host", "port", "token_env", "max_body", "unconfigured_origins", "tls_cert",
             "tls_key", "client_ca"},
    "logging": {"format"},
    # [kerberos]: the one identity every Kerberos connection uses (bot.core.kerberos).
    "kerberos": {"principal", "keytab", "password_env", "krb5_conf", "allow_ntlm"},
    "routes": {"name", "accounts", "servers", "events", "channel", "owners"},
    "summary": {"every", "at", "weekday", "channel"},
    "devices": {"enabled", "reverse_dns", "max_bytes", "max_seconds"},
    # [directory]: parse_directory below.
    "directory": {"urls", "user", "password_env", "auth", "allow_insecure_simple", "verify_tls",
                  "ca_file", "connect_timeout", "read_timeout"},
    "servers": {"name", "url", "username", "transport", "password_env", "validate_certificate",
                "ca_bundle", "cert_pem", "cert_key_pem", "channel", "submission_connector",
                "version", "role", "log", "frontend_protocol_log", "hub_protocol_log"},
    # [[collectors]]: a Windows Event Collector's WinRM endpoint (the keys a server's WinRM
    # settings take), the subscription it holds, and what to do with the origins it reports.
    "collectors": {"name", "url", "username", "transport", "password_env",
                   "validate_certificate", "ca_bundle", "cert_pem", "cert_key_pem",
                   "subscription", "unconfigured_origins", "heartbeat_timeout"},
}
#: What a collector does with an origin that is no configured server (`unconfigured_origins`).
UNCONFIGURED_ORIGINS = ("own_name", "ignore")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_SIZE = re.compile(r"(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?")
_SIZE_UNITS = {None: 1, "b": 1, "kb": 1024, "kib": 1024, "mb": 1024**2, "mib": 1024**2,
               "gb": 1024**3, "gib": 1024**3}
#: Exchange versions `servers.version` takes (2007/2010 change how a 1020 is explained).
VERSIONS = ("2007", "2010", "2013", "2016", "2019", "SE")
#: Server roles `servers.role` takes: an Edge Transport server keeps its connectors in its own
#: AD LDS, so its advice runs there and no Active Directory check applies.
ROLES = ("Mailbox", "Edge")
_SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
#: Slack IDs as the permissions table takes them: users (U/W), user groups (S), channels (C/G).
_SLACK_IDS = {"users": (re.compile(r"[UW][A-Z0-9]{2,20}"), "user IDs such as 'U024BE7LH'"),
              "groups": (re.compile(r"S[A-Z0-9]{2,20}"), "user group IDs such as 'S0614TZR7'"),
              "channels": (re.compile(r"[CG][A-Z0-9]{2,20}"), "channel IDs such as 'C0ALERTS'")}


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which key and what is allowed."""


class Secret:
    """A secret value that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class SlackConfig:
    channel: str
    api_url: str = SLACK_API_URL
    mode: str = "socket"
    http_host: str = "127.0.0.1"
    http_port: int = 3000
    public_url: str | None = None    # HTTP mode: where Slack reaches us (`submitwatch manifest`)
    bot_token: Secret | None = None
    app_token: Secret | None = None
    signing_secret: Secret | None = None


@dataclass(frozen=True)
class StoreConfig:
    path: str = "submitwatch.db"
    retention: float = 180 * 86400.0


@dataclass(frozen=True)
class PollingConfig:
    interval: float = 60.0
    jitter: float = 5.0
    lookback: float = 24 * 3600.0
    batch_size: int = 500
    operation_timeout: float = 20.0
    read_timeout: float = 30.0
    delivery_interval: float = 2.0
    alert_after_failures: int = 3
    #: Bytes one query's output may take (500 events are about 1 MB in UTF-16): bounds memory.
    max_output: int = 4 * 1024 * 1024


@dataclass(frozen=True)
class IncidentConfig:
    quiet_period: float = 24 * 3600.0
    update_interval: float = 10.0
    reminder_after: float = 4 * 3600.0     # 0: no reminders
    reminder_interval: float = 24 * 3600.0
    storm_threshold: int = 5               # incidents per channel and window posted one by one
    storm_window: float = 600.0            # 0 threshold: never a digest
    confirm_after: float = 0.0             # quiet time that confirms a fix; 0: from its rate


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_CLOCK_TIME = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


@dataclass(frozen=True)
class SummaryConfig:
    """The scheduled summary post (bot.engine.summary): off unless `every` is "day" or "week"."""
    every: str | None = None        # "day" or "week"
    at: tuple[int, int] = (9, 0)    # hour, minute (UTC)
    weekday: int = 0                # for "week": 0 = Monday
    channel: str | None = None      # None: slack.channel


@dataclass(frozen=True)
class PermissionsConfig:
    """Who may change alerts from chat (ack, snooze), and where slash commands answer.

    No users and no groups: everyone in the workspace may act (the start-up log and `check` say
    so). No channels: commands answer anywhere the app is reachable.
    """
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    group_cache: float = 300.0   # seconds a group's members are remembered (0: ask each time)

    @property
    def open_to_everyone(self) -> bool:
        return not (self.users or self.groups)


@dataclass(frozen=True)
class ServerConfig:
    name: str
    url: str
    username: str = ""
    transport: str = "ntlm"
    password: Secret | None = field(default=None, compare=False)
    password_env: str = ""
    validate_certificate: bool = True
    ca_bundle: str | None = None
    cert_pem: str | None = None
    cert_key_pem: str | None = None
    channel: str | None = None
    submission_connector: str | None = None
    version: str | None = None
    role: str = "Mailbox"      # "Mailbox" (front end and hub) or "Edge" (Edge Transport)
    # The SMTP Receive protocol log folders (bot.engine.devices); None: the default under the
    # server's ExchangeInstallPath.
    frontend_protocol_log: str | None = None
    hub_protocol_log: str | None = None
    log: str = "Application"   # the event log read; every event in it is the server's own
    #: The identity transport "kerberos" signs in with ([kerberos]; set by parse_config).
    kerberos: KerberosConfig | None = field(default=None, compare=False, repr=False)

    @property
    def polled(self) -> bool:
        """SubmitWatch connects to it over WinRM (it has a url). Without one, its events come
        through a collector or OTLP, and nothing is read from the server itself."""
        return bool(self.url)


@dataclass(frozen=True)
class RouteConfig:
    """Where an incident's alert goes and who it names: the first route that matches its
    account (case-insensitive globs), server and event (1018 or 1020) wins."""

    name: str
    channel: str | None = None           # None: the server's channel, or slack.channel
    accounts: tuple[str, ...] = ("*",)
    servers: tuple[str, ...] = ()       # empty: any server
    events: tuple[int, ...] = ()        # empty: either event
    owners: tuple[str, ...] = ()        # Slack user IDs (U..., W...) and user group IDs (S...)

    def matches(self, account: str, server: str, event_id: int) -> bool:
        return (any(_glob(pattern).fullmatch(account.casefold()) for pattern in self.accounts)
                and (not self.servers or server.casefold() in
                     {s.casefold() for s in self.servers})
                and (not self.events or event_id in self.events))


@dataclass(frozen=True)
class DevicesConfig:
    """The device look-up in Exchange's SMTP Receive protocol log (bot.engine.devices)."""

    enabled: bool = True
    reverse_dns: bool = True          # name each address from the SubmitWatch host's resolver
    max_bytes: int = 16 * 1024 * 1024  # read from one server's log folder per look-up
    max_seconds: float = 20.0          # after this no further file is started


@dataclass(frozen=True)
class MetricsConfig:
    """The listener for /metrics, /healthz and /readyz; off while port is None."""

    host: str = "127.0.0.1"
    port: int | None = None


@dataclass(frozen=True)
class OtlpConfig:
    """The OTLP/HTTP logs receiver (bot.ops.otlp_receiver); off while port is None.

    Who may send: the bearer token (token_env), a client certificate issued by client_ca (mutual
    TLS), or both; every one that is configured is required."""

    host: str = "127.0.0.1"
    port: int | None = None
    token_env: str | None = None      # the variable holding the bearer token senders present
    token: Secret | None = field(default=None, repr=False)
    max_body: int = 4 * 1024 * 1024   # bytes, as sent and after decompression
    #: An event from a computer that is no configured server: "ignore" (dropped and counted)
    #: or "own_name" (taken under its own short name, as a collector's may be).
    unconfigured_origins: str = "ignore"
    tls_cert: str | None = None       # the listener's certificate chain (PEM): HTTPS when set
    tls_key: str | None = None        # its private key (PEM); None: the key is in tls_cert
    client_ca: str | None = None      # CA certificate(s) (PEM) a client certificate must chain to

    def tls_context(self) -> ssl.SSLContext | None:
        """The listener's TLS settings, files read now (None: plain HTTP). With client_ca, a
        client without a certificate issued by it fails the handshake, before any HTTP.
        Raises ConfigError naming the key and what is wrong with its file."""
        if self.tls_cert is None:
            return None
        cert_text = _pem_text(self.tls_cert, "otlp.tls_cert")
        if "-----BEGIN CERTIFICATE-----" not in cert_text:
            raise ConfigError(f"otlp.tls_cert {self.tls_cert} holds no PEM certificate "
                              "(-----BEGIN CERTIFICATE-----)")
        key_name, key_file = (("otlp.tls_key", self.tls_key) if self.tls_key is not None
                              else ("otlp.tls_cert", self.tls_cert))
        key_text = _pem_text(key_file, key_name) if self.tls_key is not None else cert_text
        if "ENCRYPTED" in key_text:
            raise ConfigError(f"{key_name} {key_file}: the private key is encrypted, and "
                              "SubmitWatch cannot ask for a passphrase; store it unencrypted, "
                              "readable only by the service's account")
        if not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", key_text):
            raise ConfigError(f"{key_name} {key_file} holds no PEM private key" + (
                "; name the key's file in otlp.tls_key" if self.tls_key is None else ""))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise ConfigError(f"{key_name} {key_file} is not the key of the certificate in "
                                  f"otlp.tls_cert {self.tls_cert}: name the key it was issued "
                                  "for") from None
            raise ConfigError(f"otlp.tls_cert {self.tls_cert} / {key_name} {key_file} cannot "
                              f"be used: {exc.reason or exc}") from None
        if self.client_ca is not None:
            if "-----BEGIN CERTIFICATE-----" not in _pem_text(self.client_ca, "otlp.client_ca"):
                raise ConfigError(f"otlp.client_ca {self.client_ca} holds no PEM certificate "
                                  "(-----BEGIN CERTIFICATE-----)")
            try:
                context.load_verify_locations(cafile=self.client_ca)
            except ssl.SSLError as exc:
                raise ConfigError(f"otlp.client_ca {self.client_ca} cannot be used: "
                                  f"{exc.reason or exc}") from None
            if not context.cert_store_stats()["x509_ca"]:
                raise ConfigError(f"otlp.client_ca {self.client_ca} holds no CA certificate "
                                  "(basicConstraints CA:TRUE): name the CA that issues the "
                                  "senders' certificates, not a sender's own certificate")
            context.verify_mode = ssl.CERT_REQUIRED
        return context


def _pem_text(path: str, name: str) -> str:
    try:
        return Path(path).read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise ConfigError(f"{name} {path} cannot be read: {exc.strerror or exc}") from None


def _otlp_config(otlp: Mapping[str, Any], environ: Mapping[str, str]) -> OtlpConfig:
    port = _int(otlp, "otlp.port", 0, low=1, high=65535) if "port" in otlp else None
    token_env = _str(otlp, "otlp.token_env")
    token = _secret(environ, token_env) if token_env else None
    tls_cert, tls_key = _str(otlp, "otlp.tls_cert"), _str(otlp, "otlp.tls_key")
    client_ca = _str(otlp, "otlp.client_ca")
    if tls_key is not None and tls_cert is None:
        raise ConfigError("otlp.tls_key is set without otlp.tls_cert: name the certificate "
                          "the key belongs to")
    if client_ca is not None and tls_cert is None:
        raise ConfigError("otlp.client_ca (mutual TLS) needs otlp.tls_cert and otlp.tls_key: "
                          "the receiver's own certificate, so that it speaks HTTPS")
    if port is not None and token_env and token is None:
        raise ConfigError(f"otlp.token_env: {token_env} is not set; set it to the bearer token "
                          "OTLP senders present (or remove otlp.token_env and authenticate "
                          "senders by client certificate alone, otlp.client_ca)")
    if port is not None and token is None and client_ca is None:
        raise ConfigError("otlp.token_env must name the environment variable holding the bearer "
                          "token OTLP senders present, or otlp.client_ca the CA whose client "
                          "certificates they present (mutual TLS): the receiver takes events "
                          "from authenticated senders only")
    config = OtlpConfig(host=_listen_address(otlp, "otlp.host", OtlpConfig.host), port=port,
                        token_env=token_env, token=token,
                        max_body=_size(otlp, "otlp.max_body", OtlpConfig.max_body,
                                       low=1024, high=256 * 1024**2),
                        unconfigured_origins=_choice(otlp, "otlp.unconfigured_origins",
                                                     UNCONFIGURED_ORIGINS, "ignore"),
                        tls_cert=tls_cert, tls_key=tls_key, client_ca=client_ca)
    if port is not None:
        config.tls_context()   # the files are read now: a bad one stops the start, in words
    return config


@dataclass(frozen=True)
class Config:
    slack: SlackConfig
    store: StoreConfig
    polling: PollingConfig
    incidents: IncidentConfig
    servers: tuple[ServerConfig, ...]
    source: str = "<memory>"
    permissions: PermissionsConfig = PermissionsConfig()
    metrics: MetricsConfig = MetricsConfig()
    log_format: str = "text"          # or "json": one object per line, for log shippers
    routes: tuple[RouteConfig, ...] = ()
    summary: SummaryConfig = SummaryConfig()
    directory: DirectoryConfig | None = None   # None: no directory checks (bot.directory.reader)
    devices: DevicesConfig = DevicesConfig()
    otlp: OtlpConfig = OtlpConfig()
    collectors: tuple[CollectorConfig, ...] = ()
    kerberos: KerberosConfig | None = None     # None: no [kerberos] table

    def route_for(self, account: str, server: str, event_id: int) -> RouteConfig:
        """The first [[routes]] entry that matches, else the server's channel (or
        slack.channel) with no owners."""
        for route in self.routes:
            if route.matches(account, server, event_id):
                return route if route.channel else replace(route, channel=self.channel_for(server))
        return RouteConfig("(no route)", self.channel_for(server))

    def route_of(self, incident: Incident) -> RouteConfig:
        """The route an incident takes: by its account and the event and server that opened it
        (its first sighting: the same facts that chose its channel)."""
        if incident.sightings:
            first = incident.sightings[0]
            return self.route_for(incident.account, first.server, first.event_id)
        server = incident.server_names[0] if incident.server_names else ""
        return self.route_for(incident.account, server, min(incident.event_ids, default=1018))

    def channel_of(self, event: Event) -> str:
        """The channel a new incident opened by `event` is posted to (its route's)."""
        return self.route_for(event.account, event.origin, event.event_id).channel or \
            self.channel_for(event.origin)

    def channel_for(self, server_name: str) -> str:
        for server in self.servers:
            if server.name == server_name and server.channel:
                return server.channel
        return self.slack.channel


def config_path(cli_value: str | None, environ: Mapping[str, str]) -> Path:
    """--config wins, then SUBMITWATCH_CONFIG, then ./submitwatch.toml."""
    return Path(cli_value or environ.get("SUBMITWATCH_CONFIG") or DEFAULT_CONFIG_NAME)


def load_config(path: str | os.PathLike, environ: Mapping[str, str] | None = None) -> Config:
    environ = os.environ if environ is None else environ
    path = Path(path)
    try:
        # utf-8-sig: Notepad, where many Exchange admins edit it, may save a byte-order mark.
        raw = tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (pass --config PATH or set "
                          "SUBMITWATCH_CONFIG; submitwatch.example.toml shows every key)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8: {_where(exc.object, exc.start)} has the byte "
                          f"0x{exc.object[exc.start]:02X}. Save it as UTF-8 (in Notepad: "
                          "Save As, Encoding UTF-8)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    return parse_config(raw, environ, source=str(path))


def _where(data: bytes, offset: int) -> str:
    """'line 3, column 7' of a byte offset (the column counted in bytes, from 1)."""
    newline = b"\n"
    line_start = data.rfind(newline, 0, offset) + 1
    return f"line {data.count(newline, 0, offset) + 1}, column {offset - line_start + 1}"


def parse_config(raw: Mapping[str, Any], environ: Mapping[str, str],
                 source: str = "<memory>") -> Config:
    """A Config from the file's tables; ConfigError names the key and what it allows."""
    _only(raw, "", set(KEYS))
    # Read in one fixed order, so a file with several mistakes is always told the same first.
    slack = _slack_config(_section(raw, "slack", required=True), environ)
    store = _store_config(_section(raw, "store"))
    polling = _polling_config(_section(raw, "polling"))
    incidents = _incident_config(_section(raw, "incidents"))
    permissions = _permissions_config(_section(raw, "permissions"))
    servers = _servers(raw, environ)
    metrics = _metrics_config(_section(raw, "metrics"))
    log_format = _choice(_section(raw, "logging"), "logging.format", ("text", "json"), "text")
    routes = _routes(raw, {s.name.casefold() for s in servers})
    summary = _summary_config(_section(raw, "summary"))
    directory = None
    if "directory" in raw:
        directory = parse_directory(_section(raw, "directory"), environ)
    devices = _devices_config(_section(raw, "devices"))
    otlp = _otlp_config(_section(raw, "otlp"), environ)
    collectors = _collectors(raw, environ, {s.name.casefold() for s in servers})
    kerberos = _kerberos_config(_section(raw, "kerberos"), environ) if "kerberos" in raw \
        else None
    _check_kerberos_use(kerberos, [*servers, *(c.endpoint for c in collectors)])
    directory = with_kerberos(directory, kerberos) if directory is not None else None
    if kerberos is not None:
        servers = tuple(replace(s, kerberos=kerberos) if s.transport == "kerberos" else s
                        for s in servers)
        collectors = tuple(replace(c, endpoint=replace(c.endpoint, kerberos=kerberos))
                           if c.endpoint.transport == "kerberos" else c for c in collectors)
    return Config(slack, store, polling, incidents, servers, source, permissions, metrics,
                  log_format, routes, summary, directory, devices, otlp, collectors, kerberos)


@dataclass(frozen=True)
class KerberosConfig:
    """SubmitWatch's own Kerberos identity (bot.core.kerberos): a principal and its keytab or
    password, turned into a ticket in a credential cache private to the process."""

    principal: str                            # svc-submitwatch@CONTOSO.COM
    keytab: str | None = None                 # a keytab file holding the principal's keys
    password_env: str | None = None           # or the variable holding its password
    password: Secret | None = field(default=None, repr=False)
    krb5_conf: str | None = None              # None: /etc/krb5.conf (or KRB5_CONFIG)
    allow_ntlm: bool = True                   # false: no server may use NTLM (nor CredSSP)

    @property
    def realm(self) -> str:
        return self.principal.rpartition("@")[2]


_PRINCIPAL = re.compile(r"[^@\s/\\]+(/[^@\s/\\]+)?@[A-Z0-9][A-Z0-9.-]*")
#: Transports that may authenticate with NTLM (CredSSP carries SPNEGO, which may end in NTLM).
NTLM_TRANSPORTS = ("ntlm", "credssp")


def _kerberos_config(table: Mapping[str, Any], environ: Mapping[str, str]) -> KerberosConfig:
    principal = _str(table, "kerberos.principal", required=True)
    if not _PRINCIPAL.fullmatch(principal):
        raise ConfigError("kerberos.principal must be a Kerberos principal with its realm in "
                          f"capitals, such as 'svc-submitwatch@CONTOSO.COM'; got {principal!r}")
    keytab = _str(table, "kerberos.keytab", None)
    password_env = _str(table, "kerberos.password_env", None)
    if (keytab is None) == (password_env is None):
        raise ConfigError("[kerberos] needs exactly one of keytab (a keytab file with the "
                          "principal's keys: docs/kerberos.md) and password_env (the variable "
                          "holding its password)")
    if keytab is not None:
        keytab = _expand_credentials(keytab)
        try:
            with open(keytab, "rb") as file:
                head = file.read(2)
        except OSError as exc:
            raise ConfigError(f"kerberos.keytab {keytab} cannot be read: "
                              f"{exc.strerror or exc}") from None
        if head not in (b"\x05\x01", b"\x05\x02"):
            raise ConfigError(f"kerberos.keytab {keytab} is not a keytab file (ktutil, "
                              "`setspn`/`ktpass` or `samba-tool domain exportkeytab` write one)")
    password = _secret(environ, password_env) if password_env else None
    krb5_conf = _str(table, "kerberos.krb5_conf", None)
    if krb5_conf is not None and not os.path.isfile(krb5_conf):
        raise ConfigError(f"kerberos.krb5_conf {krb5_conf} is not a file")
    allow = table.get("allow_ntlm", True)
    if not isinstance(allow, bool):
        raise ConfigError(f"kerberos.allow_ntlm must be true or false, got {allow!r}")
    return KerberosConfig(principal, keytab, password_env, password, krb5_conf, allow)


def _expand_credentials(path: str) -> str:
    """A keytab given as `$CREDENTIALS_DIRECTORY/name`: systemd's LoadCredential= directory,
    which it sets for the service (contrib/submitwatch.service)."""
    if path.startswith("$CREDENTIALS_DIRECTORY/"):
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise ConfigError(f"kerberos.keytab {path}: CREDENTIALS_DIRECTORY is not set (it is "
                              "under systemd with LoadCredential=; elsewhere give the path)")
        return os.path.join(directory, path.split("/", 1)[1])
    return path


def _check_kerberos_use(kerberos: KerberosConfig | None, endpoints: list[ServerConfig]) -> None:
    """Every Kerberos endpoint has an identity and a DNS name; with allow_ntlm off, none may
    use NTLM."""
    for endpoint in endpoints:
        if not endpoint.polled:
            continue
        where = endpoint.name
        if endpoint.transport == "kerberos":
            if kerberos is None:
                raise ConfigError(f"{where}: transport 'kerberos' needs a [kerberos] table naming "
                                  "SubmitWatch's principal and its keytab or password_env "
                                  "(docs/kerberos.md)")
            host = urlsplit(endpoint.url).hostname or ""
            if _is_address(host):
                raise ConfigError(
                    f"{where}: transport 'kerberos' needs the server's DNS name in its url, not "
                    f"the address {host}: the ticket is for the service HTTP/<name>, and an "
                    "address names no service (use the name `setspn -L <server>` lists)")
        elif endpoint.transport in NTLM_TRANSPORTS and kerberos is not None \
                and not kerberos.allow_ntlm:
            raise ConfigError(f"{where}: transport {endpoint.transport!r} may authenticate with "
                              "NTLM, and kerberos.allow_ntlm is false: use transport 'kerberos'")


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _devices_config(devices: Mapping[str, Any]) -> DevicesConfig:
    d = DevicesConfig()
    flags = {}
    for key in ("enabled", "reverse_dns"):
        value = devices.get(key, getattr(d, key))
        if not isinstance(value, bool):
            raise ConfigError(f"devices.{key} must be true or false, got {value!r}")
        flags[key] = value
    max_seconds = _duration(devices, "devices.max_seconds", d.max_seconds, low=1.0)
    if max_seconds > 3600:
        raise ConfigError("devices.max_seconds is at most 3600 (an hour)")
    return DevicesConfig(
        enabled=flags["enabled"], reverse_dns=flags["reverse_dns"],
        max_bytes=_size(devices, "devices.max_bytes", d.max_bytes, low=64 * 1024,
                        high=2**31 - 1),
        max_seconds=max_seconds)


def _summary_config(summary: Mapping[str, Any]) -> SummaryConfig:
    every = _choice(summary, "summary.every", ("day", "week", "off"), "off")
    at = _str(summary, "summary.at", "09:00")
    clock = _CLOCK_TIME.fullmatch(at)
    if clock is None:
        raise ConfigError(f"summary.at must be a time of day as HH:MM in UTC, like '09:00'; "
                          f"got {at!r}")
    weekday = _choice(summary, "summary.weekday", WEEKDAYS, "monday")
    return SummaryConfig(every=None if every == "off" else every,
                         at=(int(clock.group(1)), int(clock.group(2))),
                         weekday=WEEKDAYS.index(weekday),
                         channel=_str(summary, "summary.channel", None))


def _section(raw: Mapping[str, Any], name: str, required: bool = False) -> Mapping[str, Any]:
    """One table of the file, holding only the keys that table knows."""
    table = _table(raw, name, required=required)
    _only(table, name, KEYS[name])
    return table


def _slack_config(slack: Mapping[str, Any], environ: Mapping[str, str]) -> SlackConfig:
    api_url = _str(slack, "slack.api_url", SLACK_API_URL)
    if urlsplit(api_url).scheme not in ("http", "https") or not urlsplit(api_url).netloc:
        raise ConfigError(f"slack.api_url must be an http(s) URL such as {SLACK_API_URL!r}, "
                          f"got {api_url!r}")
    public_url = _str(slack, "slack.public_url", None)
    if public_url is not None and (urlsplit(public_url).scheme != "https"
                                   or not urlsplit(public_url).netloc):
        raise ConfigError("slack.public_url must be the https URL your reverse proxy serves "
                          f"SubmitWatch at, such as 'https://submitwatch.contoso.com', got "
                          f"{public_url!r} (Slack calls only https URLs)")
    return SlackConfig(
        channel=_str(slack, "slack.channel", required=True),
        api_url=api_url if api_url.endswith("/") else api_url + "/",
        mode=_choice(slack, "slack.mode", MODES, "socket"),
        http_host=_listen_address(slack, "slack.http_host", SlackConfig.http_host),
        http_port=_int(slack, "slack.http_port", 3000, low=1, high=65535),
        public_url=public_url,
        bot_token=_secret(environ, SECRET_ENV["bot_token"]),
        app_token=_secret(environ, SECRET_ENV["app_token"]),
        signing_secret=_secret(environ, SECRET_ENV["signing_secret"]),
    )


def _store_config(store: Mapping[str, Any]) -> StoreConfig:
    return StoreConfig(path=_str(store, "store.path", StoreConfig.path),
                       retention=_duration(store, "store.retention", StoreConfig.retention,
                                           low=86400))


def _polling_config(polling: Mapping[str, Any]) -> PollingConfig:
    d = PollingConfig()
    polling_cfg = PollingConfig(
        interval=_duration(polling, "polling.interval", d.interval, low=1),
        jitter=_duration(polling, "polling.jitter", d.jitter, low=0),
        lookback=_duration(polling, "polling.lookback", d.lookback, low=0),
        batch_size=_int(polling, "polling.batch_size", d.batch_size, low=1, high=5000),
        operation_timeout=_duration(polling, "polling.operation_timeout", d.operation_timeout,
                                    low=1),
        read_timeout=_duration(polling, "polling.read_timeout", d.read_timeout, low=1),
        delivery_interval=_duration(polling, "polling.delivery_interval", d.delivery_interval,
                                    low=0.1),
        alert_after_failures=_int(polling, "polling.alert_after_failures",
                                  d.alert_after_failures, low=1, high=1000),
        # At least twice the largest event parse.py accepts (64K characters in UTF-16).
        max_output=_size(polling, "polling.max_output", d.max_output, low=256 * 1024,
                         high=1024**3),
    )
    if polling_cfg.read_timeout <= polling_cfg.operation_timeout:
        raise ConfigError("polling.read_timeout must be longer than polling.operation_timeout "
                          f"(got {polling_cfg.read_timeout:g}s and "
                          f"{polling_cfg.operation_timeout:g}s): WinRM waits up to the operation "
                          "timeout before answering")
    return polling_cfg


def _incident_config(incidents: Mapping[str, Any]) -> IncidentConfig:
    i = IncidentConfig()
    return IncidentConfig(
        quiet_period=_duration(incidents, "incidents.quiet_period", i.quiet_period, low=60),
        update_interval=_duration(incidents, "incidents.update_interval", i.update_interval,
                                  low=0),
        reminder_after=_duration(incidents, "incidents.reminder_after", i.reminder_after,
                                 low=0),
        reminder_interval=_duration(incidents, "incidents.reminder_interval",
                                    i.reminder_interval, low=60),
        storm_threshold=_int(incidents, "incidents.storm_threshold", i.storm_threshold, low=0,
                             high=10_000),
        storm_window=_duration(incidents, "incidents.storm_window", i.storm_window, low=60),
        confirm_after=_duration(incidents, "incidents.confirm_after", i.confirm_after, low=0),
    )


def _permissions_config(permissions: Mapping[str, Any]) -> PermissionsConfig:
    return PermissionsConfig(
        **{key: _slack_ids(permissions, key) for key in ("users", "groups", "channels")},
        group_cache=_duration(permissions, "permissions.group_cache",
                              PermissionsConfig.group_cache, low=0))


def _servers(raw: Mapping[str, Any], environ: Mapping[str, str]) -> tuple[ServerConfig, ...]:
    servers_raw = raw.get("servers", [])
    if not isinstance(servers_raw, list) or not all(isinstance(s, dict) for s in servers_raw):
        raise ConfigError("servers must be a list of [[servers]] tables")
    servers = tuple(_server(s, f"servers[{n}]", environ) for n, s in enumerate(servers_raw))
    names = [s.name.casefold() for s in servers]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"two [[servers]] entries are named {name!r}; names must be unique")
    return servers


def _glob(pattern: str) -> re.Pattern[str]:
    """A route's account glob: `*` any text, `?` one character, everything else literal
    (account names hold `[`, which fnmatch would read as a set), compared case-folded."""
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.casefold()]
    return re.compile("".join(parts), re.S)


#: Who a route may name: users (U..., W...) and user groups (S...), by ID only.
_OWNER_ID = re.compile(r"[UW][A-Z0-9]{2,20}|S[A-Z0-9]{2,20}")


def _routes(raw: Mapping[str, Any], servers: set[str]) -> tuple[RouteConfig, ...]:
    routes_raw = raw.get("routes", [])
    if not isinstance(routes_raw, list) or not all(isinstance(r, dict) for r in routes_raw):
        raise ConfigError("routes must be a list of [[routes]] tables")
    return tuple(_route(r, f"routes[{n}]", servers)
                 for n, r in enumerate(routes_raw))


def _route(raw: Mapping[str, Any], where: str, servers: set[str]) -> RouteConfig:
    _only(raw, where, KEYS["routes"])
    name = _str(raw, f"{where}.name", where)
    accounts = _strings(raw, f"{where}.accounts", ("*",), "account globs such as "
                        "'CONTOSO\\svc-*'")
    if not accounts:
        raise ConfigError(f"{where}.accounts is empty, so the route would never match: leave it "
                          "out to match every account")
    server_names = _strings(raw, f"{where}.servers", (), "configured server names")
    unknown = [s for s in server_names if s.casefold() not in servers]
    if unknown:
        raise ConfigError(f"{where}.servers names no configured server: {', '.join(unknown)}")
    events = raw.get("events", [])
    if not isinstance(events, list) or not all(type(e) is int and e in (1018, 1020)
                                               for e in events):
        raise ConfigError(f"{where}.events must be a list of 1018 and/or 1020, got {events!r}")
    owners = _strings(raw, f"{where}.owners", (), "Slack user IDs (U...) or user group IDs (S...)")
    for owner in owners:
        if not _OWNER_ID.fullmatch(owner):
            raise ConfigError(f"{where}.owners: {owner!r} is not a Slack user ID ('U024BE7LH') "
                              "or user group ID ('S0614TZR7'); names and @handles change, IDs "
                              "do not. Find one in Slack under the profile or group details")
    return RouteConfig(name=name, channel=_str(raw, f"{where}.channel", None),
                       accounts=accounts, servers=server_names, events=tuple(events),
                       owners=owners)


def _strings(raw: Mapping[str, Any], name: str, default: tuple[str, ...],
             what: str) -> tuple[str, ...]:
    value = raw.get(name.rsplit(".", 1)[-1], list(default))
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{name} must be a list of {what}, got {value!r}")
    return tuple(v.strip() for v in value)


def _metrics_config(metrics: Mapping[str, Any]) -> MetricsConfig:
    return MetricsConfig(
        host=_listen_address(metrics, "metrics.host", MetricsConfig.host),
        port=_int(metrics, "metrics.port", 0, low=1, high=65535) if "port" in metrics else None)


#: A server's keys that only mean something when SubmitWatch connects to it over WinRM.
WINRM_KEYS = ("username", "transport", "password_env", "validate_certificate", "ca_bundle",
              "cert_pem", "cert_key_pem", "log")


def _server(raw: Mapping[str, Any], where: str, environ: Mapping[str, str], *,
            section: str = "servers") -> ServerConfig:
    """A [[servers]] entry, or the WinRM endpoint of a [[collectors]] entry (`section`), which
    must have a url."""
    if isinstance(raw.get("name"), str) and _SERVER_NAME.fullmatch(raw["name"]):
        where = f"{section}.{raw['name']}"  # name the server the way the user knows it
    _only(raw, where, KEYS["servers"])
    name = _str(raw, f"{where}.name", required=True)
    if not _SERVER_NAME.fullmatch(name):
        raise ConfigError(f"{where}.name {name!r} must be 1-63 letters, digits, '.', '_' or '-' "
                          "(the Exchange server's name, e.g. 'EX01')")
    where = f"{section}.{name}"
    if "url" not in raw and section == "servers":
        return _fed_server(raw, where, name)
    url = _str(raw, f"{where}.url", required=True)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}.url must be a full WinRM endpoint URL such as "
                          f"'https://ex01.contoso.com:5986/wsman', got {url!r}")
    transport = _choice(raw, f"{where}.transport", TRANSPORTS, "ntlm")
    needs = TRANSPORT_PACKAGES.get(transport)
    if needs and not any(importlib.util.find_spec(module) for module in needs[0]):
        raise ConfigError(f"{where}.transport {transport!r} needs the {needs[1]!r} package, which "
                          f"is not installed: pip install {needs[1]!r}")
    validate = raw.get("validate_certificate", True)
    if not isinstance(validate, bool):
        raise ConfigError(f"{where}.validate_certificate must be true or false, got {validate!r}")
    password_env = _str(raw, f"{where}.password_env", "")
    password = _secret(environ, password_env) if password_env else None
    cert_pem = _str(raw, f"{where}.cert_pem", None)
    cert_key_pem = _str(raw, f"{where}.cert_key_pem", None)
    username = _str(raw, f"{where}.username", "")
    if transport == "certificate":
        if not (cert_pem and cert_key_pem):
            raise ConfigError(f"{where}: transport 'certificate' needs cert_pem and cert_key_pem "
                              "(paths to the client certificate and its key)")
    elif transport == "kerberos":
        if username or password_env:
            raise ConfigError(f"{where}: transport 'kerberos' signs in as [kerberos].principal; "
                              "remove username and password_env here")
    elif not username:
        raise ConfigError(f"{where}.username is required for transport {transport!r} "
                          "(e.g. 'CONTOSO\\\\svc-submitwatch')")
    elif not password_env:
        raise ConfigError(f"{where}.password_env is required for transport {transport!r}: name "
                          "the environment variable that holds the password")
    return ServerConfig(
        name=name, url=url, username=username, transport=transport, password=password,
        password_env=password_env, validate_certificate=validate,
        ca_bundle=_str(raw, f"{where}.ca_bundle", None), cert_pem=cert_pem,
        cert_key_pem=cert_key_pem, channel=_str(raw, f"{where}.channel", None),
        submission_connector=_str(raw, f"{where}.submission_connector", None),
        version=_choice(raw, f"{where}.version", VERSIONS, None),
        role=_choice(raw, f"{where}.role", ROLES, "Mailbox"),
        frontend_protocol_log=_str(raw, f"{where}.frontend_protocol_log", None),
        hub_protocol_log=_str(raw, f"{where}.hub_protocol_log", None),
        log=_log_name(raw, f"{where}.log"),
    )


def _fed_server(raw: Mapping[str, Any], where: str, name: str) -> ServerConfig:
    """A server with no url: SubmitWatch never connects to it. Its events come through a
    [[collectors]] entry or the [otlp] receiver; the entry names it for routing, advice and
    alerts."""
    winrm = [key for key in WINRM_KEYS if key in raw]
    if winrm:
        raise ConfigError(f"{where}.{winrm[0]} is set but {where}.url is not: without url "
                          f"SubmitWatch never connects to {name} (its events come through a "
                          "collector or OTLP). Add the url to poll it, or remove "
                          f"{', '.join(winrm)}")
    return ServerConfig(
        name=name, url="", channel=_str(raw, f"{where}.channel", None),
        submission_connector=_str(raw, f"{where}.submission_connector", None),
        version=_choice(raw, f"{where}.version", VERSIONS, None),
        role=_choice(raw, f"{where}.role", ROLES, "Mailbox"),
        frontend_protocol_log=_str(raw, f"{where}.frontend_protocol_log", None),
        hub_protocol_log=_str(raw, f"{where}.hub_protocol_log", None))


@dataclass(frozen=True)
class CollectorConfig:
    """A Windows Event Collector (bot.sources.collector.CollectorSource): its WinRM endpoint as a
    server's (`endpoint.name` is the collector's name), the WEF subscription whose sources it
    reports (`wecutil gr`), and the liveness rule for those sources."""

    endpoint: ServerConfig
    subscription: str
    unconfigured_origins: str = "own_name"   # or "ignore" (UNCONFIGURED_ORIGINS)
    heartbeat_timeout: float = 45 * 60.0     # seconds without a heartbeat: "not being watched"

    @property
    def name(self) -> str:
        return self.endpoint.name


#: A WEF subscription's name as wecutil takes it on a cmd.exe line: nothing to quote.
_SUBSCRIPTION = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.\-]{0,127}")


def _collectors(raw: Mapping[str, Any], environ: Mapping[str, str],
                servers: set[str]) -> tuple[CollectorConfig, ...]:
    collectors_raw = raw.get("collectors", [])
    if not isinstance(collectors_raw, list) or not all(isinstance(c, dict)
                                                       for c in collectors_raw):
        raise ConfigError("collectors must be a list of [[collectors]] tables")
    collectors = tuple(_collector(c, f"collectors[{n}]", environ)
                       for n, c in enumerate(collectors_raw))
    names = [c.name.casefold() for c in collectors]
    for name in names:
        if names.count(name) > 1 or name in servers:
            raise ConfigError(f"two [[servers]] or [[collectors]] entries are named {name!r}; "
                              "names must be unique")
    return collectors


def _collector(raw: Mapping[str, Any], where: str, environ: Mapping[str, str]) -> CollectorConfig:
    if isinstance(raw.get("name"), str) and _SERVER_NAME.fullmatch(raw["name"]):
        where = f"collectors.{raw['name']}"
    _only(raw, where, KEYS["collectors"])
    own = {"subscription", "unconfigured_origins", "heartbeat_timeout"}
    endpoint = _server({k: v for k, v in raw.items() if k not in own}, where, environ,
                       section="collectors")
    where = f"collectors.{endpoint.name}"
    subscription = _str(raw, f"{where}.subscription", required=True)
    if not _SUBSCRIPTION.fullmatch(subscription) or subscription.endswith(" "):
        raise ConfigError(f"{where}.subscription must be the WEF subscription's name as "
                          "`wecutil es` lists it (letters, digits, spaces, '.', '_', '-'); "
                          f"got {subscription!r}")
    return CollectorConfig(
        endpoint=replace(endpoint, log="ForwardedEvents"), subscription=subscription,
        unconfigured_origins=_choice(raw, f"{where}.unconfigured_origins",
                                     UNCONFIGURED_ORIGINS, "own_name"),
        heartbeat_timeout=_duration(raw, f"{where}.heartbeat_timeout",
                                    CollectorConfig.heartbeat_timeout, low=60))


#: An event log's name as wevtutil takes it on a cmd.exe line: no spaces or quotes to escape.
_LOG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-/]{0,127}")


def _log_name(raw: Mapping[str, Any], name: str) -> str:
    value = _str(raw, name, "Application")
    if not _LOG_NAME.fullmatch(value):
        raise ConfigError(f"{name} must be an event log's name such as 'Application' (letters, "
                          f"digits, '.', '_', '-', '/'); got {value!r}")
    return value


def missing_secrets(config: Config, *, slack_mode: str | None) -> list[str]:
    """What must still be set in the environment before running; empty when all is there.

    slack_mode None means only the Web API token is needed (poll-once, check).
    """
    missing = []
    if config.slack.bot_token is None:
        missing.append(f"{SECRET_ENV['bot_token']} (the bot token, xoxb-...)")
    if slack_mode == "socket" and config.slack.app_token is None:
        missing.append(f"{SECRET_ENV['app_token']} (the app-level token with connections:write, "
                       "xapp-...) for Socket Mode")
    if slack_mode == "http" and config.slack.signing_secret is None:
        missing.append(f"{SECRET_ENV['signing_secret']} (from Basic Information in the app "
                       "settings) for HTTP mode")
    for server in config.servers:
        if server.password_env and server.password is None:
            missing.append(f"{server.password_env} (the WinRM password for server {server.name})")
    for collector in config.collectors:
        endpoint = collector.endpoint
        if endpoint.password_env and endpoint.password is None:
            missing.append(f"{endpoint.password_env} (the WinRM password for collector "
                           f"{endpoint.name})")
    directory = config.directory
    if directory is not None and directory.password_env and directory.password is None:
        missing.append(f"{directory.password_env} (the password of {directory.user}, for "
                       "[directory])")
    return missing


# --- small typed readers -------------------------------------------------------------------------

def _only(table: Mapping[str, Any], where: str, allowed: set[str]) -> None:
    for key in table:
        if key in allowed:
            continue
        name = f"{where}.{key}" if where else key
        if any(word in key.lower() for word in _SECRET_WORDS):
            raise ConfigError(f"{name}: secrets never go in the config file. Put the value in an "
                              "environment variable: SLACK_BOT_TOKEN, SLACK_APP_TOKEN, "
                              "SLACK_SIGNING_SECRET, or the variable a server's password_env "
                              "names (each may also be given as a file path in NAME_FILE)")
        raise ConfigError(f"unknown key {name!r}; allowed here: {', '.join(sorted(allowed))}")


def _table(raw: Mapping[str, Any], key: str, required: bool = False) -> Mapping[str, Any]:
    if key not in raw:
        if required:
            raise ConfigError(f"the [{key}] table is required")
        return {}
    if not isinstance(raw[key], dict):
        raise ConfigError(f"{key} must be a table ([{key}]), got {type(raw[key]).__name__}")
    return raw[key]


def _str(table: Mapping[str, Any], name: str, default: Any = None, required: bool = False) -> Any:
    key = name.rsplit(".", 1)[-1]
    if key not in table:
        if required:
            raise ConfigError(f"{name} is required")
        return default
    value = table[key]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
    return value.strip()


def _int(table: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    key = name.rsplit(".", 1)[-1]
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return value


def _size(table: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    """A number of bytes, as a whole number or text like '4MB' or '512KB' (binary units)."""
    key = name.rsplit(".", 1)[-1]
    value = table.get(key, default)
    size = parse_size(value) if isinstance(value, str) else value
    if isinstance(size, bool) or not isinstance(size, int) or not low <= size <= high:
        raise ConfigError(f"{name} must be a size from {low // 1024}KB to {high // 1024**2}MB, "
                          f"as bytes or text like '4MB'; got {value!r}")
    return size


def _listen_address(table: Mapping[str, Any], name: str, default: str) -> str:
    """An IP address to listen on: a name would resolve to whatever DNS says at start-up."""
    value = _str(table, name, default)
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ConfigError(f"{name} must be the IP address to listen on: '127.0.0.1' (the default: "
                          "only a reverse proxy on this machine can reach it), '0.0.0.0' (every "
                          f"interface; a proxy on another host) or one interface's address; "
                          f"got {value!r}") from None


def _slack_ids(table: Mapping[str, Any], key: str) -> tuple[str, ...]:
    pattern, example = _SLACK_IDS[key]
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"permissions.{key} must be a list of Slack {example}, got {value!r}")
    for item in value:
        if not pattern.fullmatch(item.strip()):
            hint = " (names and @handles change; IDs do not)" if key != "channels" else ""
            raise ConfigError(f"permissions.{key}: {item!r} is not a Slack ID; use {example}"
                              f"{hint}. Find one in Slack under the profile or channel details")
    return tuple(v.strip() for v in value)


def _choice(table: Mapping[str, Any], name: str, allowed: tuple[str, ...], default: Any) -> Any:
    key = name.rsplit(".", 1)[-1]
    value = table.get(key, default)
    if value is default:
        return value
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}; "
                          f"got {value!r}")
    return value


#: The longest duration anything takes (ten years): beyond it date arithmetic overflows, and
#: no interval, period or snooze is meant to be that long.
MAX_DURATION = 3650 * 86400.0


def _duration(table: Mapping[str, Any], name: str, default: float, low: float) -> float:
    key = name.rsplit(".", 1)[-1]
    if key not in table:
        return default
    value = table[key]
    seconds = parse_duration(value) if isinstance(value, str) else value
    if (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds) or not low <= seconds <= MAX_DURATION):
        raise ConfigError(f"{name} must be a duration from {low:g}s to 3650d, as seconds or "
                          f"text like '90s', '5m', '24h', '7d'; got {value!r}")
    return float(seconds)


def parse_size(text: str) -> int | None:
    """'4MB' -> 4194304, '512KB', '1GB', '65536'; None when unreadable."""
    m = _SIZE.fullmatch(text.strip().lower())
    return int(m.group(1)) * _SIZE_UNITS[m.group(2)] if m else None


def parse_duration(text: str) -> float | None:
    """'90s' -> 90.0, '5m' -> 300.0, '24h', '7d', '250ms'; None when unreadable."""
    m = _DURATION.fullmatch(text.strip().lower())
    if not m:
        return None
    return float(m.group(1)) * _UNITS[m.group(2)]


def _secret(environ: Mapping[str, str], name: str) -> Secret | None:
    """NAME from the environment, or the contents of the file NAME_FILE points to."""
    value = environ.get(name)
    if value:
        return Secret(value.strip())
    file_name = environ.get(f"{name}_FILE")
    if file_name:
        try:
            value = Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE names {file_name}, which cannot be read: "
                              f"{exc.strerror}") from None
        if not value:
            raise ConfigError(f"{name}_FILE names {file_name}, which is empty: write the "
                              "secret into it, or unset the variable")
        return Secret(value)
    return None


# --- [directory]: the read-only Active Directory checks (bot.directory) ---------------------

@dataclass(frozen=True)
class DirectoryConfig:
    urls: tuple[str, ...]
    #: The account that binds: DOMAIN\user or a UPN for SIMPLE; with auth 'kerberos', the
    #: [kerberos] principal (with_kerberos sets it).
    user: str
    password_env: str | None = None            # SIMPLE only: Kerberos has [kerberos]'s
    password: Secret | None = field(default=None, repr=False)
    auth: str = "simple"
    #: SIMPLE sends the password as it is: only over ldaps://, unless this is set (a DC that
    #: requires LDAP signing refuses it anyway, and `check` says so).
    allow_insecure_simple: bool = False
    verify_tls: bool = True
    ca_file: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    #: auth 'kerberos': SubmitWatch's identity ([kerberos]), set by with_kerberos.
    kerberos: KerberosConfig | None = field(default=None, compare=False, repr=False)


#: How the reader binds: SIMPLE over LDAPS, or SASL GSSAPI (Kerberos) signed and sealed.
AUTHS = ("simple", "kerberos")
DIRECTORY_KEYS = KEYS["directory"]
#: Binds once offered and removed, and why (the words a user with an old file reads).
REMOVED_AUTHS = {
    "ntlm": ("directory.auth 'ntlm' is no longer offered: the NTLM bind SubmitWatch's LDAP "
             "library sends is refused by Samba and by domains that have turned NTLM off, so "
             "it could not be proven against any DC. Use auth = 'kerberos' (SASL GSSAPI, signed "
             "and sealed, as SubmitWatch's [kerberos] principal: docs/kerberos.md) or "
             "auth = 'simple' over ldaps://"),
}


def parse_directory(table: Mapping[str, Any], environ: Mapping[str, str]) -> DirectoryConfig:
    """The [directory] table; ConfigError names the key and what it allows. The password comes
    from the environment variable password_env names (or its _FILE twin), never the file.
    With auth 'kerberos', with_kerberos adds the [kerberos] identity it binds as."""
    _only(table, "directory", DIRECTORY_KEYS)
    urls_raw = table.get("urls")
    if isinstance(urls_raw, str):
        urls_raw = [urls_raw]
    if not isinstance(urls_raw, list) or not urls_raw or not all(
            isinstance(u, str) for u in urls_raw):
        raise ConfigError("directory.urls must be a list of LDAP URLs such as "
                          f"['ldaps://dc01.contoso.com'], got {urls_raw!r}")
    urls = []
    for url in (u.strip() for u in urls_raw):
        parts = urlsplit(url)
        if parts.scheme not in ("ldap", "ldaps") or not parts.hostname or parts.path not in (
                "", "/"):
            raise ConfigError(f"directory.urls: {url!r} is not an LDAP URL such as "
                              "'ldaps://dc01.contoso.com' or 'ldap://dc01.contoso.com:389' "
                              "(no base DN: it is read from the DC's RootDSE)")
        try:
            parts.port  # noqa: B018 (raises on a port that is not a number)
        except ValueError:
            raise ConfigError(f"directory.urls: {url!r} has a port that is not a number") from None
        urls.append(url)
    auth = table.get("auth", "simple")
    if auth in REMOVED_AUTHS:
        raise ConfigError(REMOVED_AUTHS[auth])
    if auth not in AUTHS:
        raise ConfigError(f"directory.auth must be 'kerberos' or 'simple', got {auth!r}")
    flags = {}
    for key, default in (("allow_insecure_simple", False), ("verify_tls", True)):
        flags[key] = table.get(key, default)
        if not isinstance(flags[key], bool):
            raise ConfigError(f"directory.{key} must be true or false, got {flags[key]!r}")
    connect_timeout = _duration(table, "directory.connect_timeout",
                                DirectoryConfig.connect_timeout, low=0.1)
    read_timeout = _duration(table, "directory.read_timeout", DirectoryConfig.read_timeout,
                             low=1)
    if auth == "kerberos":
        _kerberos_directory(table, urls)
        return DirectoryConfig(urls=tuple(urls), user="", auth=auth,
                               connect_timeout=connect_timeout, read_timeout=read_timeout)
    user = _str(table, "directory.user", required=True)
    if auth == "simple" and not flags["allow_insecure_simple"]:
        plain = [u for u in urls if urlsplit(u).scheme != "ldaps"]
        if plain:
            raise ConfigError(f"directory: auth 'simple' sends the password in clear, so it is "
                              f"taken over ldaps:// only; {', '.join(plain)} is plain LDAP. Use "
                              "ldaps://, or auth = 'kerberos' (signed and sealed over ldap://)")
    password_env = _str(table, "directory.password_env", required=True)
    return DirectoryConfig(
        urls=tuple(urls), user=user, password_env=password_env,
        password=_secret(environ, password_env), auth=auth,
        allow_insecure_simple=flags["allow_insecure_simple"], verify_tls=flags["verify_tls"],
        ca_file=_str(table, "directory.ca_file", None), connect_timeout=connect_timeout,
        read_timeout=read_timeout)


def _kerberos_directory(table: Mapping[str, Any], urls: list[str]) -> None:
    """auth 'kerberos' binds as [kerberos].principal to ldap://<the DC's DNS name>, and seals
    the connection itself: no user or password here, no TLS, no address for a name."""
    extra = [key for key in ("user", "password_env", "allow_insecure_simple", "verify_tls",
                             "ca_file") if key in table]
    if extra:
        raise ConfigError(f"directory.{extra[0]} is not used with auth 'kerberos': it binds as "
                          "[kerberos].principal, with the ticket of its keytab or password, "
                          "and seals the connection itself (no TLS); remove "
                          f"{', '.join('directory.' + key for key in extra)}")
    for url in urls:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme != "ldap":
            raise ConfigError(f"directory.urls: {url}: auth 'kerberos' signs and seals the "
                              "connection itself (SASL GSSAPI), over ldap:// (port 389); "
                              f"use ldap://{host}")
        if _is_address(host):
            raise ConfigError(
                f"directory.urls: {url}: auth 'kerberos' needs the DC's DNS name, not the "
                f"address {host}: the ticket is for the service ldap/<DC name>, and an address "
                "names no service (use the name `setspn -L <DC>` lists, such as "
                "ldap://dc01.contoso.com)")


def with_kerberos(directory: DirectoryConfig, kerberos: KerberosConfig | None) -> DirectoryConfig:
    """The directory configuration with the identity auth 'kerberos' binds as."""
    if directory.auth != "kerberos":
        return directory
    if kerberos is None:
        raise ConfigError("directory: auth 'kerberos' needs a [kerberos] table naming "
                          "SubmitWatch's principal and its keytab or password_env "
                          "(docs/kerberos.md)")
    return replace(directory, user=kerberos.principal, kerberos=kerberos)
