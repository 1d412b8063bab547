"""WinRM faults through the whole poll: real pywinrm, the WS-Management simulator, a real SQLite
file. For every fault: PollResult.error and server_state.last_error say what is wrong in words,
nothing is stored, the cursor does not move past unread events, and the next good poll stores
every event exactly once.

Already covered elsewhere, and not repeated here:
* tests/test_source.py, at the source (no database): the words for a refused connection, TLS to
  a plain-http port and an unknown CA (no request sent), 401, a WS-Man fault, a hang, endless
  operation timeouts, exit code 5 with CLIXML; two operation timeouts retried; garbage parsed
  into problems; the kept NTLM connection replaced after a 401 and dropped after a failure.
* tests/test_pipeline.py: batching (23 events in batches of 5), a cleared log (renumbered,
  with continued numbering, renumbered and grown past the cursor), a wrapped log, one 401 poll
  followed by recovery, malformed and cut-off events, invalid UTF-8 kept as a problem.
* tests/test_faults.py: N failed polls raise one "not being watched" alert and one recovery.

Added here: every fault above through `poll_server_once` with the no-loss / no-duplicate /
cursor invariants, a DNS failure (none before), a wrong password, a WS-Man fault after the shell
opened, output cut off at an event boundary (it lost events: fixed in bot/sources/parse.py), a log that
wraps or is cleared while the server cannot be polled, and a storm of events in one poll.
"""
from __future__ import annotations

import os
import socket
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from bot.core.config import parse_config
from bot.engine.poller import poll_server_once
from bot.sources.winrm import WinRMSource, query_args
from sim.eventlog import EventLog
from sim.wevtutil import run_command_line, run_encoded
from sim.winrm_server import WinRMSimulator, first_half
from store import db as store
from tests.conftest import BOT_TOKEN, CHANNEL, WINRM_PASSWORD, WINRM_USER
from tests.tls import make_pki

FE = "MSExchangeFrontEndTransport"
#: Short timeouts keep the hang and endless-timeout cases to a few seconds each.
POLLING = {"operation_timeout": 1, "read_timeout": "1.5s", "batch_size": 500}


def config_for(url: str, db_path: str, *, password=WINRM_PASSWORD, polling=None, **server):
    raw = {"slack": {"channel": CHANNEL}, "store": {"path": db_path},
           "polling": {**POLLING, **(polling or {})},
           "servers": [{"name": "EX01", "url": url, "username": WINRM_USER,
                        "password_env": "WINRM_PASSWORD", **server}]}
    return parse_config(raw, {"SLACK_BOT_TOKEN": BOT_TOKEN, "WINRM_PASSWORD": password})


