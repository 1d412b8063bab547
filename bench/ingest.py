"""Row 1, ingest: wevtutil XML text -> parsed, stored, grouped into incidents, outbox rows written.

The figure runs the poll's own steps (`parse_events`, then `_store_batch`: events, incidents,
outbox rows and the cursor in one transaction per batch) over the text a poll returns, in
batches of the default `polling.batch_size`. No network: rows 2, 3 and 5 cover that.

The floor does the least any ingest must: parse the same text with defusedxml's ElementTree
(the parser the issue names) and insert the same rows with one `executemany` per batch into the
same schema, with the same durability settings (WAL, synchronous=FULL, a commit per batch).
"""
from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import defusedxml.ElementTree as SafeET

from bot.core.config import PollingConfig
from bot.engine.poller import _store_batch
from bot.sources.parse import LogInfo, parse_events
from sim.eventlog import SimEvent, event_xml
from store import db as store
from store.db import iso, open_db, write_transaction

from .common import Result, Sizes, make_config, spread

NS = "{http://schemas.microsoft.com/win/2004/08/events/event}"
PROVIDERS = ("MSExchangeFrontEndTransport", "MSExchangeTransport")


def server_events(name: str, count: int, accounts: int, offset: int, start: datetime
                  ) -> list[SimEvent]:
    """One server's `count` events over `accounts` accounts (spread by `offset`), 20 ms apart
    from `start`: a third 1018 (with a connector), the rest 1020 from both providers. The mix
    rows 1 and 11 share."""
    events = []
    for i in range(count):
        account = f"CONTOSO\\svc-app{(i * 7 + offset) % accounts:03d}"
        when = start + timedelta(milliseconds=i * 20)
        if i % 3 == 0:
            data: tuple[str, ...] = (account, f"{name}\\Client Frontend {name}")
            events.append(SimEvent(1000 + i, PROVIDERS[0], 1018, when, data,
                                   f"{name}.contoso.local"))
        else:
            events.append(SimEvent(1000 + i, PROVIDERS[i % 2], 1020, when, (account,),
                                   f"{name}.contoso.local"))
    return events


def make_batches(sizes: Sizes, now: datetime) -> list[tuple[str, str, int]]:
    """(server, wevtutil output, last record id) per round trip: every server's events over
    `ingest_accounts` accounts, a third of them 1018 (with a connector), the rest 1020."""
    batch_size = PollingConfig().batch_size
    per_server = sizes.ingest_events // sizes.ingest_servers
    start = now - timedelta(hours=1)
    batches = []
    for s in range(sizes.ingest_servers):
        name = f"EX{s + 1:02d}"
        events = server_events(name, per_server, sizes.ingest_accounts, s, start)
        for j in range(0, per_server, batch_size):
            chunk = events[j:j + batch_size]
            text = "<Events>" + "".join(event_xml(e) + "\r\n" for e in chunk) + "</Events>\r\n"
            batches.append((name, text, chunk[-1].record_id))
    return batches


def pipeline(batches, db_path: str, sizes: Sizes, now: datetime) -> float:
    """Seconds for the whole ingest, the way `_poll` runs it batch after batch."""
    servers = sorted({name for name, _, _ in batches})
    config = make_config([(n, f"http://127.0.0.1:9/{n}/wsman") for n in servers], db_path,
                         "http://127.0.0.1:9/api/")
    db = open_db(db_path)
    info = LogInfo(record_count=10**6, oldest_record=1)
    started = time.perf_counter()
    for name, text, last in batches:
        state = store.server_state(db, name)
        batch = parse_events(text, name)
        _store_batch(db, config, state, batch.events, batch.problems, state.generation, last,
                     info, now)
    seconds = time.perf_counter() - started
    counts = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("events", "incidents", "outbox", "problems")}
    db.conn.close()
    expected = len(servers) * (sizes.ingest_events // sizes.ingest_servers)
    if counts["events"] != expected or counts["problems"] or not counts["outbox"]:
        raise AssertionError(f"ingest stored {counts}, expected {expected} events")
    return seconds


def floor(batches, db_path: str) -> tuple[float, float]:
    """(parse seconds, insert seconds): defusedxml alone, then executemany alone."""
    parse_s = insert_s = 0.0
    db = open_db(db_path)
    stamp = iso(datetime.now(UTC))
    for name, text, _ in batches:
        t0 = time.perf_counter()
        rows = []
        for ev in SafeET.fromstring(text):
            system = ev.find(NS + "System")
            data = [d.text for d in ev.iter(NS + "Data")]
            rows.append((name, 0, int(system.find(NS + "EventRecordID").text),
                         system.find(NS + "Provider").get("Name"),
                         int(system.find(NS + "EventID").text),
                         system.find(NS + "TimeCreated").get("SystemTime"), data[0],
                         data[0].casefold(), data[1] if len(data) > 1 else None,
                         system.find(NS + "Computer").text, stamp))
        t1 = time.perf_counter()
        with write_transaction(db):
            db.conn.executemany(
                "INSERT INTO events (server, origin, generation, record_id, provider, "
                "event_id, time, account, account_key, connector, computer, stored_at) "
                "VALUES (?1,?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)", rows)
        t2 = time.perf_counter()
        parse_s += t1 - t0
        insert_s += t2 - t1
    db.conn.close()
    return parse_s, insert_s


def run(sizes: Sizes, workdir: Path) -> Result:
    now = datetime.now(UTC)
    batches = make_batches(sizes, now)
    n = sum(text.count("<Event ") for _, text, _ in batches)
    rates, floors, parse_rates, insert_rates = [], [], [], []
    for i in range(sizes.runs):
        # Alternate the order so neither side always runs on a warmer (or busier) machine.
        measure = [("figure", i), ("floor", i)] if i % 2 == 0 else [("floor", i), ("figure", i)]
        for kind, _ in measure:
            path = str(workdir / f"ingest-{kind}-{i}.db")
            if kind == "figure":
                rates.append(n / pipeline(batches, path, sizes, now))
            else:
                parse_s, insert_s = floor(batches, path)
                floors.append(n / (parse_s + insert_s))
                parse_rates.append(n / parse_s)
                insert_rates.append(n / insert_s)
            for suffix in ("", "-wal", "-shm"):
                Path(path + suffix).unlink(missing_ok=True)
    figure, floor_rate = statistics.median(rates), statistics.median(floors)
    ratio = figure / floor_rate
    return Result(
        1, f"ingest {n:,} events, {sizes.ingest_accounts} accounts, {sizes.ingest_servers} servers",
        spread(rates, "{:,.0f}") + " events/s", spread(floors, "{:,.0f}") + " events/s", ratio,
        ">= 25,000 events/s and >= 0.70 of floor", figure >= 25_000 and ratio >= 0.70,
        notes=[f"floor parts: defusedxml parse {statistics.median(parse_rates):,.0f} events/s, "
               f"executemany insert {statistics.median(insert_rates):,.0f} events/s"],
        data={"events": n, "rates": rates, "floors": floors})
