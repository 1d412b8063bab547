"""Row 2, poll sweep: every server polled once by the scheduler's worker pool.

Real pywinrm (NTLM with message encryption) against the simulator in its own process, each
WS-Management request delayed `sweep_delay`, `sweep_events` new events per server. The pool is
the scheduler's: MAX_POLL_WORKERS threads, one SQLite connection per thread.

Floor: servers x one poll's latency / workers, with one poll's latency measured alone in the
same run (the best a pool of that size can do if polls overlapped perfectly).
"""
from __future__ import annotations

import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bot.engine.poller import poll_server_once
from bot.ops.scheduler import MAX_POLL_WORKERS, ThreadDatabases
from bot.sources.winrm import WinRMSource
from store.db import open_db

from .common import Result, Sizes, cpu_seconds, make_config, spread
from .simproc import SimProcess


def run(sizes: Sizes, workdir: Path) -> Result:
    names = [f"EX{i:03d}" for i in range(1, sizes.sweep_servers + 1)]
    db_path = str(workdir / "sweep.db")
    workers = min(MAX_POLL_WORKERS, len(names))
    with SimProcess(names, delay=sizes.sweep_delay) as sim:
        config = make_config(sim.servers(), db_path, "http://127.0.0.1:9/api/")
        open_db(db_path).conn.close()
        dbs = ThreadDatabases(db_path)
        sources = [WinRMSource(server, config.polling) for server in config.servers]
        pool = ThreadPoolExecutor(max_workers=workers)

        def sweep() -> float:
            started = time.perf_counter()
            results = list(pool.map(lambda s: poll_server_once(dbs.get(), s, config), sources))
            seconds = time.perf_counter() - started
            failed = [r.summary() for r in results if r.error]
            if failed:
                raise AssertionError(f"{len(failed)} poll(s) failed, e.g. {failed[0]}")
            return seconds, results

        sweep()  # first contact: every server read from the look-back, cursors set
        # One poll alone, on a quiet machine: the latency the floor is made of.
        singles = []
        single_db = dbs.get()
        for _ in range(max(3, sizes.runs * 2)):
            sim.call("append", names[0], "CONTOSO\\svc-single", sizes.sweep_events)
            started = time.perf_counter()
            result = poll_server_once(single_db, sources[0], config)
            singles.append(time.perf_counter() - started)
            assert result.error is None and result.stored == sizes.sweep_events, result.summary()
        before = sim.call("stats")
        seconds, cpu = [], []
        for _ in range(sizes.runs):
            sim.call("append_each", sizes.sweep_events, "CONTOSO\\svc-{server}")
            bot_cpu, sim_cpu = time.process_time(), cpu_seconds(sim.pid)
            took, results = sweep()
            cpu.append((time.process_time() - bot_cpu, cpu_seconds(sim.pid) - sim_cpu))
            assert all(r.stored == sizes.sweep_events for r in results)
            seconds.append(took)
        after = sim.call("stats")
        pool.shutdown()
    one_poll = statistics.median(singles)
    floor = len(names) * one_poll / workers
    figure = statistics.median(seconds)
    requests = (after["http_requests"] - before["http_requests"]) / (len(names) * sizes.runs)
    return Result(
        2, f"poll sweep, {len(names)} servers, {sizes.sweep_delay * 1000:.0f} ms per request, "
           f"NTLM + encryption, {sizes.sweep_events} new events each",
        spread(seconds) + " s", f"{floor:.2f} s ({len(names)} x {one_poll * 1000:.0f} ms / "
                                f"{workers} workers)",
        figure / floor, "<= 10 s and <= 1.5 x floor",
        figure <= 10 and figure / floor <= 1.5,
        notes=[f"{requests:.1f} HTTP requests per poll; one poll alone "
               f"{spread([s * 1000 for s in singles], '{:.0f}')} ms",
               # The floor counts waiting only. On a small machine the CPU both ends need is a
               # floor too: the bot's and the simulator's CPU seconds over the cores.
               f"CPU per sweep: bot {statistics.median(c[0] for c in cpu):.1f} s, simulator "
               f"{statistics.median(c[1] for c in cpu):.1f} s; CPU floor on "
               f"{os.cpu_count()} cores {statistics.median(sum(c) for c in cpu) / os.cpu_count():.1f} s"],
        data={"seconds": seconds, "one_poll": one_poll, "requests_per_poll": requests,
              "workers": workers})
