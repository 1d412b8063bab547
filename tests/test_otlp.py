"""The OTLP/HTTP logs receiver (bot.ops.otlp_receiver, bot.sources.otlp): payloads built with
opentelemetry-proto's own classes, posted over real HTTP on 127.0.0.1 to the running receiver,
stored in a real SQLite file; the end-to-end run reaches the Slack stand-in."""
from __future__ import annotations

import gzip
import json
import socket
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from bot.app import serve_otlp
from bot.engine.delivery import deliver_once
from bot.slack.sender import SlackSender
from bot.sources.origins import Origins
from store.db import open_db
from tests.conftest import CHANNEL

TOKEN = "otlp-token-0123456789"
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
FE, HUB = "MSExchangeFrontEndTransport", "MSExchangeTransport"


def event_xml(record, computer="EX01.contoso.local", event_id=1018, provider=FE,
              account="CONTOSO\\svc-scanner", connector="Default Frontend EX01"):
    data = f"<Data>{account}</Data>" + (f"<Data>{connector}</Data>" if connector else "")
    return ("<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
            f"<Provider Name='{provider}'/><EventID Qualifiers='32772'>{event_id}</EventID>"
            "<Level>3</Level><Task>1</Task><Keywords>0x80000000000000</Keywords>"
            f"<TimeCreated SystemTime='{NOW:%Y-%m-%dT%H:%M:%S}.1234567Z'/>"
            f"<EventRecordID>{record}</EventRecordID><Channel>Application</Channel>"
            f"<Computer>{computer}</Computer><Security/></System><EventData>{data}</EventData>"
            "</Event>")


def structured(record, event_data, computer="EX01.contoso.local", event_id=1018, provider=FE,
               message=""):
    """The windowseventlog receiver's map body (without `raw: true`)."""
    body = {"channel": "Application", "computer": computer, "record_id": record,
            "system_time": f"{NOW:%Y-%m-%dT%H:%M:%S}.1234567Z", "level": "Warning",
            "message": message, "task": "SmtpReceive", "opcode": "", "keywords": ["Classic"],
            "event_id": {"id": event_id, "qualifiers": 32772},
            "provider": {"name": provider, "guid": "", "event_source": ""}}
    if event_data is not None:
        body["event_data"] = event_data
    return body


def any_value(value):
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    return AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=any_value(v))
                                                      for k, v in value.items()]))


def request(*bodies):
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(
        log_records=[LogRecord(body=any_value(b)) for b in bodies])])])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def receiver(make_config, db_path, db):
    """A running receiver (EX01, EX02 configured); yields (url, config, start)."""
    servers = []

    def start(open_database=None, **otlp):
        config = make_config(otlp={"port": free_port(), "token_env": "OTLP_TOKEN", **otlp},
                             environ={"OTLP_TOKEN": TOKEN})
        server = serve_otlp(config, open_database=open_database)
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/v1/logs", config
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def post(url, body, content_type="application/x-protobuf", token=TOKEN, headers=None):
    if not isinstance(body, bytes):
        body = body.SerializeToString()
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": content_type, **({"Authorization": f"Bearer {token}"} if token else {}),
        **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def stored(db):
    return db.execute("SELECT server, origin, record_id, event_id, account, connector, computer "
                      "FROM events ORDER BY origin, record_id").fetchall()


# --- body shapes, both encodings ----------------------------------------------------------------

