"""Row 10, device look-up: the incidents' devices named from one server's SMTP Receive protocol
log (bot.engine.devices `run_lookups`), with real pywinrm against the simulator.

The world, built in the simulator's child process (the 100 MB of files stay there):
`devices_sessions` refused sessions of `devices_accounts` accounts (session i is account
i % accounts, one device each: a printer that retries all day), evenly spread over
`devices_hours` whole UTC hours, each written as Exchange writes it (sim.protocollog.log_refusal: the 1018 event and its
log line in one code path, on Default Frontend, which logs by default), between other clients'
traffic (`write_filler`) that fills each hour's file to just under `devices_file_bytes`. The
world's clock is fixed (START), so the hours never cross midnight and the row reads the same
files whenever it runs. The events are polled into a real SQLite store with `poll_server_once`.

(a) `run_lookups` over and over, the job's clock moved one polling interval (and a second) each
time, as the scheduler runs it, until no incident is due: wall time, runs, and the bytes each read
reports (`LogRead.bytes_read`, from the output the server sent) against the folder's total; then
whether every incident got its device with every session counted. Then one new account's one
refusal in the middle of one hour: which hours its look-up asks for and which files it reads.

(b) The cost to a poll: `poll_server_once` of a second server (its own simulator process, so the
first one's scan of the files never slows its answers) with a few new events, timed alone and
with the look-up job running back to back in a thread of its own (its own connection and WinRM
source, as the scheduler runs it; when nothing is due, it forgets the devices, checks and cursors
in one transaction and starts over), rounds alternated.

Floor: the folder's bytes (every hour holds events, so every byte is read once at the least).
"""
from __future__ import annotations

import multiprocessing
import statistics
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.core.devices import FOUND
from bot.engine import devices
from bot.engine.poller import poll_server_once
from bot.exchange.protocollog import hours_for, parse_read_output
from bot.sources.winrm import WinRMSource
from sim.protocollog import decode_read_command
from store import db as store
from store import devices as device_store
from store.db import open_db, write_transaction

from .common import (
    WINRM_PASSWORD,
    WINRM_USER,
    Result,
    Sizes,
    cpu_seconds,
    make_config,
    percentile,
    spread,
)
from .simproc import SimProcess, answer_commands

#: The world's first hour (a fixed date: the same files, and no midnight, in every run).
START = datetime(2026, 3, 2, tzinfo=UTC)
PORT25 = "Default Frontend EX01"
NEW_ACCOUNT = "CONTOSO\\svc-new"
NEW_ADDRESS = "10.30.0.7"
POLL_EVENTS = 3                    # new events per timed poll in (b)


def world_now(sizes: Sizes) -> datetime:
    """The world's clock: a minute after its last hour ended."""
    return START + timedelta(hours=sizes.devices_hours, minutes=1)


def account(a: int) -> str:
    return f"CONTOSO\\svc-prn{a:03d}"


def address(a: int) -> str:
    return f"10.20.{a // 200}.{a % 200 + 10}"


def plan(sizes: Sizes) -> list[tuple[datetime, int]]:
    """(time, account number) of each refused session, evenly spread over the hours."""
    step = timedelta(hours=sizes.devices_hours) / sizes.devices_sessions
    return [(START + step * (i + 0.5), i % sizes.devices_accounts)
            for i in range(sizes.devices_sessions)]


