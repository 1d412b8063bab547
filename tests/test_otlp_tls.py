"""Mutual TLS on the OTLP receiver ([otlp] tls_cert, tls_key, client_ca): real TLS handshakes on
127.0.0.1 against the running listener (bot.app.serve_otlp), certificates from throw-away CAs,
payloads built with opentelemetry-proto's own classes, events stored in a real SQLite file."""
from __future__ import annotations

import http.client
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from bot.app import serve_otlp
from bot.core.config import ConfigError
from tests.test_otlp import TOKEN, event_xml, free_port, otlp_count, request, stored
from tests.tls import make_pki


@dataclass
class ClientCA:
    """A CA that issues the senders' certificates (apart from the one that issued the
    receiver's own, as in most estates)."""

    ca_file: Path
    key: ec.EllipticCurvePrivateKey
    name: x509.Name

    def issue(self, folder: Path, common_name: str) -> tuple[Path, Path]:
        """A client certificate (clientAuth) and its key: (cert file, key file)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                .issuer_name(self.name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=5))
                .not_valid_after(now + timedelta(days=1))
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        cert_file, key_file = folder / f"{common_name}.pem", folder / f"{common_name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(_key_pem(key))
        return cert_file, key_file


def _key_pem(key, encryption=None) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption or serialization.NoEncryption())


def make_client_ca(folder: Path, name: str) -> ClientCA:
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    ca = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
          .public_key(key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(key, hashes.SHA256()))
    ca_file = folder / "client-ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return ClientCA(ca_file, key, subject)


@pytest.fixture
def pki(tmp_path):
    """The receiver's certificate (make_pki), the senders' CA, a sender's certificate, and a
    certificate of the same name from another CA."""
    (tmp_path / "server").mkdir()
    server = make_pki(tmp_path / "server")
    senders = make_client_ca(tmp_path / "senders", "Collectors CA")
    stranger = make_client_ca(tmp_path / "other", "Some Other CA")
    return {"server": server, "senders": senders,
            "client": senders.issue(tmp_path / "senders", "otelcol-01"),
            "foreign": stranger.issue(tmp_path / "other", "otelcol-01")}


@pytest.fixture
def tls_receiver(make_config, pki, db):
    """A running HTTPS receiver; yields start(**otlp) -> (url, port)."""
    servers = []

    def start(token: bool = False, client_ca: bool = True, **otlp):
        tables = {"port": free_port(), "tls_cert": str(pki["server"].cert_file),
                  "tls_key": str(pki["server"].key_file), **otlp}
        if client_ca:
            tables["client_ca"] = str(pki["senders"].ca_file)
        if token:
            tables["token_env"] = "OTLP_TOKEN"
        config = make_config(otlp=tables, environ={"OTLP_TOKEN": TOKEN})
        server = serve_otlp(config)
        servers.append(server)
        return f"https://127.0.0.1:{server.server_port}/v1/logs", server.server_port
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def client_context(pki, cert=None) -> ssl.SSLContext:
    """A sender's TLS settings: trusts the receiver's CA; presents `cert` (cert, key) if any."""
    context = ssl.create_default_context(cafile=str(pki["server"].ca_file))
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


def post(url, context, body=None, token=None):
    body = (body or request(event_xml(301))).SerializeToString()
    headers = {"Content-Type": "application/x-protobuf"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def handshake_refused(port, context) -> str:
    """Open a TLS connection, send a request, and return how it failed; an HTTP answer fails
    the test. In TLS 1.3 the client's side of the handshake may complete before the receiver
    checks its certificate, so the refusal arrives on the first read: as the receiver's alert
    (certificate required, unknown CA) or, when the close wins the race, as a reset or EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
                answer = tls.recv(1024)
        except (ssl.SSLError, OSError) as exc:
            return str(exc)
    assert answer == b"", f"the receiver answered: {answer!r}"
    return "closed without an answer"


# --- the handshake ------------------------------------------------------------------------------

def test_a_client_certificate_from_the_ca_is_accepted_and_its_events_stored(tls_receiver, pki,
                                                                            db):
    url, _port = tls_receiver()
    status, body = post(url, client_context(pki, pki["client"]),
                        request(event_xml(301), event_xml(302, computer="EX02.contoso.local")))
    assert status == 200
    assert ExportLogsServiceResponse.FromString(body) == ExportLogsServiceResponse()
    assert [(r[1], r[2]) for r in stored(db)] == [("EX01", 301), ("EX02", 302)]


def test_a_client_without_a_certificate_is_refused_at_the_handshake(tls_receiver, pki, db):
    _url, port = tls_receiver()
    before = otlp_count("requests")
    handshake_refused(port, client_context(pki))
    assert otlp_count("requests") == before    # never reached the receiver
    with pytest.raises(OSError):   # URLError, or SSLError on the first read (TLS 1.3)
        post(_url, client_context(pki))
    assert stored(db) == []


