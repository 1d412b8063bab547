"""Reliability, round 2 (docs/reliability.md): durations in range, quiet logs, private files,
racing first starts."""
from __future__ import annotations

from datetime import UTC

import pytest

from handlers.commands import answer
from handlers.common import Request
from tests.helpers import NOW, lookup_config


@pytest.mark.parametrize("text", ["snooze CONTOSO\\x 99999999999d why",
                                  "history --since 99999999999999d",
                                  "snooze CONTOSO\\x " + "9" * 400 + "d why"])
def test_huge_durations_get_the_allowed_range_not_a_traceback(db, text):
    reply = answer(Request(db=db, config=lookup_config(), now=NOW, user_id="U0ALICE",
                           channel_id="C0ALERTS"), text)
    assert "too long: durations go up to `3650d` (ten years)" in reply.text, reply.text
    assert "Sorry" not in reply.text


# --- files readable by their owner only; a backup never follows a planted link ------------------

def mode(path):
    return path.stat().st_mode & 0o777


def test_the_database_and_its_wal_are_created_for_the_owner_only(tmp_path):
    from store.db import open_db, write_transaction
    path = tmp_path / "sw.db"
    db = open_db(path)
    with write_transaction(db):
        db.execute("INSERT INTO problems (server, at, kind, detail) VALUES ('x', 'y', 'z', 'w')")
    assert mode(path) == 0o600
    assert mode(tmp_path / "sw.db-wal") == 0o600 and mode(tmp_path / "sw.db-shm") == 0o600
    db.conn.close()


def test_a_backup_is_private_and_never_writes_through_a_planted_symlink(tmp_path):
    from store.db import StoreError, backup, open_db
    source = tmp_path / "sw.db"
    open_db(source).conn.close()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me", encoding="utf-8")
    target = tmp_path / "copy.db"
    (tmp_path / "copy.db.partial").symlink_to(victim)       # what the old code wrote through
    backup(source, target)
    assert victim.read_text(encoding="utf-8") == "keep me"
    assert mode(target) == 0o600 and not target.is_symlink()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == [
        "copy.db.partial"]                                     # no copy left behind
    linked = tmp_path / "linked.db"
    linked.symlink_to(tmp_path / "nowhere.db")                 # a dangling link as the target
    with pytest.raises(StoreError, match="already exists"):
        backup(source, linked)
    assert not (tmp_path / "nowhere.db").exists()


# --- two processes creating the same new database at the same moment -----------------------------

def _open_when_released(path, barrier, results):
    from store.db import open_db
    barrier.wait()
    try:
        open_db(path).conn.close()
        results.put("ok")
    except Exception as exc:  # reported to the test, which shows it
        results.put(f"{type(exc).__name__}: {exc}")


