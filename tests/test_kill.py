"""Crash safety: the real `submitwatch run`, killed with SIGKILL at random moments while events
keep arriving, restarted each time. Afterwards every event is stored once, every incident was
posted once, no cursor went backwards and the database is intact.

`make test` runs a few rounds; `make soak` runs many (SUBMITWATCH_KILL_ROUNDS).
"""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter

import pytest

from bot.core.model import EVENT_IDS, PROVIDERS
from tests.conftest import CHANNEL
from tests.helpers import ENV, EXE, ROOT, write_config

ROUNDS = int(os.environ.get("SUBMITWATCH_KILL_ROUNDS", "6"))
FE = "MSExchangeFrontEndTransport"


class Producer(threading.Thread):
    """Events arriving continuously on both servers: repeats, new accounts, unrelated noise."""

    def __init__(self, logs, seed: int):
        super().__init__(daemon=True)
        self.logs, self.rng, self.stop = logs, random.Random(seed), threading.Event()
        self.accounts = ["CONTOSO\\svc-scanner"]

    def run(self):
        while not self.stop.wait(0.03):
            if self.rng.random() < 0.04 and len(self.accounts) < 40:
                self.accounts.append(f"CONTOSO\\app-{len(self.accounts):02d}")
            log = self.logs[self.rng.choice(["EX01", "EX02"])]
            account = self.rng.choice(self.accounts)
            if self.rng.random() < 0.5:
                log.append(FE, 1020, (account,))
            else:
                log.append("MSExchangeTransport", 1018, (account, f"{log.computer.split('.')[0]}"
                                                                  "\\Client Frontend"))
            if self.rng.random() < 0.2:
                log.append_noise(3)


def start(config, tmp_path, slack, round_no):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "WINRM_"))}
    env.update(ENV, SLACK_APP_TOKEN=slack.app_token, PYTHONPATH=str(ROOT))
    log = open(tmp_path / f"run-{round_no}.log", "w")
    return subprocess.Popen(EXE + ["run", "--config", str(config), "-v"], env=env, cwd=ROOT,
                            stdout=log, stderr=log)


def cursors(db_path):
    try:
        with sqlite3.connect(db_path) as conn:
            return dict(conn.execute("SELECT server, cursor FROM server_state"))
    except sqlite3.OperationalError:  # killed before it created the schema
        return {}


def produced(logs):
    return {(name, e.record_id) for name, log in logs.items() for e in log.events()
            if e.event_id in EVENT_IDS and e.provider in PROVIDERS}


def stored(db_path):
    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT server, record_id FROM events").fetchall()


@pytest.fixture
def two_servers(tmp_path, slack, winrm):
    extra = f'''
[[servers]]
name = "EX02"
url = "{winrm.url_for('EX02')}"
username = 'CONTOSO\\svc-submitwatch'
password_env = "WINRM_PASSWORD"
'''
    return write_config(tmp_path, slack, winrm, extra_server=extra, polling=(
        'interval = "1s"\njitter = 0\ndelivery_interval = "0.2s"\nlookback = "1h"'))


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path, logs, slack,
                                                                 two_servers):
    config = two_servers
    db_path = str(tmp_path / "sw.db")
    # Slack acts on each call 50 ms before the bot hears back: a kill often lands in between,
    # which is the moment a naive outbox posts twice.
    slack.answer_delay = 0.05
    rng = random.Random(20261127)
    producer = Producer(logs, seed=7)
    producer.start()
    seen_cursors: dict[str, int] = {}
    try:
        for round_no in range(ROUNDS):
            proc = start(config, tmp_path, slack, round_no)
            time.sleep(rng.uniform(1.0, 3.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            for server, cursor in cursors(db_path).items():
                assert cursor >= seen_cursors.get(server, 0), f"{server} cursor went backwards"
                seen_cursors[server] = cursor
    finally:
        producer.stop.set()
        producer.join(5)

    # One last, undisturbed run catches up with everything, then stops cleanly.
    proc = start(config, tmp_path, slack, ROUNDS)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if set(stored(db_path)) >= produced(logs) and _outbox_empty(db_path):
                break
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0

    rows = stored(db_path)
    assert len(rows) == len(set(rows)), "an event was stored twice"
    assert set(rows) == produced(logs), "events were lost"
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        incidents = conn.execute("SELECT count(*) FROM incidents").fetchone()[0]
        listed = conn.execute("SELECT count(digest_id) FROM incidents").fetchone()[0]
    # Each incident is one alert, or one line of a storm digest (one post per digest).
    payloads = [m["metadata"]["event_payload"] for m in slack.messages(CHANNEL) if m["metadata"]]
    posts = Counter(p["incident_id"] for p in payloads if "incident_id" in p)
    digests = Counter(p["digest_id"] for p in payloads if "digest_id" in p)
    assert all(n == 1 for n in posts.values()), f"duplicate alerts: {posts.most_common(3)}"
    assert all(n == 1 for n in digests.values()), f"duplicate digests: {digests.most_common(3)}"
    assert len(slack.messages(CHANNEL)) == len(posts) + len(digests)
    assert len(posts) + listed == incidents
    notes = Counter(r["metadata"]["event_payload"]["outbox_id"]
                    for m in slack.messages(CHANNEL) for r in m["replies"] if r["metadata"])
    assert all(n == 1 for n in notes.values()), f"duplicate thread notes: {notes.most_common(3)}"


def _outbox_empty(db_path):
    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT count(*) FROM outbox WHERE state IN ('pending', 'sending')"
                            ).fetchone()[0] == 0
