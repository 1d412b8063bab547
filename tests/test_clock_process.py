"""The clock stepped under a real `submitwatch run` (issue 23, item 2).

The process runs with libfaketime preloaded (the `libfaketime` package's own build: Debian's
breaks time.sleep), its wall clock read through a file the test rewrites while it runs
(FAKETIME_TIMESTAMP_FILE, FAKETIME_NO_CACHE=1) and its monotonic clock left real
(FAKETIME_DONT_FAKE_MONOTONIC=1): what an NTP step does to a live process. The Slack stand-in
and the WinRM simulator run here, on the real clock. Polls and housekeeping run every second,
so the whole test takes seconds, not the 30 s of production's housekeeping period.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import libfaketime
import pytest

from bot.slack.alerts import ACTION_SNOOZE
from tests.conftest import CHANNEL
from tests.helpers import ENV, EXE, ROOT, scanner, wait_until, write_config

ACCOUNT = "CONTOSO\\svc-scanner"
#: Long enough for several polls and housekeeping runs (every 1 s) after each step.
SETTLE = 5.0

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="libfaketime's preload is Linux's LD_PRELOAD")


def faked_env(offset_file) -> dict[str, str]:
    """The environment of a process whose wall clock is real time plus the offset written in
    `offset_file` (re-read on every call), and whose monotonic clock is real."""
    _, additions = libfaketime.get_reload_information()   # LD_PRELOAD, LD_LIBRARY_PATH, ...
    return {**additions, "FAKETIME_TIMESTAMP_FILE": str(offset_file), "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1", "DONT_FAKE_MONOTONIC": "1"}


def step_to(offset_file, offset: str) -> None:
    """Set the process's wall clock to real time plus `offset` ("+1d", "+23h")."""
    tmp = offset_file.with_suffix(".new")
    tmp.write_text(offset + "\n", encoding="ascii")
    os.replace(tmp, offset_file)    # never a half-written file for a read under way


def rows(db_path, sql, args=()):
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql, args)]


def posts(slack):
    """Every message the stand-in holds (ts and text, but an alert's text changes as it is
    updated in place) and every thread reply (ts and text)."""
    out: list[tuple[str, str]] = []
    for message in slack.messages(CHANNEL):
        alert = "incident_id" in ((message["metadata"] or {}).get("event_payload") or {})
        out.append((message["ts"], "" if alert else message["text"]))
        out += [(r["ts"], r["text"]) for r in message.get("replies", [])]
    return out


def stored(db_path) -> int:
    return rows(db_path, "SELECT count(*) AS n FROM events")[0]["n"]


def test_a_wall_clock_step_in_a_running_process_ends_no_snooze_and_resolves_nothing(
        tmp_path, logs, winrm, slack):
    offset_file = tmp_path / "faketime.rc"
    step_to(offset_file, "+0")
    # Polls and housekeeping every second (housekeeping runs as often as the polls when they
    # are more frequent than its 30 s). EX02 is where the snoozed account fails next: a new
    # server for its incident, which is a thread note unless the incident is snoozed.
    ex02 = winrm.url_for("EX02")
    config = write_config(tmp_path, slack, winrm, polling=(
        'interval = "1s"\njitter = 0\ndelivery_interval = "0.2s"'), extra_server=(
        f'\n[[servers]]\nname = "EX02"\nurl = "{ex02}"\n' +
        "username = 'CONTOSO\\svc-submitwatch'\npassword_env = \"WINRM_PASSWORD\"\n"
        '\n[incidents]\nquiet_period = "2h"\nupdate_interval = "0s"\nreminder_after = "0s"\n'))
    db_path = tmp_path / "sw.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "WINRM_"))}
    env.update(ENV, SLACK_APP_TOKEN=slack.app_token, PYTHONPATH=str(ROOT), **faked_env(
        offset_file))
    scanner(logs["EX01"], 2, ACCOUNT)
    log = open(tmp_path / "run.log", "w")
    started = time.monotonic()
    proc = subprocess.Popen(EXE + ["run", "--config", str(config), "-v"], env=env, cwd=ROOT,
                            stdout=log, stderr=log)
    try:
        slack.wait_for_socket(timeout=30)
        slack.wait_for_calls("chat.postMessage", 1, timeout=30)
        [alert] = slack.messages(CHANNEL)
        incident_id = alert["metadata"]["event_payload"]["incident_id"]

        # Snooze the incident for 4 hours from its alert's menu.
        payload = slack.block_actions_payload("U0ALICE", CHANNEL, alert["ts"], ACTION_SNOOZE,
                                              selected_option_value=f"{incident_id}:14400")
        envelope = slack.send_envelope("interactive", payload)
        assert slack.wait_for_ack(envelope, timeout=10)["envelope_id"] == envelope
        [snooze] = wait_until(lambda: rows(db_path, "SELECT * FROM snoozes"), what="the snooze")
        wait_until(lambda: any("snooze" in text.lower() for _, text in posts(slack)[1:]),
                   what="the snooze's thread note")
        time.sleep(2)                                # housekeeping has run with the snooze on
        before = posts(slack)

        def unchanged(when: str) -> None:
            now = rows(db_path, "SELECT * FROM snoozes")
            assert now == [snooze], f"{when}: the snooze changed: {now}"
            [incident] = rows(db_path, "SELECT status, resolved_at FROM incidents")
            assert incident == {"status": "open", "resolved_at": None}, when
            expired = rows(db_path, "SELECT * FROM audit WHERE action = 'snooze_expired'")
            assert expired == [], when
            assert posts(slack) == before, f"{when}: posted {posts(slack)[len(before):]}"

        # NTP steps the wall clock a day forward; the snoozed account fails on EX02 at once,
        # so a poll, not housekeeping, may be the first job to read the stepped clock.
        step_to(offset_file, "+1d")
        scanner(logs["EX02"], 1, ACCOUNT)
        wait_until(lambda: stored(db_path) == 3, what="the event after the step stored")
        time.sleep(SETTLE)
        unchanged("a day forward")
        said = (tmp_path / "run.log").read_text()
        assert "the system clock jumped 1 day, 0:00:00 forward" in said

        # ... and an hour back (the day's step was an hour too far). The watchdog sees its
        # jobs an hour late and says so once: the only new message.
        step_to(offset_file, "+23h")
        time.sleep(1.5)
        scanner(logs["EX01"], 1, ACCOUNT)
        wait_until(lambda: stored(db_path) == 4, what="the event after the step back stored")
        time.sleep(SETTLE)
        late = [p for p in posts(slack)[len(before):] if "could not poll on time" in p[1]]
        assert len(late) <= 1, late
        before += late
        unchanged("an hour back")
        assert "jumped 1:00:00 back" in (tmp_path / "run.log").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
    assert code == 0, (tmp_path / "run.log").read_text()[-3000:]
    assert time.monotonic() - started < 45