def test_processes_racing_to_create_a_new_database_all_succeed(tmp_path):
    import multiprocessing

    from store.db import open_db
    context = multiprocessing.get_context("fork")
    outcomes = []
    for round_ in range(6):
        path = tmp_path / f"race{round_}.db"
        barrier, results = context.Barrier(4), context.Queue()
        workers = [context.Process(target=_open_when_released, args=(path, barrier, results))
                   for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        outcomes += [results.get(timeout=5) for _ in workers]
        applied = open_db(path).execute("SELECT count(*), count(DISTINCT name) FROM "
                                        "_sqlite_migrations").fetchone()
        assert applied[0] == applied[1] >= 8     # each migration applied exactly once
    assert outcomes == ["ok"] * len(outcomes), [o for o in outcomes if o != "ok"]


# --- the clock stepped back: polling must not stop silently --------------------------------------

def test_a_clock_stepped_back_an_hour_does_not_stop_polling_and_slack_hears_it_once(
        logs, db, make_config, slack, clock):
    import time as real_time
    from datetime import datetime, timedelta

    from bot.engine.delivery import deliver_once
    from bot.ops.scheduler import build_scheduler
    from bot.slack.sender import SlackSender
    from store import db as store
    from tests.conftest import CHANNEL
    config = make_config(servers=("EX01",), polling={"interval": "60s", "jitter": 0})
    monotonic = [1000.0]
    background = build_scheduler(config, SlackSender.from_config(config.slack),
                                 monotonic=lambda: monotonic[0])
    background.jobs.start()
    try:
        def polls():
            return store.server_state(db, "EX01").last_poll_at
        deadline = real_time.monotonic() + 20
        while polls() is None and real_time.monotonic() < deadline:
            real_time.sleep(0.05)
        first = polls()
        assert first is not None
        # What APScheduler holds after NTP stepped the clock back an hour: the next run an
        # hour ahead of the wall clock. Without the watchdog it sleeps that hour.
        background.jobs.modify_job("poll:EX01", next_run_time=datetime.now(UTC)
                                   + timedelta(hours=1))
        monotonic[0] += 121                               # two intervals and a second later
        assert background.watchdog.check() == ["poll EX01",   # housekeeping's 30 s too
                                                "housekeeping (quiet incidents, snoozes)"]
        deadline = real_time.monotonic() + 20
        while polls() == first and real_time.monotonic() < deadline:
            real_time.sleep(0.05)
        assert polls() != first                           # polled again, at once
        job = background.jobs.get_job("poll:EX01")
        assert job.next_run_time - datetime.now(UTC) <= timedelta(seconds=61)
        monotonic[0] += 10
        assert background.watchdog.check() == []          # on time again
    finally:
        background.jobs.shutdown(wait=True)
    clock.advance(seconds=30)                             # the test's clock began earlier
    sent = deliver_once(db, SlackSender.from_config(config.slack), config, clock)
    assert sent.failed == 0
    [notice] = [m for m in slack.messages(CHANNEL) if "could not poll on time" in m["text"]]
    assert "poll EX01" in notice["text"] and "stepped back" in notice["text"]


def test_a_later_late_episode_is_told_again_but_one_episode_only_once(db, make_config):
    from bot.ops.watchdog import Watchdog
    from store import db as store

    class Jobs:   # the scheduler's one method the watchdog calls
        def __init__(self):
            self.moved = []

        def modify_job(self, job_id, next_run_time):
            self.moved.append(job_id)

    monotonic = [0.0]
    jobs = Jobs()
    dog = Watchdog(jobs, lambda: db, monotonic=lambda: monotonic[0])
    dog.watch("poll:EX01", "poll EX01", 60, 5)
    monotonic[0] = 124
    assert dog.check() == []                              # 2 x 60 + 5 s allowed
    monotonic[0] = 126
    assert dog.check() == ["poll EX01"] and jobs.moved == ["poll:EX01"]
    monotonic[0] = 300                                    # still not started: repaired again,
    assert dog.check() == ["poll EX01"]                   # but not told again
    dog.wrap("poll:EX01", lambda: None)()                 # it ran
    monotonic[0] = 310
    assert dog.check() == []
    monotonic[0] = 600
    assert dog.check() == ["poll EX01"]                   # a new episode: told again
    rows = [r for r in store.pending_messages(db, __import__("datetime").datetime.max.replace(
        tzinfo=__import__("datetime").timezone.utc)) if r.kind == "bot_late"]
    assert len(rows) == 2 and rows[0].detail["jobs"] == ["poll EX01"]


def test_a_backoff_set_before_the_clock_stepped_back_does_not_slip_by_the_step(
        logs, db, make_config, slack, clock):
    from datetime import timedelta

    from store import db as store
    from tests.conftest import CHANNEL
    from tests.helpers import scanner, sweep
    config = make_config(servers=("EX01",))
    slack.set_down(True)
    scanner(logs["EX01"], 1)
    sweep(db, config, clock)                  # the post fails: retried 5 s later (wall clock)
    [row] = store.pending_messages(db, clock())
    assert row.not_before - clock() == timedelta(seconds=5)
    slack.set_down(False)
    clock.advance(hours=-1)                   # NTP steps the clock back an hour
    _, delivery = sweep(db, config, clock)
    assert delivery.sent == 1 and len(slack.messages(CHANNEL)) == 1


# --- a stop is prompt whatever hangs --------------------------------------------------------------

@pytest.mark.parametrize("what", ["winrm", "slack"])
def test_sigterm_stops_within_docker_stops_ten_seconds_whatever_hangs(tmp_path, logs, winrm,
                                                                      slack, what):
    import os
    import signal
    import subprocess
    import time

    from tests.helpers import ENV, EXE, FE, ROOT, free_port, write_config
    logs["EX01"].append(FE, 1020, ("CONTOSO\\svc-scanner",))
    if what == "winrm":
        winrm.inject("EX01", "hang", times=None, seconds=120)
    else:
        slack.slow("chat.postMessage", 120)
    config = write_config(tmp_path, slack, winrm, mode="http", http_port=free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "WINRM_"))}
    env.update(ENV, SLACK_SIGNING_SECRET="s3cret", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(EXE + ["run", "--config", str(config)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if what == "winrm":
            deadline = time.monotonic() + 30
            while winrm.pending_faults("EX01") == ["hang"] and \
                    winrm.stats("EX01").http_requests == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
        else:   # the stand-in records a call when it answers: wait for the poll and the post
            time.sleep(4)
        time.sleep(0.5)                              # the call is under way, and hangs
        proc.send_signal(signal.SIGTERM)
        asked = time.monotonic()
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - asked
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert took < 10, (took, err[-2000:])           # the hang is 120 s
    assert "stopped" in err


# --- a full disk: said once, nothing lost, recovers by itself ------------------------------------

def test_a_full_disk_is_said_once_in_words_and_storing_resumes_by_itself(
        logs, db, make_config, slack, caplog):
    import logging

    from bot.ops.scheduler import DiskAlarm, poll_and_wake
    from bot.slack.sender import SlackSender
    from bot.sources.winrm import WinRMSource
    from store import db as store
    from tests.conftest import CHANNEL
    from tests.helpers import scanner
    config = make_config(servers=("EX01",))
    source = WinRMSource(config.servers[0], config.polling)
    alarm = DiskAlarm(SlackSender.from_config(config.slack), CHANNEL)
    wakes = []
    poll_and_wake(lambda: wakes.append(1), db, source, config, alarm)   # schema in place
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")   # SQLite's own "database or disk is full"
    scanner(logs["EX01"], 200)
    caplog.set_level(logging.DEBUG, logger="submitwatch")
    for _ in range(3):
        poll_and_wake(lambda: wakes.append(1), db, source, config, alarm)
    said = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert "the disk holding the database" in said[0].getMessage()
    assert "is full" in said[0].getMessage() and not said[0].exc_info   # words, no traceback
    [notice] = slack.messages(CHANNEL)
    assert "SubmitWatch has stopped storing events" in notice["text"]
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    db.execute("PRAGMA max_page_count = 1073741823")   # space again
    poll_and_wake(lambda: wakes.append(1), db, source, config, alarm)
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 200   # none lost
    assert "stores events again" in slack.messages(CHANNEL)[-1]["text"] and wakes
    assert store.server_state(db, "EX01").consecutive_failures == 0


# --- Slack posts after our timeout, and after the look-up before the retry ----------------------

@pytest.mark.parametrize("kind", ["alert", "thread note"])
def test_a_post_slack_makes_late_ends_as_exactly_one_message(logs, db, make_config, slack, clock,
                                                            kind):
    import time as real_time

    from bot.engine.delivery import deliver_once
    from bot.engine.poller import poll_server_once
    from bot.slack.sender import SlackSender
    from bot.sources.winrm import WinRMSource
    from store import db as store
    from tests.conftest import CHANNEL
    from tests.helpers import scanner, sweep
    config = make_config(servers=("EX01", "EX02"))
    quick = SlackSender.from_config(config.slack, timeout=1)
    scanner(logs["EX01"], 1)
    if kind == "thread note":
        sweep(db, config, clock)                       # the alert is there
        clock.advance(seconds=30)
        scanner(logs["EX02"], 1)                       # a new server: a thread note
    for server in config.servers:                      # polls only: delivery is the test's
        poll_server_once(db, WinRMSource(server, config.polling), config, clock)
    method_calls = len(slack.calls_to("chat.postMessage"))
    slack.slow("chat.postMessage", 4, times=1)         # acted on 4 s after it was sent
    result = deliver_once(db, quick, config, clock)
    assert result.failed == 1 and "unreachable" in result.errors[0]

    def visible():
        top = slack.messages(CHANNEL)
        return top if kind == "alert" else top[0]["replies"]
    clock.advance(seconds=6)                           # the 5 s backoff of before: too soon
    assert deliver_once(db, quick, config, clock).sent == 0
    clock.advance(seconds=55)                          # a minute on: the look-up, then the retry
    assert visible() == []                             # Slack has not acted yet (real time)
    assert deliver_once(db, quick, config, clock).sent == 1
    deadline = real_time.monotonic() + 10
    while len(visible()) < 2 and real_time.monotonic() < deadline:
        real_time.sleep(0.05)
    assert len(visible()) == 2                          # the late one landed: two, for now
    clock.advance(minutes=2)
    assert deliver_once(db, quick, config, clock).failed == 0
    assert len(visible()) == 1                          # the twin was deleted
    [problem] = db.query("SELECT * FROM problems WHERE kind = 'slack_duplicate_removed'")
    assert "twice after a timed-out attempt" in problem["detail"]
    assert len(slack.deleted) == 1 and store.outbox_depth(db) == 0
    if kind == "alert":
        [incident] = store.open_incidents(db).values()
        assert incident.message_ts == visible()[0]["ts"]   # the one kept is the one updated
    assert len(slack.calls_to("chat.postMessage")) > method_calls


def test_a_slow_poll_is_not_taken_for_a_stalled_one(db):
    from bot.ops.watchdog import Watchdog

    class Jobs:
        def modify_job(self, job_id, next_run_time):
            raise AssertionError("a slow run must not be rescheduled")

    monotonic = [0.0]
    dog = Watchdog(Jobs(), lambda: db, monotonic=lambda: monotonic[0])
    dog.watch("poll:EX01", "poll EX01", 10, 0)

    def slow_poll():               # started on time, then a 30 s read timeout
        monotonic[0] += 30
    dog.wrap("poll:EX01", slow_poll)()
    assert dog.check() == []       # measured from its end, not its start
    monotonic[0] += 15
    assert dog.check() == []


def test_retention_never_hands_out_an_outbox_id_again(db):
    from datetime import datetime, timedelta

    from store import db as store
    now = datetime(2026, 3, 8, tzinfo=UTC)
    with store.write_transaction(db):
        for _ in range(3):
            store.enqueue(db, None, "server_down", now, server="EX01")
        db.execute("UPDATE outbox SET state = 'sent'")
    newest = db.execute("SELECT max(id) FROM outbox").fetchone()[0]
    store.prune(db, now + timedelta(days=400))
    assert [r[0] for r in db.execute("SELECT id FROM outbox")] == [newest]   # the newest stays
    with store.write_transaction(db):
        store.enqueue(db, None, "server_down", now, server="EX01")
    assert db.execute("SELECT max(id) FROM outbox").fetchone()[0] == newest + 1


def test_a_database_that_cannot_be_created_is_said_in_words(tmp_path):
    from store.db import StoreError, open_db
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(StoreError, match="cannot create the database .*give the user running "
                                         "SubmitWatch write access"):
        open_db(blocker / "sw.db")


# --- the clock stepped forward: nothing resolves or ends early ------------------------------------

def test_a_clock_step_forward_resolves_nothing_and_ends_no_snooze_early(
        logs, db, make_config, slack, clock):
    from datetime import timedelta

    from bot.engine import chatops
    from bot.engine.chatops import Actor
    from bot.ops.clockguard import ClockGuard
    from bot.ops.scheduler import housekeeping
    from store import chat
    from store import db as store
    from tests.helpers import scanner, sweep
    config = make_config(servers=("EX01",))
    scanner(logs["EX01"], 1)
    sweep(db, config, clock)
    [incident] = store.open_incidents(db).values()
    chatops.snooze(db, incident.id, 4 * 3600, "patching", Actor("U0ALICE", "slash"), clock())
    monotonic = [0.0]
    guard = ClockGuard(lambda: monotonic[0])
    housekeeping(db, config, guard, clock)
    monotonic[0] += 30
    clock.advance(days=1, seconds=30)                   # NTP steps the clock a day forward
    housekeeping(db, config, guard, clock)
    assert [i.status for i in store.open_incidents(db).values()] == ["open"]
    assert len(chat.active_snoozes(db, clock() - timedelta(days=1))) == 1   # not ended
    monotonic[0] += 4 * 3600 + 60                       # four real hours later
    clock.advance(hours=4, seconds=60)
    housekeeping(db, config, guard, clock)
    assert chat.active_snoozes(db, clock()) == []        # the snooze ended on time
    assert [i.status for i in store.open_incidents(db).values()] == ["open"]
    monotonic[0] += 20 * 3600                           # a real quiet day: resolved
    clock.advance(hours=20)
    housekeeping(db, config, guard, clock)
    assert store.open_incidents(db) == {}


def test_the_guard_leaves_only_steps_after_a_moment_out_of_its_elapsed_time():
    from datetime import datetime, timedelta

    from bot.ops.clockguard import ClockGuard
    t0 = datetime(2026, 3, 8, tzinfo=UTC)
    monotonic = [0.0]
    guard = ClockGuard(lambda: monotonic[0])
    guard.observe(t0)
    monotonic[0] = 30
    guard.observe(t0 + timedelta(days=1, seconds=30))   # a day forward
    now = t0 + timedelta(days=1, minutes=1)
    assert guard.elapsed(t0 - timedelta(hours=1), now) == timedelta(hours=1, minutes=1)
    after = t0 + timedelta(days=1, seconds=40)           # a moment after the step
    assert guard.elapsed(after, now) == now - after
    monotonic[0] = 60
    guard.observe(t0 + timedelta(days=1, seconds=65))   # 5 s of scheduling noise: no step
    assert len(guard.steps) == 1


# --- a server's clock off the bot's: measured, shown in status and check --------------------------

def test_a_server_clock_off_the_bots_is_measured_and_shown_in_status_and_check(
        logs, db, make_config, slack, clock):
    from datetime import timedelta

    from bot.ops.check import run_check
    from handlers.commands import answer
    from handlers.common import Request
    from store import db as store
    from tests.helpers import FE, sweep
    config = make_config(servers=("EX01", "EX02"))
    sweep(db, config, clock)                              # a good first poll of each
    clock.advance(minutes=1)
    logs["EX01"].append(FE, 1020, ("CONTOSO\\a",), time=clock() - timedelta(hours=2))
    logs["EX02"].append(FE, 1020, ("CONTOSO\\b",), time=clock() + timedelta(minutes=1))
    sweep(db, config, clock)
    assert store.server_state(db, "EX01").clock_skew == pytest.approx(-2 * 3600 + 60, abs=2)
    assert store.server_state(db, "EX02").clock_skew == 0.0   # within the 5 minutes allowed
    reply = answer(Request(db=db, config=config, now=clock(), user_id="U0ALICE"), "status")
    assert "its events are stamped 1h 59m behind SubmitWatch's clock" in reply.text
    lines: list[str] = []
    run_check(config, out=lines.append)
    assert any(line.startswith("WARNING  EX01: its events are stamped 1h 59m behind")
               for line in lines), lines
    assert not any(line.startswith("WARNING  EX02: its events") for line in lines)
    from bot.ops.metrics import StoreCollector
    [skew] = [f for f in StoreCollector(lambda: db, clock).collect()
              if f.name == "submitwatch_server_clock_skew_seconds"]
    assert {s.labels["server"]: s.value for s in skew.samples}["EX01"] < -7000


def test_a_clock_step_forward_ends_no_storm_and_reminds_nobody_early(logs, db, make_config,
                                                                     slack, clock):
    """A live storm digest stays live, and an unowned incident's owners are not reminded, when
    only the wall clock jumped: both wait for their real time."""
    from bot.engine.poller import end_storms, remind_owners
    from bot.ops.clockguard import ClockGuard
    from store import digests
    from tests.helpers import sweep
    config = make_config(servers=("EX01",), routes=[{"accounts": ["*"], "owners": ["U0OWNER"]}],
                         incidents={"storm_threshold": 1, "storm_window": "10m",
                                    "reminder_after": "1h", "reminder_interval": "1h"})
    for n in range(3):
        logs["EX01"].append("MSExchangeFrontEndTransport", 1018,
                            (f"CONTOSO\\scan-{n}", "Client Frontend EX01"))
    sweep(db, config, clock)
    clock.advance(seconds=5)          # the posted one keeps failing: its owners are due a reminder
    logs["EX01"].append("MSExchangeFrontEndTransport", 1018,
                        ("CONTOSO\\scan-0", "Client Frontend EX01"))
    sweep(db, config, clock)
    assert len(digests.live_digests(db)) == 1
    monotonic = [0.0]
    guard = ClockGuard(lambda: monotonic[0])
    guard.observe(clock())
    monotonic[0] += 30
    clock.advance(days=1, seconds=30)                   # NTP steps the clock a day forward
    guard.observe(clock())
    assert end_storms(db, config, clock, guard) == 0 and len(digests.live_digests(db)) == 1
    assert remind_owners(db, config, clock, guard) == 0
    # Without the guard the same moment ends the storm and reminds: what the guard prevents.
    assert remind_owners(db, config, clock) > 0
    assert end_storms(db, config, clock) == 1