def closed_port() -> int:
    with socket.socket() as s:   # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def no_dns_for_invalid(monkeypatch):
    """Names under .invalid never resolve (RFC 6761). A resolver may still ask its DNS server,
    and this suite sends nothing off 127.0.0.1: answer NXDOMAIN for them in-process, as a
    resolver does, and leave every other name to the real resolver."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name.rstrip(".").lower().endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def https_sim(logs, tmp_path):
    pki = make_pki(tmp_path)
    with WinRMSimulator(logs, users={WINRM_USER: WINRM_PASSWORD}, auth="ntlm",
                        tls=pki.server_context()) as sim:
        yield sim, pki


# --- the fault matrix ---------------------------------------------------------------------------

@dataclass
class Case:
    """How to break a poll and mend it again; `words` must be in the error (or a problem)."""

    words: tuple[str, ...]
    #: (env) -> config for the broken polls; may inject faults into env.winrm
    breaks: Callable
    polls: int = 2                      # failing polls in a row
    error: bool = True                  # False: the poll succeeds with problems
    absent: tuple[str, ...] = ()        # must not be in the error (secrets, raw CLIXML)
    mend: Callable | None = None        # (env) -> config for the good poll (default: the usual)
    tried: list = field(default_factory=list)


@dataclass
class Env:
    winrm: WinRMSimulator
    db_path: str
    https: tuple | None = None

    def good(self):
        return config_for(self.winrm.url_for("EX01"), self.db_path)

    def inject(self, fault, **params):
        self.winrm.inject("EX01", fault, **params)
        return self.good()


CASES = {
    "refused connection": Case(
        ("connection to", "refused", "is WinRM listening"),
        lambda env: config_for(f"http://127.0.0.1:{closed_port()}/wsman", env.db_path)),
    "DNS failure": Case(
        ("does not resolve", "DNS", "check servers.url"),
        lambda env: config_for("http://ex01.submitwatch.invalid:5985/wsman", env.db_path)),
    "TLS to a plain-http port": Case(
        ("TLS to", "failed", "ca_bundle"),
        lambda env: config_for(env.winrm.url_for("EX01").replace("http:", "https:"),
                               env.db_path)),
    "TLS, certificate from an unknown CA": Case(
        ("TLS to", "failed", "CERTIFICATE_VERIFY_FAILED", "point ca_bundle at it"),
        lambda env: config_for(env.https[0].url_for("EX01"), env.db_path),
        mend=lambda env: config_for(env.https[0].url_for("EX01"), env.db_path,
                                    ca_bundle=str(env.https[1].ca_file))),
    "401 (credentials refused)": Case(
        ("refused the credentials", "HTTP 401", "Event Log Readers"),
        lambda env: env.inject("unauthorized", times=None)),
    "wrong password": Case(
        ("refused the credentials", "HTTP 401", "WINRM_PASSWORD"),
        lambda env: config_for(env.winrm.url_for("EX01"), env.db_path,
                               password="not-the-Passw0rd"),
        absent=("not-the-Passw0rd", WINRM_PASSWORD)),
    "WS-Man fault 5 on any request": Case(
        ("fault 5, Access is denied", "RootSDDL", "Remote Management Users"),
        lambda env: env.inject("wsman_fault", times=None)),
    "WS-Man fault 5 once the shell is open": Case(
        ("Access is denied", "RootSDDL"),
        lambda env: env.inject("wsman_fault", times=None, on="Command")),
    "another WS-Man fault": Case(
        ("answered with a fault", "WSManFault 2150858770", "cannot connect"),
        lambda env: env.inject("wsman_fault", times=None, code=2150858770,
                               reason="The client cannot connect to the destination.")),
    "operation timeouts without end": Case(
        ("produced no output for over 1.5s", "overloaded"),
        lambda env: env.inject("operation_timeout", times=None), polls=1),
    "hang (read timeout)": Case(
        ("did not answer before polling.read_timeout ran out",),
        lambda env: env.inject("hang", times=1, seconds=4), polls=1),
    "exit code 5, CLIXML on stderr": Case(
        ("failed with exit code 5", "Access is denied"),
        lambda env: env.inject("exit_code", times=None), absent=("CLIXML", "<Objs", "_x000D_")),
    "exit code 15001, plain stderr": Case(
        ("failed with exit code 15001", "The specified query is invalid"),
        lambda env: env.inject("exit_code", times=None, code=15001,
                               stderr="Failed to read events. The specified query is invalid.")),
    "garbage and truncated output": Case(
        ("cut off",), lambda env: env.inject("garbage", times=1), polls=1, error=False),
    "invalid UTF-16": Case(
        ("not valid UTF-16-LE",), lambda env: env.inject("invalid_text", times=1), polls=1,
        error=False),
}


@pytest.mark.parametrize("name", CASES)
def test_a_fault_is_explained_loses_nothing_and_moves_no_cursor(
        name, logs, winrm, db, db_path, clock, request):
    case = CASES[name]
    env = Env(winrm, db_path)
    if "unknown CA" in name:
        env.https = request.getfixturevalue("https_sim")
    if "DNS" in name:
        request.getfixturevalue("no_dns_for_invalid")
    log = logs["EX01"]
    good = env.good()
    for n in range(3):
        log.append(FE, 1020, (f"CONTOSO\\before-{n}",))
    first = poll_server_once(db, WinRMSource(good.servers[0], good.polling), good, clock)
    assert first.error is None and first.stored == 3
    cursor = store.server_state(db, "EX01").cursor
    assert cursor == log.newest_record
    log.append(FE, 1018, ("CONTOSO\\during-0", "EX01\\Client Frontend EX01"))
    for n in range(1, 4):
        log.append(FE, 1020, (f"CONTOSO\\during-{n}",))     # what the fault must not lose

    broken = case.breaks(env)
    source = WinRMSource(broken.servers[0], broken.polling)
    for attempt in range(case.polls):
        clock.advance(minutes=1)
        result = poll_server_once(db, source, broken, clock)
        state = store.server_state(db, "EX01")
        if case.error:
            assert result.error, result.summary()
            for words in case.words:
                assert words in result.error and words in state.last_error, result.error
            for secret in case.absent:
                assert secret not in result.error
            assert result.stored == 0 and state.consecutive_failures == attempt + 1
            assert state.cursor == cursor                    # never past unread events
        else:
            assert result.error is None
            assert any(all(w in p.detail for w in case.words) for p in result.problems), \
                [p.detail for p in result.problems]
        assert state.cursor <= log.newest_record
        if name == "garbage and truncated output":
            assert state.cursor < log.newest_record          # held before what was cut off
    if case.error:
        assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 3
    if env.https:   # nothing, credentials included, went to a server that was not verified
        assert env.https[0].stats("EX01").http_requests == 0

    winrm.clear_faults()
    mended = (case.mend or Env.good)(env)
    clock.advance(minutes=1)
    result = poll_server_once(db, WinRMSource(mended.servers[0], mended.polling), mended, clock)
    assert result.error is None, result.error
    state = store.server_state(db, "EX01")
    assert state.consecutive_failures == 0 and state.cursor == log.newest_record
    records = [r[0] for r in db.execute("SELECT record_id FROM events ORDER BY record_id")]
    assert records == list(range(log.oldest_record, log.newest_record + 1))  # all, once each
    incident = db.execute("SELECT sum(event_count) FROM incidents").fetchone()[0]
    assert incident == 7
    again = poll_server_once(db, WinRMSource(mended.servers[0], mended.polling), mended, clock)
    assert again.stored == 0 and again.error is None
    if name == "WS-Man fault once the shell is open":
        assert winrm.stats("EX01").shells_open == 0           # the failed poll closed its shell


def test_transient_operation_timeouts_are_retried_within_the_poll(logs, winrm, db, db_path,
                                                                   clock):
    config = config_for(winrm.url_for("EX01"), db_path)
    for n in range(5):
        logs["EX01"].append(FE, 1020, (f"CONTOSO\\app-{n}",))
    winrm.inject("EX01", "operation_timeout", times=3)
    result = poll_server_once(db, WinRMSource(config.servers[0], config.polling), config, clock)
    assert result.error is None and result.stored == 5
    assert winrm.stats("EX01").faults["operation_timeout"] == 3


# --- output cut off exactly after an event ------------------------------------------------------

FIXED = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)


def boundary_log(pad: int) -> EventLog:
    log = EventLog("EX01.contoso.local", first_record=1000, now=lambda: FIXED)
    for n in range(6):
        account = "CONTOSO\\svc-" + ("x" * pad if n == 0 else "") + str(n)
        log.append(FE, 1020, (account,), time=FIXED - timedelta(minutes=1))
    return log


def test_output_cut_off_right_after_an_event_is_read_again_not_skipped(db, db_path, clock):
    """The simulator's garbage fault keeps the first half of the output. Where that half ends
    just after a complete event, the output looked whole: the poll stored two events and moved
    the cursor past the four it never saw (lost for good; found by this test, fixed in
    bot/sources/parse.py: output that opens <Events> must close it)."""
    command = " ".join(["wevtutil", "gli", "Application", "&", "wevtutil",
                        *query_args("Application", 0, 500, None)])

    def half(pad: int) -> bytes:
        return first_half(run_encoded(boundary_log(pad), command, codepage=65001)[0])
    end = "</Event>\r\n".encode("utf-16-le")
    pad = next(p for p in range(2000) if half(p).endswith(end))

    log = EventLog("EX01.contoso.local", first_record=1000, now=lambda: FIXED)
    with WinRMSimulator({"EX01": log}, users={WINRM_USER: WINRM_PASSWORD}, auth="ntlm") as sim:
        config = config_for(sim.url_for("EX01"), db_path)
        source = WinRMSource(config.servers[0], config.polling)
        assert poll_server_once(db, source, config, clock).error is None    # cursor 0
        assert store.server_state(db, "EX01").cursor == 0
        expected = boundary_log(pad)
        for event in expected.events():
            log.append(event.provider, event.event_id, event.data, time=event.time)
        assert run_command_line(log, command)[0] == run_command_line(expected, command)[0]
        sim.inject("EX01", "garbage", times=1)
        cut = poll_server_once(db, source, config, clock)
        assert cut.error is None and cut.stored == half(pad).count(end) == 2
        assert [p.kind for p in cut.problems] == ["truncated_output"]
        assert "cut off" in cut.problems[0].detail
        assert store.server_state(db, "EX01").cursor == 1001          # the last event it saw
        after = poll_server_once(db, source, config, clock)
        assert after.error is None and after.stored == 4
    records = [r[0] for r in db.execute("SELECT record_id FROM events ORDER BY record_id")]
    assert records == list(range(1000, 1006))


# --- a log that wraps or is cleared while the server cannot be polled ---------------------------

def fail_then_recover(logs, winrm, db, db_path, clock, during: Callable[[EventLog], None]):
    config = config_for(winrm.url_for("EX01"), db_path)
    source = WinRMSource(config.servers[0], config.polling)
    log = logs["EX01"]
    for n in range(3):
        log.append(FE, 1020, (f"CONTOSO\\before-{n}",))
    assert poll_server_once(db, source, config, clock).stored == 3
    winrm.inject("EX01", "unauthorized", times=None)
    for _ in range(3):
        clock.advance(minutes=1)
        assert "HTTP 401" in poll_server_once(db, source, config, clock).error
    during(log)
    winrm.clear_faults()
    clock.advance(minutes=1)
    return poll_server_once(db, source, config, clock)


def test_a_log_that_wraps_during_an_outage_says_how_much_was_lost_and_keeps_the_rest(
        logs, winrm, db, db_path, clock):
    def wrap(log):
        for n in range(10):
            log.append(FE, 1020, (f"CONTOSO\\during-{n}",))
        log.drop_oldest(3 + 4)           # the 3 read before and 4 never read

    result = fail_then_recover(logs, winrm, db, db_path, clock, wrap)
    assert result.error is None and result.stored == 6
    [problem] = result.problems
    assert problem.kind == "log_wrapped" and problem.detail.startswith("4 log record(s) after")
    assert "are lost" in problem.detail and "maximum size" in problem.detail
    accounts = [r[0] for r in db.execute("SELECT account FROM events ORDER BY record_id")]
    assert accounts == [f"CONTOSO\\before-{n}" for n in range(3)] + [
        f"CONTOSO\\during-{n}" for n in range(4, 10)]
    assert store.server_state(db, "EX01").cursor == logs["EX01"].newest_record


@pytest.mark.parametrize("restart_numbering, after", [
    (False, 5), (True, 2),
    pytest.param(True, 5, marks=pytest.mark.xfail(strict=True, reason=(
        "docs/operations.md, Known limits: a log cleared, numbered again from the same oldest "
        "record and grown past the cursor before the next poll looks like a log that grew; its first "
        "records are not read (here 3 of 5). An outage makes that likelier.")))])
def test_a_log_cleared_during_an_outage_is_reported_and_read_from_its_start(
        logs, winrm, db, db_path, clock, restart_numbering, after):
    def clear(log):
        for n in range(2):
            log.append(FE, 1020, (f"CONTOSO\\lost-{n}",))        # never read: cleared
        log.clear(restart_numbering=restart_numbering)
        for n in range(after):
            log.append(FE, 1020, (f"CONTOSO\\after-{n}",))

    result = fail_then_recover(logs, winrm, db, db_path, clock, clear)
    assert result.error is None
    accounts = sorted(r[0] for r in db.execute("SELECT account FROM events"))
    assert accounts == sorted([f"CONTOSO\\before-{n}" for n in range(3)] +
                              [f"CONTOSO\\after-{n}" for n in range(after)])
    [problem] = result.problems
    # Continued numbering: the two unread records are gone, said as records lost; numbering
    # started again: the log was cleared, and read again from its start in a new generation.
    if restart_numbering:
        assert problem.kind == "log_cleared" and "reading the new log from its start" in \
            problem.detail
    else:
        assert problem.kind == "log_wrapped" and problem.detail.startswith("2 log record(s)")


# --- a storm ------------------------------------------------------------------------------------

#: 100,000 with SUBMITWATCH_STORM=full (about a minute); 20,000 otherwise, to keep `make test`
#: quick. Either way several hundred or dozens of round trips, and memory must stay bounded.
STORM = 100_000 if os.environ.get("SUBMITWATCH_STORM") == "full" else 20_000
STORM_ACCOUNTS = 4
PEAK_LIMIT_MB = 150


def test_a_storm_is_stored_whole_in_batches_with_bounded_memory(tmp_path):
    """The simulator runs in its own process (bench/simproc.py), so tracemalloc counts only the
    bot's allocations during the poll."""
    from bench.common import make_config
    from bench.simproc import SimProcess
    from store.db import open_db

    with SimProcess(["EX01"]) as sim:
        for n in range(STORM_ACCOUNTS):
            newest = sim.call("append", "EX01", f"CONTOSO\\storm-{n}", STORM // STORM_ACCOUNTS)
        config = make_config(sim.servers(), str(tmp_path / "storm.db"), "http://127.0.0.1:9/api/")
        db = open_db(config.store.path)
        source = WinRMSource(config.servers[0], config.polling)
        tracemalloc.start()
        try:
            started = time.monotonic()
            result = poll_server_once(db, source, config)
            seconds = time.monotonic() - started
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        again = poll_server_once(db, source, config)
    print(f"storm: {STORM:,} events in {result.round_trips} round trips, {seconds:.1f} s, "
          f"peak {peak / 2**20:.1f} MB traced")
    assert result.error is None and result.problems == []
    assert result.stored == STORM
    assert result.round_trips >= STORM // config.polling.batch_size   # batched, not one answer
    assert peak < PEAK_LIMIT_MB * 2**20
    assert db.execute("SELECT count(*), count(DISTINCT record_id) FROM events").fetchone() == (
        STORM, STORM)
    assert db.execute("SELECT count(*), sum(event_count) FROM incidents").fetchone() == (
        STORM_ACCOUNTS, STORM)
    assert store.server_state(db, "EX01").cursor == newest
    # One post per account; updates coalesced, not one per batch.
    kinds = [r[0] for r in db.execute("SELECT kind FROM outbox")]
    assert kinds.count("post") == STORM_ACCOUNTS and len(kinds) <= 2 * STORM_ACCOUNTS
    assert again.error is None and again.stored == 0
    db.conn.close()