def build(log, writer, sizes: Sizes) -> None:
    """Each hour's file: filler, a session, filler, ..., up to just under the size bound (so one
    file per hour; filler rows may pass their budget by one row)."""
    from sim.protocollog import log_refusal, receive_file_name

    row = min(8192, max(200, sizes.devices_file_bytes // 1024))
    target = sizes.devices_file_bytes - row - 1024
    by_hour: dict[int, list[tuple[datetime, int]]] = {}
    for when, a in plan(sizes):
        by_hour.setdefault(int((when - START) / timedelta(hours=1)), []).append((when, a))
    for h in range(sizes.devices_hours):
        hour = START + timedelta(hours=h)
        name = receive_file_name(hour)
        sessions = by_hour.get(h, [])
        for j, (when, a) in enumerate(sessions):
            short = target * (j + 1) // (len(sessions) + 1) - len(writer.files.get(name, b""))
            if short > 0:
                writer.write_filler(when - timedelta(seconds=1), short, row_bytes=row)
            log_refusal(log, writer, 1018, account(a), (address(a), 50_000 + j % 10_000),
                        connector=PORT25, time=when)
        short = target - len(writer.files.get(name, b""))
        if short > 0:
            writer.write_filler(hour + timedelta(minutes=59, seconds=59), short, row_bytes=row)
        if len([n for n in writer.files if n.startswith(name[:14])]) != 1:
            raise AssertionError(f"hour {hour:%H} went past one file")


def _serve(conn, sizes: Sizes) -> None:
    """The child: the world built, then one WinRMSimulator serving it (commands over `conn`)."""
    from sim.eventlog import EventLog
    from sim.protocollog import ProtocolLogWriter, log_refusal
    from sim.winrm_server import WinRMSimulator

    now = world_now(sizes)
    log = EventLog("EX01.contoso.local", first_record=1000, now=lambda: now)
    writer = ProtocolLogWriter("EX01")
    started = time.perf_counter()
    build(log, writer, sizes)
    built = time.perf_counter() - started
    sim = WinRMSimulator({"EX01": log}, users={WINRM_USER: WINRM_PASSWORD},
                         protocol_logs={"EX01": writer}).start()

    def folder() -> dict[str, int]:
        with writer.lock:
            return {name: len(data) for name, data in writer.files.items()}

    def refuse(who: str, where: str, when: datetime) -> None:
        log_refusal(log, writer, 1018, who, (where, 61_000), connector=PORT25, time=when)

    commands = {"built": lambda: built, "folder": folder, "refuse": refuse}
    answer_commands(conn, sim.base_url, commands, sim.stop)


class WorldProcess(SimProcess):
    """SimProcess's lifecycle and commands, with the child that builds and serves the world."""

    def __init__(self, sizes: Sizes):
        super().__init__(["EX01"])
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, sizes), name="winrm-simulator",
                                 daemon=True)


class Job:
    """The look-up job as the scheduler runs it: one WinRMSource per server of its own, a
    clock moved by hand. Keeps each read's command and output, and the accounts of the
    incidents due in its run, to be read after the timing."""

    def __init__(self, config, start: datetime, *, record: bool = True):
        self.config, self.now, self.record = config, start, record
        self.sources = {s.name: WinRMSource(s, config.polling) for s in config.servers}
        self.kept: list[tuple[str, list[str], bytes, frozenset[str]]] = []
        self.due: frozenset[str] = frozenset()

    @contextmanager
    def open(self, server):
        with self.sources[server.name].open() as shell:
            yield _Kept(shell, self)

    def run(self, db) -> tuple[int, float]:
        """One run: (incidents due, its seconds)."""
        if self.record:   # the same query run_lookups makes first; outside the timing
            self.due = frozenset(d.account.casefold() for d in device_store.due(
                db, self.now, self.config.polling.interval, devices.LOOKUPS_PER_RUN))
        started = time.perf_counter()
        due = devices.run_lookups(db, self.config, lambda: self.now, self.open, None)
        seconds = time.perf_counter() - started
        self.now += timedelta(seconds=self.config.polling.interval + 1)
        return due, seconds


class _Kept:
    def __init__(self, shell, job: Job):
        self.shell, self.job = shell, job

    def run(self, command: str, args: list[str]) -> tuple[bytes, str | None]:
        output, cut = self.shell.run(command, args)
        self.job.kept.append((command, args, output, self.job.due))
        return output, cut