def test_a_certificate_from_another_ca_is_refused_at_the_handshake(tls_receiver, pki, db):
    url, port = tls_receiver()
    before = otlp_count("requests")
    handshake_refused(port, client_context(pki, pki["foreign"]))
    with pytest.raises(OSError):   # URLError, or SSLError on the first read (TLS 1.3)
        post(url, client_context(pki, pki["foreign"]))
    assert otlp_count("requests") == before
    assert stored(db) == []


def test_plain_http_to_the_tls_port_gets_no_answer(tls_receiver, pki, db):
    _url, port = tls_receiver()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    with pytest.raises((http.client.HTTPException, OSError)):
        connection.request("POST", "/v1/logs", body=request(event_xml(9)).SerializeToString(),
                           headers={"Content-Type": "application/x-protobuf"})
        connection.getresponse()
    connection.close()
    assert stored(db) == []


def test_a_client_that_never_finishes_the_handshake_holds_up_no_one(tls_receiver, pki, db):
    url, port = tls_receiver()
    with socket.create_connection(("127.0.0.1", port), timeout=10):   # says nothing
        status, _body = post(url, client_context(pki, pki["client"]))
    assert status == 200 and len(stored(db)) == 1


# --- what authenticates -------------------------------------------------------------------------

def test_with_both_configured_both_are_required(tls_receiver, pki, db):
    url, _port = tls_receiver(token=True)
    context = client_context(pki, pki["client"])
    assert post(url, context)[0] == 401                       # the certificate alone
    assert post(url, context, token="not-the-token")[0] == 401
    assert stored(db) == []
    assert post(url, context, token=TOKEN)[0] == 200
    assert len(stored(db)) == 1


def test_https_with_a_token_and_no_client_ca(tls_receiver, pki, db):
    url, _port = tls_receiver(token=True, client_ca=False)
    assert post(url, client_context(pki))[0] == 401
    assert post(url, client_context(pki), token=TOKEN)[0] == 200
    assert len(stored(db)) == 1


# --- [otlp] TLS keys ----------------------------------------------------------------------------

def test_tls_keys_are_checked_with_words(make_config, pki, tmp_path):
    server, senders = pki["server"], pki["senders"]
    (tmp_path / "other-server").mkdir()
    other = make_pki(tmp_path / "other-server")

    def otlp(**keys):
        return make_config(otlp={"port": free_port(), **keys}, environ={"T": TOKEN})

    ok = otlp(tls_cert=str(server.cert_file), tls_key=str(server.key_file),
              client_ca=str(senders.ca_file))
    assert ok.otlp.token is None and ok.otlp.tls_context().verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ConfigError, match="otlp.client_ca .* needs otlp.tls_cert"):
        otlp(token_env="T", client_ca=str(senders.ca_file))
    with pytest.raises(ConfigError, match="otlp.tls_key is set without otlp.tls_cert"):
        otlp(token_env="T", tls_key=str(server.key_file))
    with pytest.raises(ConfigError, match=r"otlp.tls_cert .*missing.pem cannot be read: No such"):
        otlp(token_env="T", tls_cert=str(tmp_path / "missing.pem"), tls_key=str(server.key_file))
    with pytest.raises(ConfigError, match="is not the key of the certificate in otlp.tls_cert"):
        otlp(token_env="T", tls_cert=str(server.cert_file), tls_key=str(other.key_file))
    with pytest.raises(ConfigError, match="otlp.tls_cert .* holds no PEM certificate"):
        otlp(token_env="T", tls_cert=str(server.key_file), tls_key=str(server.key_file))
    with pytest.raises(ConfigError, match="holds no PEM private key; name the key's file"):
        otlp(token_env="T", tls_cert=str(server.cert_file))
    encrypted = tmp_path / "encrypted.key"
    key = serialization.load_pem_private_key(server.key_file.read_bytes(), None)
    encrypted.write_bytes(_key_pem(key, serialization.BestAvailableEncryption(b"passphrase")))
    with pytest.raises(ConfigError, match="the private key is encrypted"):
        otlp(token_env="T", tls_cert=str(server.cert_file), tls_key=str(encrypted))
    with pytest.raises(ConfigError, match="otlp.client_ca .* holds no CA certificate"):
        otlp(tls_cert=str(server.cert_file), tls_key=str(server.key_file),
             client_ca=str(pki["client"][0]))
    with pytest.raises(ConfigError, match="otlp.client_ca .* cannot be read"):
        otlp(tls_cert=str(server.cert_file), tls_key=str(server.key_file),
             client_ca=str(tmp_path / "nope.pem"))
    with pytest.raises(ConfigError, match="or otlp.client_ca"):
        otlp(tls_cert=str(server.cert_file), tls_key=str(server.key_file))
    combined = tmp_path / "combined.pem"      # certificate and key in one file
    combined.write_bytes(server.cert_file.read_bytes() + server.key_file.read_bytes())
    assert otlp(token_env="T", tls_cert=str(combined)).otlp.tls_context() is not None
    # The receiver off: nothing is read, and a token need not be set.
    assert make_config(otlp={"tls_cert": str(tmp_path / "missing.pem")}).otlp.port is None