# --- the same rules on an injected clock: what the process test cannot wait for ----------------

def test_a_step_before_the_first_housekeeping_run_is_still_seen(logs, db, make_config, slack,
                                                                clock):
    """The issue's 30 s: the guard's first reading was housekeeping's first run, so a step
    made before it was taken for the baseline and every snooze and quiet period across it
    counted the day. The guard now reads the clocks when the scheduler is built."""
    from bot.engine import chatops
    from bot.engine.chatops import Actor
    from bot.ops.clockguard import ClockGuard
    from bot.ops.scheduler import housekeeping
    from store import chat
    from store import db as store
    from tests.helpers import sweep
    config = make_config(servers=("EX01",))
    scanner(logs["EX01"], 1, ACCOUNT)
    sweep(db, config, clock)
    [incident] = store.open_incidents(db).values()
    chatops.snooze(db, incident.id, 4 * 3600, "patching", Actor("U0ALICE", "slash"), clock())
    monotonic = [0.0]
    guard = ClockGuard(lambda: monotonic[0], clock)
    guard.start()                                        # the scheduler is built
    monotonic[0] += 10
    clock.advance(days=1, seconds=10)                    # stepped before housekeeping ran
    monotonic[0] += 20
    clock.advance(seconds=20)
    housekeeping(db, config, guard, clock)               # its first run
    assert [i.status for i in store.open_incidents(db).values()] == ["open"]
    assert chat.due_snoozes(db, clock())[0].ended_at is None


def test_a_step_forward_then_back_counts_the_real_time_and_never_ends_early():
    from datetime import UTC, datetime, timedelta

    from bot.ops.clockguard import ClockGuard
    t0 = datetime(2026, 3, 8, 12, tzinfo=UTC)
    monotonic = [0.0]
    guard = ClockGuard(lambda: monotonic[0])
    guard.observe(t0)
    snoozed = t0                                         # a 4 h snooze set then
    monotonic[0] = 10
    guard.observe(t0 + timedelta(days=1, seconds=10))    # a day forward
    monotonic[0] = 20
    guard.observe(t0 + timedelta(hours=23, seconds=20))  # an hour back
    assert [round(size.total_seconds()) for _, size in guard.steps] == [86400, -3600]
    monotonic[0] = 4 * 3600                              # four real hours after the snooze
    now = t0 + timedelta(hours=27)
    guard.observe(now)
    assert guard.elapsed(snoozed, now) == timedelta(hours=4)   # not 3 h, not 5 h
    assert guard.real_now(snoozed, now) >= snoozed + timedelta(hours=4)
    # A moment stamped after the step back but inside the hour the clock said twice cannot be
    # told from one before it: the step back is not counted for it (late, never early).
    after_back = t0 + timedelta(hours=23, seconds=30)
    between = t0 + timedelta(days=1, seconds=15)         # between the two steps: the same
    for moment in (after_back, between):
        assert guard.elapsed(moment, now) == now - moment
    # After the hour said twice, nothing is left out.
    later = t0 + timedelta(days=1, minutes=5)
    assert guard.elapsed(later, now) == now - later