def reads_of(kept) -> list[dict]:
    """What each read asked for (hours) and what it reported: bytes, files, failure lines and
    how many of them name an account whose incident was not due in that run; where it stopped,
    and the files it read only part of although it said it was done."""
    out = []
    for command, args, output, due in kept:
        read = parse_read_output(output, "EX01")
        out.append({"hours": decode_read_command(command, args).hours,
                    "bytes": read.bytes_read, "stopped": read.stopped,
                    "files": [f.name for f in read.files if f.end > f.start],
                    "lines": len(read.lines),
                    "not_due": sum(ln.user.casefold() not in due for ln in read.lines),
                    "part_read": [f.name for f in read.files if f.end < f.length]
                    if read.stopped is None else []})
    return out


def look_ups(db, job: Job, cap: int) -> tuple[int, float]:
    """run_lookups until nothing is due (or `cap` runs): (runs, seconds)."""
    runs, seconds = 0, 0.0
    while runs < cap:
        due, took = job.run(db)
        seconds += took
        if not due:
            break
        runs += 1
    return runs, seconds


def outcome(db, sizes: Sizes) -> dict[str, object]:
    """Over the world's accounts: incidents, those whose device was named (the right one, and
    only it), those with every session counted, sessions counted and written, look-up states."""
    written: dict[str, int] = {}
    for _, a in plan(sizes):
        written[account(a)] = written.get(account(a), 0) + 1
    incidents = {i.account: i for i in store.open_incidents(db).values()
                 if i.account in written}
    named = whole = counted = 0
    states: dict[str, int] = {}
    for name, incident in incidents.items():
        found = device_store.lookup_of(db, incident.stored_id)
        sessions = sum(d.sessions for d in found.devices)
        right = found.state == FOUND and [d.address for d in found.devices] == [
            address(int(name[-3:]))]
        counted += sessions
        named += right
        whole += right and sessions == written[name]
        states[found.state] = states.get(found.state, 0) + 1
    return {"incidents": len(incidents), "named": named, "whole": whole, "counted": counted,
            "written": sum(written.values()), "states": states}


def timed_polls(db, source, config, sim: SimProcess, count: int) -> list[float]:
    seconds = []
    for _ in range(count):
        sim.call("append", "EX02", "CONTOSO\\svc-poll", POLL_EVENTS)
        started = time.perf_counter()
        result = poll_server_once(db, source, config)
        seconds.append(time.perf_counter() - started)
        if result.error or result.stored != POLL_EVENTS:
            raise AssertionError(result.summary())
    return seconds


class Background:
    """The look-up job back to back in a thread of its own; when nothing is due it forgets
    what it found and starts over, so every timed poll overlaps a look-up."""

    def __init__(self, db_path: str, job: Job):
        self.db_path, self.job = db_path, job
        self.stop_event = threading.Event()
        self.busy = self.cpu = 0.0
        self.runs = self.resets = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            own = open_db(self.db_path, migrate=False)
            while not self.stop_event.is_set():
                cpu = time.thread_time()
                _, took = self.job.run(own)
                self.cpu += time.thread_time() - cpu
                self.busy += took
                self.runs += 1
                if not self.job.kept:      # no read: nothing left to look up
                    with write_transaction(own):
                        for table in ("devices", "device_checks", "protocol_log_cursors"):
                            own.execute(f"DELETE FROM {table}")
                    self.resets += 1
                self.job.kept.clear()
            own.conn.close()
        except BaseException as exc:   # said by the parent, not lost in a thread
            self.error = exc

    def __enter__(self) -> Background:
        self.started = time.perf_counter()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(120)
        self.elapsed = time.perf_counter() - self.started   # the job's last run included