SHAPES = {
    "raw_xml": lambda r: event_xml(r),
    "data_list": lambda r: structured(r, {"data": [{"": "CONTOSO\\svc-scanner"},
                                                   {"": "Default Frontend EX01"}]}),
    "numbered": lambda r: structured(r, {"param1": "CONTOSO\\svc-scanner",
                                         "param2": "Default Frontend EX01"}),
    "dropped_values": lambda r: structured(r, {}, message=(
        "The account 'CONTOSO\\svc-scanner' provided valid credentials, but it does not have "
        "submit permissions on SMTP Receive connector 'Default Frontend EX01'; failing "
        "authentication.")),
}


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_each_body_shape_is_stored(receiver, db, shape, encoding):
    url, _config = receiver()
    payload = request(SHAPES[shape](7001))
    if encoding == "json":
        status, headers, body = post(url, json.dumps(MessageToDict(payload)).encode(),
                                     "application/json")
        assert json.loads(body) == {}
    else:
        status, headers, body = post(url, payload)
        assert ExportLogsServiceResponse.FromString(body) == ExportLogsServiceResponse()
    assert status == 200
    assert stored(db) == [("otlp", "EX01", 7001, 1018, "CONTOSO\\svc-scanner",
                           "EX01\\Default Frontend EX01", "EX01.contoso.local")]


def test_a_gzip_body_is_read(receiver, db):
    url, _config = receiver()
    status, _h, _b = post(url, gzip.compress(request(event_xml(5)).SerializeToString()),
                          headers={"Content-Encoding": "gzip"})
    assert status == 200 and len(stored(db)) == 1


def test_other_events_are_acknowledged_and_dropped(receiver, db):
    url, _config = receiver()
    other = structured(9, {"data": [{"": "x"}]}, provider="Microsoft-Windows-SMBServer",
                       event_id=1020)
    status, _h, body = post(url, request(
        "plain text log line", event_xml(10, event_id=1019), event_xml(11, provider="MSExchange "
                                                                       "Store Driver"),
        other, structured(12, {"param1": "a"}, event_id=4625), event_xml(13, event_id=1020)))
    assert status == 200
    assert ExportLogsServiceResponse.FromString(body).partial_success.rejected_log_records == 0
    assert [r[2] for r in stored(db)] == [13]


# --- at-least-once, origins ---------------------------------------------------------------------

def test_a_duplicate_delivery_is_stored_once(receiver, db):
    url, _config = receiver()
    batch = request(event_xml(100), event_xml(101, event_id=1020, connector=None))
    first = otlp_count("stored")
    assert post(url, batch)[0] == 200
    assert otlp_count("stored") == first + 2
    before = otlp_count("stored")
    assert post(url, batch)[0] == 200     # the sender's retry after a lost answer
    assert [r[2] for r in stored(db)] == [100, 101]
    assert otlp_count("stored") == before    # /metrics counts new events only


