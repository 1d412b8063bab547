"""Row 11, OTLP ingest: events through the OTLP/HTTP receiver, and from a push to a Slack post.

Throughput: the receiver (bot.app.serve_otlp, its own listener and threads) runs in this
process; one client on loopback posts `ExportLogsServiceRequest`s of 100 records each (raw
event XML, the preferred shape; built with opentelemetry-proto's own classes), one request
after the other, over HTTP/1.0 as the listener speaks it. Each answer comes after the batch's
write transaction committed, so a request's time is the time from request to stored. The
floor parses the same payloads in process (`bot.sources.otlp.decode`: protobuf, then each
record's XML): no HTTP, no database.

Event to Slack: a real `submitwatch run` (Socket Mode against the Slack stand-in, servers in
the WS-Management simulator polled once a minute) with [otlp] on; single events, each a new
account (a new alert), posted at random (seeded Poisson) moments; the client stamps each
request with time.time() before it is sent and the stand-in stamps each chat.postMessage. The
poll interval is far above the target on purpose: a pushed event wakes delivery (`on_stored`),
so it must not wait for a poll.
"""
from __future__ import annotations

import http.client
import os
import random
import re
import socket
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.core.config import parse_config
from bot.sources import otlp
from bot.sources.origins import Origins
from sim.eventlog import SimEvent, event_xml
from sim.slack_api import SlackStandIn

from .common import (
    APP_TOKEN,
    BOT_TOKEN,
    CHANNEL,
    QUICK,
    Result,
    Sizes,
    environ,
    percentile,
    raw_config,
    spread,
)
from .ingest import server_events
from .runproc import RunProcess
from .simproc import SimProcess

TOKEN_ENV = "SUBMITWATCH_OTLP_TOKEN"
TOKEN = "otlp-bench-0123456789"
FE = "MSExchangeFrontEndTransport"
_ACCOUNT = re.compile(r"CONTOSO\\otlp-\d{5}")


@dataclass(frozen=True)
class OtlpSizes:
    events: int            # through the receiver, per run
    batch: int             # records per request
    servers: int
    accounts: int
    latency_events: int    # single events pushed to a running `submitwatch run`
    latency_rate: float    # of them per second (Poisson)
    poll_interval: float   # polling.interval of that run: far above the 2 s target


FULL_SIZES = OtlpSizes(events=20_000, batch=100, servers=10, accounts=50, latency_events=100,
                       latency_rate=2.0, poll_interval=60.0)
QUICK_SIZES = OtlpSizes(events=1_000, batch=100, servers=2, accounts=5, latency_events=5,
                        latency_rate=5.0, poll_interval=30.0)


def sizes_for(sizes: Sizes) -> OtlpSizes:
    return QUICK_SIZES if sizes == QUICK else FULL_SIZES


def payload(events: list[SimEvent]) -> bytes:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
    records = [LogRecord(body=AnyValue(string_value=event_xml(e))) for e in events]
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(
        log_records=records)])]).SerializeToString()


def make_payloads(os_: OtlpSizes, now: datetime) -> list[bytes]:
    """The requests: `events` events over `servers` servers and `accounts` accounts, a third
    of them 1018 (with a connector), in batches of `batch` records, each batch one origin's
    (as a Collector on each server sends them)."""
    per_server = os_.events // os_.servers
    start = now - timedelta(hours=1)
    payloads = []
    for s in range(os_.servers):
        events = server_events(f"EX{s + 1:02d}", per_server, os_.accounts, s, start)
        payloads += [payload(events[j:j + os_.batch]) for j in range(0, per_server, os_.batch)]
    return payloads


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(port: int, body: bytes, timeout: float = 30.0) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/v1/logs", body=body, headers={
            "Content-Type": "application/x-protobuf", "Authorization": f"Bearer {TOKEN}"})
        answer = connection.getresponse()
        answer.read()
        return answer.status
    finally:
        connection.close()


