"""Row 4, chat: the `/submitwatch history|show|status` handlers on a big database.

A real SQLite file (the bot's own schema, from its migrations) is filled fast with executemany:
`chat_events` events in `chat_incidents` incidents over 10 servers and the last 30 days. Then
each handler function that builds the reply (handlers.lookups: parse the words, query, render
Block Kit) is called directly, as Bolt would call it, with varied arguments.

Floor: one bare indexed SELECT of the rows each command shows.
"""
from __future__ import annotations

import json
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from store.db import iso, open_db

from .common import Result, Sizes, make_config, percentile

SERVERS = [f"EX{i:02d}" for i in range(1, 11)]


def build(db_path: str, sizes: Sizes, now: datetime) -> None:
    db = open_db(db_path)
    db.execute("PRAGMA synchronous = OFF")  # building test data only; the handlers read it
    rng = random.Random(4)
    per = sizes.chat_events // sizes.chat_incidents
    accounts = max(1, sizes.chat_incidents // 2)  # two incidents per account: one old, one newer
    incidents, events = [], []
    event_id = 0
    records = {s: 1000 for s in SERVERS}
    for i in range(sizes.chat_incidents):
        account = f"CONTOSO\\svc-{i % accounts:05d}"
        older = i < accounts
        last = now - timedelta(days=rng.uniform(15, 30) if older else rng.uniform(0, 14))
        first = last - timedelta(hours=rng.uniform(1, 48))
        servers = rng.sample(SERVERS, 2)
        status = "resolved" if older or i % 4 == 0 else "open"
        incidents.append((i + 1, account.casefold(), account, status, "C0ALERTS",
                          f"{1700000000 + i}.000100", iso(first), iso(last), per,
                          json.dumps([[s, s] for s in servers]),
                          json.dumps([f"{servers[0]}\\Client Frontend {servers[0]}"]),
                          "[1018, 1020]", iso(first), iso(last) if status == "resolved" else None,
                          iso(last)))
        step = (last - first) / per
        for k in range(per):
            event_id += 1
            server = servers[k % 2]
            records[server] += 1
            events.append((event_id, server, 0, records[server], "MSExchangeFrontEndTransport",
                           1018 if k % 3 == 0 else 1020, iso(first + step * k), account,
                           account.casefold(),
                           f"{server}\\Client Frontend {server}" if k % 3 == 0 else None,
                           f"{server}.contoso.local", i + 1, iso(now)))
    db.execute("BEGIN")
    db.conn.executemany(
        "INSERT INTO incidents (id, key, account, status, channel, message_ts, first_seen, "
        "last_seen, event_count, servers, connectors, event_ids, opened_at, resolved_at, "
        "last_message_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", incidents)
    db.conn.executemany(
        "INSERT INTO events (id, server, origin, generation, record_id, provider, event_id, "
        "time, account, account_key, connector, computer, incident_id, stored_at) "
        "VALUES (?1,?2,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)", events)
    for server, record in records.items():
        db["server_state"].insert({"server": server, "generation": 0, "cursor": record,
                                   "last_poll_at": iso(now), "last_success_at": iso(now),
                                   "consecutive_failures": 0, "events_stored": 0},
                                  pk="server", alter=True)
    db.execute("COMMIT")
    db.execute("ANALYZE")
    db.conn.close()


def _timed(calls) -> list[float]:
    out = []
    for call in calls:
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1000)
    return out


def run(sizes: Sizes, workdir: Path) -> Result:
    from handlers import lookups
    from handlers.common import Request

    now = datetime.now(UTC)
    db_path = str(workdir / "chat.db")
    started = time.perf_counter()
    build(db_path, sizes, now)
    build_s = time.perf_counter() - started
    config = make_config([(s, f"http://127.0.0.1:9/{s}/wsman") for s in SERVERS], db_path,
                         "http://127.0.0.1:9/api/")
    db = open_db(db_path, migrate=False)
    req = Request(db=db, config=config, now=now, user_id="U0BENCH", channel_id="C0ALERTS")
    rng = random.Random(5)
    accounts = max(1, sizes.chat_incidents // 2)
    n = sizes.chat_calls

    def account() -> str:
        return f"CONTOSO\\svc-{rng.randrange(accounts):05d}"

    commands = {
        "history": (lambda: lookups.history(req, []),
                    lambda: db.execute("SELECT * FROM incidents WHERE last_seen >= ? ORDER BY "
                                       "last_seen DESC LIMIT 20",
                                       [iso(now - timedelta(days=7))]).fetchall()),
        "history ACCOUNT": (lambda: lookups.history(req, [account()]),
                            lambda: db.execute("SELECT * FROM events WHERE account_key = ? "
                                               "ORDER BY time DESC LIMIT 20",
                                               [account().casefold()]).fetchall()),
        "show": (lambda: lookups.show_incident(req, [f"#{rng.randrange(1, sizes.chat_incidents)}"]),
                 lambda: db.execute("SELECT * FROM events WHERE incident_id = ? ORDER BY id DESC "
                                    "LIMIT 20", [rng.randrange(1, sizes.chat_incidents)]
                                    ).fetchall()),
        "status": (lambda: lookups.status(req, []),
                   lambda: db.execute("SELECT * FROM server_state").fetchall()),
    }
    figures, worst = {}, None
    for name, (handler, bare) in commands.items():
        handler(), bare()  # warm the page cache, as a running bot's is
        times, floors = [], []
        for _ in range(sizes.runs):
            times += _timed([handler] * n)
            floors += _timed([bare] * n)
        figures[name] = (statistics.median(times), percentile(times, 95),
                         statistics.median(floors), percentile(floors, 95))
        if worst is None or figures[name][1] > figures[worst][1]:
            worst = name
    db.conn.close()
    p50, p95, f50, f95 = figures[worst]
    notes = [f"`{name}`: p50 {a:.1f} ms, p95 {b:.1f} ms; bare SELECT p50 {c:.2f} ms, "
             f"p95 {d:.2f} ms" for name, (a, b, c, d) in figures.items()]
    notes.append(f"database of {sizes.chat_events:,} events / {sizes.chat_incidents:,} incidents "
                 f"built in {build_s:.0f} s; {n} calls x {sizes.runs} run(s) per command")
    return Result(
        4, f"chat handlers, {sizes.chat_events:,} events, {sizes.chat_incidents:,} incidents "
           f"(slowest: `{worst}`)",
        f"p50 {p50:.1f} ms / p95 {p95:.1f} ms", f"p50 {f50:.2f} ms / p95 {f95:.2f} ms",
        p95 / f95 if f95 else None, "p95 <= 50 ms", all(v[1] <= 50 for v in figures.values()),
        notes=notes, data={"figures": figures})