def otlp_count(what):
    """The receiver's counter as /metrics serves it."""
    from prometheus_client import CollectorRegistry, generate_latest

    from bot.core.counters import OTLP
    registry = CollectorRegistry()
    registry.register(OTLP)
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith(f'submitwatch_otlp_total{{what="{what}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_two_origins_with_the_same_record_id_are_stored_apart(receiver, db):
    url, _config = receiver()
    status, _h, _b = post(url, request(event_xml(42, computer="EX01.contoso.local"),
                                       structured(42, {"param1": "CONTOSO\\copier"},
                                                  computer="ex02", event_id=1020)))
    assert status == 200
    assert [(r[1], r[2]) for r in stored(db)] == [("EX01", 42), ("EX02", 42)]


def test_an_unconfigured_origin_is_dropped_and_counted(receiver, db, caplog):
    url, _config = receiver()
    status, _h, body = post(url, request(event_xml(1, computer="EX99.contoso.local"),
                                         event_xml(2)))
    assert status == 200
    partial = ExportLogsServiceResponse.FromString(body).partial_success
    assert partial.rejected_log_records == 1 and "EX99.contoso.local" in partial.error_message
    assert [r[1] for r in stored(db)] == ["EX01"]
    assert any("EX99.contoso.local" in r.getMessage() for r in caplog.records)


def test_an_unconfigured_origin_can_be_taken_under_its_own_name(receiver, db):
    url, _config = receiver(unconfigured_origins="own_name")
    status, _h, body = post(url, request(event_xml(1, computer="EX99.contoso.local")))
    assert status == 200
    assert ExportLogsServiceResponse.FromString(body).partial_success.rejected_log_records == 0
    assert [r[1] for r in stored(db)] == ["EX99"]


def test_origins_match_fqdn_or_short_name(make_config):
    servers = make_config().servers
    assert Origins(servers, "ignore")("EX01.contoso.local") == "EX01"
    assert Origins(servers, "ignore")("ex02") == "EX02"
    assert Origins(servers, "ignore")("EX01.") == "EX01"
    assert Origins(servers, "ignore")("EX03.contoso.local") is None
    assert Origins(servers, "ignore")("") is None


# --- refusals -----------------------------------------------------------------------------------

def test_a_body_over_the_limit_is_413(receiver, db):
    url, _config = receiver(max_body="64KB")
    big = request(*[event_xml(n) for n in range(1, 400)])
    assert len(big.SerializeToString()) > 64 * 1024
    status, _h, body = post(url, big)
    assert status == 413 and b"bytes" in body
    bomb = gzip.compress(b"\0" * (1024 * 1024))
    assert post(url, bomb, headers={"Content-Encoding": "gzip"})[0] == 413
    assert stored(db) == []


def test_a_wrong_or_missing_token_is_401(receiver, db):
    url, _config = receiver()
    status, headers, _b = post(url, request(event_xml(1)), token="not-the-token")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert post(url, request(event_xml(1)), token=None)[0] == 401
    assert stored(db) == []


def test_malformed_bodies_and_wrong_types_are_4xx(receiver, db):
    url, _config = receiver()
    assert post(url, b"\xff\xff\xff not protobuf")[0] == 400
    assert post(url, b"{not json", "application/json")[0] == 400
    assert post(url, b'{"resourceLogs": 5}', "application/json")[0] == 400
    assert post(url, request(event_xml(1)), "text/plain")[0] == 415
    assert post(url.replace("/v1/logs", "/v1/traces"), request(event_xml(1)))[0] == 404
    assert stored(db) == []


def test_a_database_refusing_writes_is_503_with_retry_after(receiver, db, db_path):
    def full_database():
        conn = open_db(db_path, migrate=False)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")   # SQLite's own "disk is full"
        return conn
    url, _config = receiver(open_database=full_database)
    batch = request(*[event_xml(n, account=f"CONTOSO\\user{n}" + "x" * 200)
                      for n in range(1, 200)])
    status, headers, body = post(url, batch)
    assert status == 503 and int(headers["Retry-After"]) > 0, body
    assert stored(db) == []


# --- end to end ---------------------------------------------------------------------------------

def test_events_through_the_receiver_reach_slack_as_alerts(receiver, db, slack):
    url, config = receiver()
    assert post(url, request(event_xml(500), event_xml(501), event_xml(
        7, computer="EX02.contoso.local", account="CONTOSO\\copier",
        connector="Client Frontend EX02")))[0] == 200
    deliver_once(db, SlackSender.from_config(config.slack, retries=2), config)
    texts = json.dumps(slack.messages(CHANNEL))
    assert "svc-scanner" in texts and "copier" in texts


# --- [otlp] -------------------------------------------------------------------------------------

def test_the_otlp_table(make_config):
    from bot.core.config import ConfigError, OtlpConfig
    assert make_config().otlp == OtlpConfig()            # off by default
    config = make_config(otlp={"port": 4318, "token_env": "T", "max_body": "1MB",
                               "host": "0.0.0.0"}, environ={"T": "s3cr3t-value"})
    assert (config.otlp.port, config.otlp.host, config.otlp.max_body) == (4318, "0.0.0.0",
                                                                          1024 * 1024)
    assert "s3cr3t" not in repr(config.otlp)
    with pytest.raises(ConfigError, match="otlp.token_env"):
        make_config(otlp={"port": 4318})
    with pytest.raises(ConfigError, match="T is not set"):
        make_config(otlp={"port": 4318, "token_env": "T"})
    with pytest.raises(ConfigError, match="otlp.max_body"):
        make_config(otlp={"max_body": "1GB"})
    with pytest.raises(ConfigError, match="otlp"):
        make_config(otlp={"token": "inline"})