def run(sizes: Sizes, workdir: Path) -> Result:
    db_path = str(workdir / "devices.db")
    hours = sizes.devices_hours
    with WorldProcess(sizes) as world, SimProcess(["EX02"]) as other:
        built = world.call("built")
        folder = world.call("folder")
        config = make_config(world.servers() + other.servers(), db_path,
                             "http://127.0.0.1:9/api/")
        db = open_db(db_path)
        clock = world_now(sizes)
        first = poll_server_once(db, WinRMSource(config.servers[0], config.polling), config,
                                 lambda: clock)
        if first.error or first.stored != sizes.devices_sessions:
            raise AssertionError(first.summary())

        # (a) every incident, from nothing looked up
        job = Job(config, clock)
        cap = 4 * (sizes.devices_accounts // devices.LOOKUPS_PER_RUN + 1) * (hours + 1)
        sim_cpu = cpu_seconds(world.pid)
        runs, seconds = look_ups(db, job, cap)
        sim_cpu = cpu_seconds(world.pid) - sim_cpu
        reads = reads_of(job.kept)
        found = outcome(db, sizes)

        # ... then one new incident in one hour
        middle = START + timedelta(hours=hours // 2, minutes=30)
        world.call("refuse", NEW_ACCOUNT, NEW_ADDRESS, middle)
        polled = poll_server_once(db, WinRMSource(config.servers[0], config.polling), config,
                                  lambda: job.now)
        assert polled.error is None and polled.stored == 1, polled.summary()
        job.kept.clear()
        new_runs, new_seconds = look_ups(db, job, 10)
        new_reads = reads_of(job.kept)
        [new] = [i for i in store.open_incidents(db).values() if i.account == NEW_ACCOUNT]
        new_found = device_store.lookup_of(db, new.stored_id)
        wanted = {f"{h:%Y%m%d%H}" for h in hours_for([middle])}
        only_its_hours = bool(new_reads) and all(
            set(r["hours"]) == wanted and all(f[4:14] in wanted for f in r["files"])
            for r in new_reads)

        # (b) the cost added to a poll of another server
        source = WinRMSource(config.servers[1], config.polling)
        poll_server_once(db, source, config)          # first contact: the cursor is set
        background = Job(config, job.now + timedelta(hours=1), record=False)
        alone, beside, overlap = [], [], []
        for i in range(sizes.runs):
            order = ("alone", "beside") if i % 2 == 0 else ("beside", "alone")
            for kind in order:
                if kind == "alone":
                    alone.append(timed_polls(db, source, config, other, sizes.devices_polls))
                    continue
                with Background(db_path, background) as bg:
                    beside.append(timed_polls(db, source, config, other, sizes.devices_polls))
                if bg.error is not None:
                    raise AssertionError(f"the look-up job failed: {bg.error!r}")
                overlap.append((bg.busy / bg.elapsed, bg.runs, bg.resets, bg.busy, bg.cpu))
        db.conn.close()
    for path in workdir.glob("devices.db*"):
        path.unlink()

    mb = 1024 * 1024
    total = sum(folder.values())
    read_bytes = sum(r["bytes"] for r in reads)
    lines = sum(r["lines"] for r in reads)
    p99_alone = [percentile(s, 99) * 1000 for s in alone]
    p99_beside = [percentile(s, 99) * 1000 for s in beside]
    p50_alone = [statistics.median(s) * 1000 for s in alone]
    p50_beside = [statistics.median(s) * 1000 for s in beside]
    within_noise = statistics.median(p99_beside) <= max(p99_alone)
    job_runs = sum(o[1] for o in overlap)
    run_ms = sum(o[3] for o in overlap) / job_runs * 1000
    cpu_ms = sum(o[4] for o in overlap) / job_runs * 1000
    first_read = reads[0] if reads else {"hours": (), "bytes": 0, "stopped": None}
    part_read = [(n, r["hours"]) for n, r in enumerate(reads, 1) if r["part_read"]]
    states = ", ".join(f"{n} {state}" for state, n in sorted(found["states"].items()))
    incidents, written = found["incidents"], found["written"]
    fmt = "{:.0f}"
    apart = hours * 60 * sizes.devices_accounts / sizes.devices_sessions
    notes = [
        f"world: {len(folder)} files, {total / mb:,.1f} MB, built in {built:.1f} s in the "
        f"simulator's process; {incidents} incidents ({sizes.devices_accounts} accounts, "
        f"{written // max(1, incidents)} sessions each, {apart:g} min apart, over all "
        f"{hours} hours); devices.max_bytes {config.devices.max_bytes // mb} MB per read, "
        f"{devices.LOOKUPS_PER_RUN} incidents and {devices.MAX_HOURS} hours per run",
        f"first run: {len(first_read['hours'])} of the {hours} hours asked for "
        f"({', '.join(h[-2:] for h in first_read['hours'])} h: the oldest), "
        f"{first_read['bytes'] / mb:.1f} MB read, stopped: {first_read['stopped'] or 'done'}",
        f"look-ups: {runs} runs ({len(reads)} reads) in {seconds:.1f} s, the simulator's CPU "
        f"for the reads {sim_cpu:.1f} s; {read_bytes / mb:,.1f} MB read of the folder's "
        f"{total / mb:,.1f} MB; {lines:,} failure lines sent back, "
        f"{sum(r['not_due'] for r in reads):,} of them in a run where their incident was not "
        f"due (their devices named all the same: a read names every open incident's)",
        f"after the look-ups: {states}; the right device named for {found['named']} of "
        f"{incidents} incidents, with every session for {found['whole']}; "
        f"{found['counted']:,} of {written:,} sessions counted",
        f"{len(part_read)} read(s) said done with a file read only in part (the byte bound "
        f"reached inside the last file asked for): runs "
        f"{', '.join(str(n) for n, _ in part_read) or '-'}",
        f"one new incident, one refusal at {middle:%H:%M}: {len(new_reads)} read(s) in "
        f"{new_runs} run(s), {new_seconds:.2f} s, hours asked "
        f"{sorted({h[-2:] for r in new_reads for h in r['hours']})}, files read "
        f"{sorted({f for r in new_reads for f in r['files']})}, "
        f"{sum(r['bytes'] for r in new_reads):,} bytes read; its device: {new_found.state}"
        f"{' ' + new_found.devices[0].address if new_found.devices else ''}",
        f"poll of another server ({POLL_EVENTS} new events), {sizes.devices_polls} polls a "
        f"round: p50 {spread(p50_alone, fmt)} ms alone, {spread(p50_beside, fmt)} ms beside "
        f"the look-ups; p99 {spread(p99_alone, fmt)} ms alone, {spread(p99_beside, fmt)} ms "
        f"beside",
        f"beside: the job ran back to back, in a look-up "
        f"{statistics.median(o[0] for o in overlap):.0%} of the time ({job_runs} runs, "
        f"{sum(o[2] for o in overlap)} start-overs), "
        f"{run_ms:.0f} ms and {cpu_ms:.0f} ms of the bot's CPU a run; the scheduler runs it "
        f"once per polling.interval ({config.polling.interval:g} s), busy "
        f"{run_ms / 1000 / config.polling.interval:.2%} of the time",
    ]
    all_found = found["whole"] == incidents == sizes.devices_accounts
    return Result(
        10, f"device look-up: {written:,} failing sessions over {hours} hours of "
            f"{sizes.devices_file_bytes / mb:g} MB protocol-log files on one server",
        f"{runs} runs, {seconds:.1f} s, {read_bytes / mb:,.1f} MB read; device named for "
        f"{found['named']}/{incidents} incidents, every session for {found['whole']} "
        f"({found['counted']:,}/{written:,} sessions); poll p99 "
        f"{statistics.median(p99_beside):.0f} ms beside back-to-back look-ups vs "
        f"{statistics.median(p99_alone):.0f} ms alone", f"{total / mb:,.1f} MB (the folder)",
        read_bytes / total,
        "every incident's devices found; only the hours of new events read; poll p99 unchanged "
        "within noise", all_found and only_its_hours and within_noise, notes=notes,
        data={"runs": runs, "seconds": seconds, "reads": reads, "read_bytes": read_bytes,
              "folder_bytes": total, "files": len(folder), "found": found,
              "new_reads": new_reads, "new_state": new_found.state,
              "only_its_hours": only_its_hours, "alone": alone, "beside": beside,
              "overlap": overlap, "p99_alone": p99_alone, "p99_beside": p99_beside})