def _config(os_: OtlpSizes, db_path: str, port: int, slack_api: str, servers=None, **tables):
    servers = servers or [(f"EX{i:02d}", f"http://127.0.0.1:9/EX{i:02d}/wsman")
                          for i in range(1, os_.servers + 1)]
    raw = raw_config(servers, db_path, slack_api,
                     otlp={"port": port, "token_env": TOKEN_ENV}, **tables)
    return raw, parse_config(raw, {**environ(), TOKEN_ENV: TOKEN})


def through_receiver(payloads: list[bytes], os_: OtlpSizes, db_path: str) -> tuple[float,
                                                                                  list[float]]:
    """(events per second, seconds per request) through a running receiver."""
    from bot.app import serve_otlp
    from store.db import open_db

    open_db(db_path).conn.close()                     # the schema, as `run` creates it
    _raw, config = _config(os_, db_path, free_port(), "http://127.0.0.1:9/api/")
    server = serve_otlp(config)
    try:
        seconds = []
        started = time.perf_counter()
        for body in payloads:
            t0 = time.perf_counter()
            status = post(server.server_port, body)
            seconds.append(time.perf_counter() - t0)
            if status != 200:
                raise AssertionError(f"the receiver answered {status}")
        total = time.perf_counter() - started
        again = post(server.server_port, payloads[0])   # a repeated delivery: stored once
    finally:
        server.shutdown()
        server.server_close()
    db = open_db(db_path, migrate=False)
    counts = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("events", "incidents", "outbox")}
    db.conn.close()
    expected = os_.servers * (os_.events // os_.servers)
    if again != 200 or counts["events"] != expected or not counts["outbox"]:
        raise AssertionError(f"the receiver stored {counts}, expected {expected} events")
    return expected / total, seconds


def in_process(payloads: list[bytes], os_: OtlpSizes, db_path: str) -> tuple[float, float]:
    """(events/s decoding alone: the floor, events/s decoding and storing without HTTP)."""
    from bot.engine.poller import ingest
    from store.db import open_db, write_transaction

    _raw, config = _config(os_, db_path, free_port(), "http://127.0.0.1:9/api/")

    origin_of = Origins(config.servers, "ignore")
    started = time.perf_counter()
    decoded = [otlp.decode(body, "application/x-protobuf", origin_of) for body in payloads]
    decode_s = time.perf_counter() - started
    n = sum(len(d.events) for d in decoded)
    db = open_db(db_path)
    started = time.perf_counter()
    for body in payloads:
        events = otlp.decode(body, "application/x-protobuf", origin_of).events
        with write_transaction(db):
            ingest(db, config, events, 0, datetime.now(UTC))
    store_s = time.perf_counter() - started
    db.conn.close()
    return n / decode_s, n / store_s


def event_to_slack(os_: OtlpSizes, workdir: Path) -> list[float]:
    """Seconds from each pushed event's request to its alert's chat.postMessage."""
    names = [f"EX{i:02d}" for i in range(1, 3)]
    port = free_port()
    with SlackStandIn(bot_token=BOT_TOKEN, app_token=APP_TOKEN, channels=(CHANNEL,)) as slack, \
            SimProcess(names) as sim:
        raw, _config_ = _config(os_, str(workdir / "otlp-latency.db"), port, slack.api_url,
                                servers=sim.servers(), slack={"mode": "socket"},
                                polling={"interval": f"{os_.poll_interval:g}s", "jitter": "0s"},
                                incidents={"storm_threshold": 0})
        previous = os.environ.get(TOKEN_ENV)
        os.environ[TOKEN_ENV] = TOKEN       # RunProcess passes this process's environment on
        try:
            with RunProcess(raw, workdir, "otlp-latency") as run:
                run.wait_polled(len(names), timeout=60)
                sent = _push(os_, port, names)
                deadline = time.monotonic() + 30
                posted: dict[str, float] = {}
                while time.monotonic() < deadline and len(posted) < len(sent):
                    for call in slack.calls_to("chat.postMessage"):
                        match = _ACCOUNT.search(str(call.params.get("text", "")))
                        if call.ok and match and match.group() in sent:
                            posted.setdefault(match.group(), call.at)
                    time.sleep(0.1)
        finally:
            if previous is None:
                os.environ.pop(TOKEN_ENV, None)
            else:
                os.environ[TOKEN_ENV] = previous
    missing = set(sent) - set(posted)
    if missing:
        raise AssertionError(f"{len(missing)} pushed event(s) never reached Slack")
    return [posted[account] - at for account, at in sent.items()]


def _push(os_: OtlpSizes, port: int, names: list[str]) -> dict[str, float]:
    """Single events at seeded Poisson moments; account -> time.time() before its request."""
    rng = random.Random(1101)
    sent: dict[str, float] = {}
    now = datetime.now(UTC)
    for i in range(os_.latency_events):
        time.sleep(rng.expovariate(os_.latency_rate))
        name = names[i % len(names)]
        account = f"CONTOSO\\otlp-{i:05d}"
        body = payload([SimEvent(500_000 + i, FE, 1020, now, (account,),
                                 f"{name}.contoso.local")])
        sent[account] = time.time()
        status = post(port, body)
        if status != 200:
            raise AssertionError(f"the receiver answered {status}")
    return sent


def run(sizes: Sizes, workdir: Path) -> Result:
    os_ = sizes_for(sizes)
    payloads = make_payloads(os_, datetime.now(UTC))
    rates, floors, stores, requests = [], [], [], []
    for i in range(sizes.runs):
        order = ("figure", "floor") if i % 2 == 0 else ("floor", "figure")
        for kind in order:
            path = str(workdir / f"otlp-{kind}-{i}.db")
            if kind == "figure":
                rate, seconds = through_receiver(payloads, os_, path)
                rates.append(rate)
                requests += seconds
            else:
                floor_rate, store_rate = in_process(payloads, os_, path)
                floors.append(floor_rate)
                stores.append(store_rate)
            for suffix in ("", "-wal", "-shm"):
                Path(path + suffix).unlink(missing_ok=True)
    latencies = event_to_slack(os_, workdir)
    figure, floor = statistics.median(rates), statistics.median(floors)
    p99_request = percentile(requests, 99)
    p50_slack, p99_slack = statistics.median(latencies), percentile(latencies, 99)
    n = os_.servers * (os_.events // os_.servers)
    return Result(
        11, f"OTLP ingest: {n:,} events in batches of {os_.batch}, one client on loopback; "
            f"event to Slack, poll interval {os_.poll_interval:g} s",
        f"{spread(rates, '{:,.0f}')} events/s; request to stored p99 {p99_request * 1000:.0f} "
        f"ms; event to Slack p50 {p50_slack:.2f} s / p99 {p99_slack:.2f} s",
        f"{spread(floors, '{:,.0f}')} events/s (decode alone, in process)", figure / floor,
        "p99 event to Slack <= 2 s (any poll interval)", p99_slack <= 2.0,
        notes=[f"in process without HTTP, decode and store (ingest, one write transaction a "
               f"batch): {statistics.median(stores):,.0f} events/s",
               f"request to stored over {len(requests)} requests of {os_.batch} events: p50 "
               f"{statistics.median(requests) * 1000:.0f} ms, p99 {p99_request * 1000:.0f} ms, "
               f"max {max(requests) * 1000:.0f} ms",
               f"event to Slack: {len(latencies)} single events at {os_.latency_rate:g}/s "
               f"(Poisson), each a new account: p50 {p50_slack:.2f} s, p99 {p99_slack:.2f} s, "
               f"max {max(latencies):.2f} s"],
        data={"events": n, "rates": rates, "floors": floors, "stores": stores,
              "requests": requests, "latencies": latencies})
