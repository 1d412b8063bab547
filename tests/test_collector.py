"""A Windows Event Collector: its [[collectors]] entry, origins mapped to configured servers,
liveness per origin from `wecutil gr`, `check`'s listing, and the simulator's collector mode."""
from __future__ import annotations

from datetime import timedelta

import pytest

from bot.core.config import ConfigError, ServerConfig
from bot.engine.liveness import watch_collector
from bot.engine.poller import poll_server_once
from bot.ops.check import check_collectors
from bot.sources.collector import CollectorSource, parse_runtime_status, subscription_status
from bot.sources.origins import origin_name
from bot.sources.winrm import WinRMSource
from sim.eventlog import EventLog
from sim.wevtutil import run_command_line
from store import db as store
from tests.conftest import WINRM_USER

SUB = "Exchange Submit"


@pytest.fixture
def wec(winrm, clock):
    log = EventLog("WEC01.contoso.local", channel="ForwardedEvents", now=clock)
    winrm.add_server("WEC01", log)
    for host in ("EX01.contoso.local", "EX02.contoso.local", "EX09.contoso.local"):
        log.heartbeat(SUB, host, clock.now - timedelta(minutes=5))
    return log


#: collector_config's keyword arguments that are the configuration's, not the collector's
_TABLES = ("polling", "servers", "slack", "routes")


def collector_config(make_config, winrm, **extra):
    tables = {k: extra.pop(k) for k in _TABLES if k in extra}
    return make_config(collectors=[{
        "name": "WEC01", "url": winrm.url_for("WEC01"), "username": WINRM_USER,
        "password_env": "WINRM_PASSWORD", "subscription": SUB, **extra}], **tables)


def test_collector_entry_and_its_defaults(make_config, winrm, wec):
    config = collector_config(make_config, winrm)
    [collector] = config.collectors
    assert collector.endpoint.log == "ForwardedEvents"
    assert collector.unconfigured_origins == "own_name"
    assert collector.heartbeat_timeout == 45 * 60
    with pytest.raises(ConfigError, match="unconfigured_origins"):
        collector_config(make_config, winrm, unconfigured_origins="drop")
    with pytest.raises(ConfigError, match="names must be unique"):
        collector_config(make_config, winrm, name="EX01")
    with pytest.raises(ConfigError, match="subscription"):
        make_config(collectors=[{"name": "WEC01", "url": winrm.url_for("WEC01"),
                                 "username": WINRM_USER, "password_env": "WINRM_PASSWORD"}])


def test_origin_name_by_fqdn_or_short_name_and_unconfigured_both_ways():
    servers = [ServerConfig("EX01", "https://x/wsman"),
               ServerConfig("ex02.contoso.local", "https://y/wsman")]
    assert origin_name("EX01.contoso.local", servers) == "EX01"
    assert origin_name("ex01", servers) == "EX01"
    assert origin_name("EX02.CONTOSO.LOCAL", servers) == "ex02.contoso.local"
    assert origin_name("EX02", servers) == "ex02.contoso.local"
    assert origin_name("ex02.fabrikam.local", servers) == "ex02"   # another domain's EX02
    assert origin_name("EX09.contoso.local", servers) == "EX09"
    assert origin_name("EX09.contoso.local", servers, "ignore") is None
    assert origin_name("", servers) is None


def test_forwarded_events_keep_colliding_record_ids(wec):
    wec.append_forwarded("EX01.contoso.local", 7, 1018, "CONTOSO\\a")
    wec.append_forwarded("EX02.contoso.local", 7, 1018, "CONTOSO\\b")
    out, _err, code = run_command_line(
        wec, 'wevtutil qe ForwardedEvents /q:"*[System[EventRecordID > 6]]" /f:xml')
    assert code == 0 and out.count("<EventRecordID>7</EventRecordID>") == 2
    assert "EX01.contoso.local" in out and "EX02.contoso.local" in out
    assert wec.oldest_record == 1 and wec.newest_record == 2   # the log's own numbering


def test_wecutil_gr_is_read_back(wec, clock):
    out, _err, code = run_command_line(wec, f'wecutil gr "{SUB}"')
    assert code == 0
    status = parse_runtime_status(out)
    assert status.name == SUB
    assert [s.computer for s in status.sources] == [
        "EX01.contoso.local", "EX02.contoso.local", "EX09.contoso.local"]
    assert all(s.last_heartbeat is not None and abs(
        (s.last_heartbeat - (clock.now - timedelta(minutes=5))).total_seconds()) < 1
        for s in status.sources)
    assert run_command_line(wec, "wecutil gr Nope")[2] != 0


def test_heartbeat_loss_and_recovery(db, make_config, winrm, wec, clock):
    config = collector_config(make_config, winrm, heartbeat_timeout="30m")
    [collector] = config.collectors
    source = WinRMSource(collector.endpoint, config.polling)

    def look():
        return watch_collector(db, collector, config,
                               lambda: subscription_status(source, SUB), clock)

    result = look()
    assert result.error is None and sorted(result.alive) == ["EX01", "EX02", "EX09"]
    assert not _outbox(db)
    clock.advance(minutes=40)     # EX02 and the others fall silent; EX01 keeps beating
    wec.heartbeat(SUB, "EX01.contoso.local", clock.now - timedelta(minutes=1))
    result = look()
    assert sorted(result.silent) == ["EX02", "EX09"]
    look()                         # still silent: no second alert
    downs = [r for r in _outbox(db) if r["kind"] == "server_down"]
    assert sorted(r["server"] for r in downs) == ["EX02", "EX09"]
    assert "has not reached the collector WEC01 for 45 minutes" in downs[0]["detail"]
    wec.heartbeat(SUB, "EX02.contoso.local", clock.now)
    look()
    ups = [r for r in _outbox(db) if r["kind"] == "server_up"]
    assert [r["server"] for r in ups] == ["EX02"]
    assert store.server_state(db, "EX02").down_since is None


def test_unconfigured_origin_ignored_gets_no_alert(db, make_config, winrm, wec, clock):
    config = collector_config(make_config, winrm, unconfigured_origins="ignore")
    [collector] = config.collectors
    source = WinRMSource(collector.endpoint, config.polling)
    clock.advance(hours=2)
    result = watch_collector(db, collector, config, lambda: subscription_status(source, SUB),
                             clock)
    assert result.ignored == ["EX09.contoso.local"]
    assert sorted(r["server"] for r in _outbox(db)) == ["EX01", "EX02"]


def test_unreadable_collector_is_one_alert(db, make_config, winrm, wec, clock):
    config = collector_config(make_config, winrm, subscription="Missing")
    [collector] = config.collectors
    source = WinRMSource(collector.endpoint, config.polling)
    for _ in range(config.polling.alert_after_failures + 2):
        result = watch_collector(db, collector, config,
                                 lambda: subscription_status(source, "Missing"), clock)
        assert result.error and "Missing" in result.error
    rows = _outbox(db)
    assert [(r["kind"], r["server"]) for r in rows] == [("server_down", "WEC01 heartbeats")]


def test_check_lists_the_sources_both_ways(make_config, winrm, wec, clock):
    for setting, word in (("own_name", "taken under its own name"), ("ignore", "ignored")):
        config = collector_config(make_config, winrm, unconfigured_origins=setting)
        lines: list[str] = []
        assert check_collectors(config, lines.append, clock.now) == 0
        text = "\n".join(lines)
        assert f"subscription '{SUB}' is Active with 3 source(s)" in text
        assert "EX01.contoso.local -> EX01;" in text
        assert word in text
    config = collector_config(make_config, winrm, subscription="Missing")
    lines = []
    assert check_collectors(config, lines.append, clock.now) == 1
    assert "Does subscription 'Missing' exist on WEC01" in lines[0]




# --- reading ForwardedEvents: the bookmark cursor, origins, paging ------------------------------

def collector_source(config):
    [collector] = config.collectors
    return CollectorSource.of(collector, config.servers, config.polling)


def _events(db):
    return sorted((r["server"], r["origin"], r["record_id"], r["account"]) for r in db.query(
        "SELECT server, origin, record_id, account FROM events"))


def test_two_origins_with_the_same_record_id_are_stored_apart(db, make_config, winrm, wec,
                                                              clock):
    config = collector_config(make_config, winrm)
    wec.append_forwarded("EX01.contoso.local", 7, 1018, "CONTOSO\\a")
    wec.append_forwarded("EX02.contoso.local", 7, 1018, "CONTOSO\\b")
    result = poll_server_once(db, collector_source(config), config, clock)
    assert result.error is None and result.stored == 2
    assert _events(db) == [("WEC01", "EX01", 7, "CONTOSO\\a"), ("WEC01", "EX02", 7, "CONTOSO\\b")]
    # the fix names the origin's connector, not the collector
    connectors = sorted(r["connector"] for r in db.query("SELECT connector FROM events"))
    assert connectors == ["EX01\\Client Frontend EX01", "EX02\\Client Frontend EX02"]
    assert store.server_state(db, "WEC01").cursor == wec.newest_record == 2


def test_the_bookmark_pages_through_and_each_event_is_stored_once(db, make_config, winrm, wec,
                                                                 clock):
    config = collector_config(make_config, winrm, polling={"batch_size": 2})
    for n in range(5):   # both origins count from 1: every id collides
        wec.append_forwarded("EX01.contoso.local", n + 1, 1018, f"CONTOSO\\a{n}")
        wec.append_forwarded("EX02.contoso.local", n + 1, 1020, f"CONTOSO\\b{n}")
    source = collector_source(config)
    first = poll_server_once(db, source, config, clock)
    assert first.error is None and first.stored == 10
    assert first.round_trips >= 5                      # pages of two
    wec.append_forwarded("EX01.contoso.local", 6, 1018, "CONTOSO\\late")
    second = poll_server_once(db, collector_source(config), config, clock)   # a restart
    assert second.stored == 1 and len(_events(db)) == 11
    third = poll_server_once(db, source, config, clock)
    assert third.stored == 0 and store.server_state(db, "WEC01").cursor == 11


def test_a_bookmark_that_starts_at_its_own_record_stores_nothing_twice(db, make_config, winrm,
                                                                        wec, clock):
    wec.bookmark_inclusive = True       # how Windows does it is unverified: both must work
    config = collector_config(make_config, winrm, polling={"batch_size": 2})
    for n in range(5):
        wec.append_forwarded("EX01.contoso.local", n + 1, 1018, f"CONTOSO\\a{n}")
    result = poll_server_once(db, collector_source(config), config, clock)
    assert result.error is None and result.stored == 5 and len(_events(db)) == 5


def test_unconfigured_origin_is_taken_or_left_out_by_the_setting(db, make_config, winrm, wec,
                                                                 clock):
    wec.append_forwarded("EX09.contoso.local", 3, 1018, "CONTOSO\\c")
    wec.append_forwarded("EX01.contoso.local", 3, 1018, "CONTOSO\\a")
    ignoring = collector_config(make_config, winrm, unconfigured_origins="ignore")
    result = poll_server_once(db, collector_source(ignoring), ignoring, clock)
    assert result.stored == 1 and [e[1] for e in _events(db)] == ["EX01"]
    [left_out] = [p for p in result.problems if p.kind == "unconfigured_origin"]
    assert "1 event(s) from EX09.contoso.local were left out" in left_out.detail
    db.execute("DELETE FROM events")
    db.execute("DELETE FROM server_state")   # read the log again from its start
    taking = collector_config(make_config, winrm)
    result = poll_server_once(db, collector_source(taking), taking, clock)
    assert result.stored == 2 and sorted(e[1] for e in _events(db)) == ["EX01", "EX09"]


def test_a_page_cut_at_the_size_cap_is_read_again_smaller_and_nothing_is_lost(
        db, make_config, winrm, wec, clock):
    config = collector_config(make_config, winrm,
                              polling={"batch_size": 500, "max_output": "256KB"})
    for n in range(400):     # about 2 KB each in UTF-16: a page of 500 is over 256 KB
        wec.append_forwarded(f"EX0{n % 2 + 1}.contoso.local", n // 2 + 1, 1018,
                             f"CONTOSO\\svc-{n:03d}-" + "x" * 300)
    result = poll_server_once(db, collector_source(config), config, clock)
    assert result.error is None and result.stored == 400
    assert any(p.kind == "output_cut" for p in result.problems)
    assert len(_events(db)) == 400


def test_events_of_three_origins_through_one_collector_reach_three_routes(
        db, make_config, winrm, wec, clock):
    """End to end: forwarded events, one collector poll, Slack delivery by route."""
    from bot.engine.delivery import deliver_once
    from bot.engine.liveness import sweep_collector
    from bot.slack.sender import SlackSender
    from sim.slack_api import SlackStandIn
    from tests.conftest import BOT_TOKEN, CHANNEL
    winrm.add_server("EX03", EventLog("EX03.contoso.local"))   # configured, never polled here
    with SlackStandIn(bot_token=BOT_TOKEN, channels=(CHANNEL, "C0EX02", "C0EX03")) as slack3:
        config = collector_config(
            make_config, winrm, servers=("EX01", "EX02", "EX03"),
            slack={"api_url": slack3.api_url},
            routes=[{"name": "second", "servers": ["EX02"], "channel": "C0EX02"},
                    {"name": "third", "servers": ["EX03"], "channel": "C0EX03"}])
        for host in ("EX01", "EX02", "EX03"):
            wec.append_forwarded(f"{host}.contoso.local", 41, 1018, f"CONTOSO\\scan-{host}")
            wec.heartbeat(SUB, f"{host}.contoso.local", clock.now)
        [collector] = config.collectors
        source = collector_source(config)
        polled, live = sweep_collector(db, source, collector, config,
                                       lambda: subscription_status(source, SUB), clock)
        assert polled.error is None and polled.stored == 3 and live.error is None
        deliver_once(db, SlackSender.from_config(config.slack, retries=2), config, clock)
        for channel, host in ((CHANNEL, "EX01"), ("C0EX02", "EX02"), ("C0EX03", "EX03")):
            [message] = slack3.messages(channel)
            assert f"scan-{host}" in message["text"]
            assert f"{host}\\\\Client Frontend {host}" in str(message["blocks"]) or \
                f"{host}\\Client Frontend {host}" in str(message["blocks"])


def test_a_failed_heartbeat_read_while_events_flow_is_an_alert_of_its_own(db, make_config,
                                                                          winrm, wec, clock):
    from bot.engine.liveness import sweep_collector
    config = collector_config(make_config, winrm, subscription="Missing")
    [collector] = config.collectors
    source = collector_source(config)
    wec.append_forwarded("EX01.contoso.local", 5, 1018, "CONTOSO\\a")
    for _ in range(config.polling.alert_after_failures):
        polled, live = sweep_collector(db, source, collector, config,
                                       lambda: subscription_status(source, "Missing"), clock)
        assert polled.error is None and live.error     # events flow; heartbeats do not
    assert len(_events(db)) == 1
    assert [(r["kind"], r["server"]) for r in _outbox(db) if r["kind"] == "server_down"] == [
        ("server_down", "WEC01 heartbeats")]


def test_an_unreachable_collector_is_one_alert_and_its_origins_get_none(db, make_config, winrm,
                                                                        wec, clock):
    from bot.engine.liveness import sweep_collector
    config = collector_config(make_config, winrm)
    [collector] = config.collectors
    source = collector_source(config)
    winrm.inject("WEC01", "unauthorized", times=None)
    clock.advance(hours=2)       # every origin's heartbeat is old by now
    for _ in range(config.polling.alert_after_failures + 1):
        polled, live = sweep_collector(db, source, collector, config,
                                       lambda: subscription_status(source, SUB), clock)
        assert polled.error and live.error == polled.error and not live.silent
    assert [(r["kind"], r["server"]) for r in _outbox(db)] == [("server_down", "WEC01")]


# --- servers fed by a collector: configuration, status, metrics, check, poll-once ---------------

def fed_config(winrm, slack, db_path, **collector):
    """EX01 polled; EX07 named only (no url): its events come through collector WEC01."""
    from bot.core.config import parse_config
    from tests.conftest import BOT_TOKEN, CHANNEL, WINRM_PASSWORD
    return parse_config({
        "slack": {"channel": CHANNEL, "api_url": slack.api_url},
        "store": {"path": db_path},
        "polling": {"operation_timeout": 2, "read_timeout": 5},
        "servers": [{"name": "EX01", "url": winrm.url_for("EX01"), "username": WINRM_USER,
                     "password_env": "WINRM_PASSWORD"},
                    {"name": "EX07", "channel": "C0EX02"}],
        "collectors": [{"name": "WEC01", "url": winrm.url_for("WEC01"), "username": WINRM_USER,
                        "password_env": "WINRM_PASSWORD", "subscription": SUB, **collector}],
    }, {"SLACK_BOT_TOKEN": BOT_TOKEN, "WINRM_PASSWORD": WINRM_PASSWORD})


def test_a_server_without_url_is_named_but_never_polled(winrm, slack, db_path, wec):
    from bot.core.config import parse_config
    config = fed_config(winrm, slack, db_path)
    servers = {s.name: s for s in config.servers}
    assert servers["EX01"].polled and not servers["EX07"].polled
    assert servers["EX07"].url == "" and servers["EX07"].channel == "C0EX02"
    with pytest.raises(ConfigError, match="servers.EX07.username is set but servers.EX07.url "
                                          "is not: without url SubmitWatch never connects"):
        parse_config({"slack": {"channel": "C0X"}, "servers": [
            {"name": "EX07", "username": "CONTOSO\\svc"}]}, {"SLACK_BOT_TOKEN": "xoxb-t"})
    with pytest.raises(ConfigError, match="collectors.WEC01.url"):   # a collector needs its url
        parse_config({"slack": {"channel": "C0X"}, "collectors": [
            {"name": "WEC01", "subscription": SUB}]}, {"SLACK_BOT_TOKEN": "xoxb-t"})


def test_status_shows_the_fed_server_by_its_heartbeat_and_events(db, winrm, slack, db_path,
                                                                 wec, clock):
    from bot.engine.liveness import sweep_collector
    from tests.helpers import ask
    config = fed_config(winrm, slack, db_path)
    wec.heartbeat(SUB, "EX07.contoso.local", clock.now - timedelta(minutes=3))
    wec.append_forwarded("EX07.contoso.local", 12, 1018, "CONTOSO\\scan-7")
    [collector] = config.collectors
    source = collector_source(config)
    polled, live = sweep_collector(db, source, collector, config,
                                   lambda: subscription_status(source, SUB), clock)
    assert polled.stored == 1 and "EX07" in live.alive
    text = ask(db, config, clock, "status").text
    [ex07] = [line for line in text.splitlines() if "*EX07*" in line]
    assert ":white_check_mark: ok" in ex07
    assert "through collector *WEC01* (as `EX07.contoso.local`, Active): last heartbeat 3m ago" \
        in ex07
    assert "1 event in the last day" in ex07
    [wec01] = [line for line in text.splitlines() if line.startswith("• *WEC01*")]
    assert "(collector, subscription “Exchange Submit”)" in wec01 and "heartbeats read" in wec01
    assert "no longer configured" not in text      # neither the collector nor its heartbeats
    # EX09 reports to the collector but has no [[servers]] entry: taken under its own name
    assert "• *EX09* (not configured: taken under its own name): " in text
    clock.advance(hours=1)                           # EX07 falls silent
    sweep_collector(db, source, collector, config, lambda: subscription_status(source, SUB),
                    clock)
    [ex07] = [line for line in ask(db, config, clock, "status").text.splitlines()
              if "*EX07*" in line]
    assert ":x: silent" in ex07 and "has not reached the collector WEC01" in ex07


def test_metrics_per_origin(db, winrm, slack, db_path, wec, clock):
    from prometheus_client import generate_latest

    from bot.engine.liveness import sweep_collector
    from bot.ops.metrics import registry_for
    config = fed_config(winrm, slack, db_path)
    wec.heartbeat(SUB, "EX07.contoso.local", clock.now - timedelta(seconds=90))
    for record in (3, 4):
        wec.append_forwarded("EX07.contoso.local", record, 1018, "CONTOSO\\scan-7")
    [collector] = config.collectors
    source = collector_source(config)
    sweep_collector(db, source, collector, config, lambda: subscription_status(source, SUB),
                    clock)
    text = generate_latest(registry_for(lambda: store.open_db(db_path), clock)).decode()
    assert 'submitwatch_origin_events_last_day{origin="EX07"} 2.0' in text
    assert 'submitwatch_origin_heartbeat_age_seconds{collector="WEC01",origin="EX07"} 90.0' \
        in text
    assert 'submitwatch_origin_last_event_timestamp_seconds{origin="EX07"}' in text


def test_check_says_where_a_fed_server_s_events_come_from(winrm, slack, db_path, wec, clock):
    from bot.ops.check import _fed_server
    config = fed_config(winrm, slack, db_path)
    ex07 = {s.name: s for s in config.servers}["EX07"]
    lines: list[str] = []
    assert _fed_server(config, ex07, lines.append) == 0
    assert lines == ["OK       EX07: not polled (no url); its events come through collector "
                     "WEC01"]
    from dataclasses import replace
    lines = []
    assert _fed_server(replace(config, collectors=()), ex07, lines.append) == 1
    assert lines[0].startswith("FAILED   EX07: it has no url, so SubmitWatch never polls it")


def test_poll_once_reads_the_collector_and_never_the_fed_server(tmp_path, winrm, slack, wec,
                                                                clock):
    from tests.helpers import ENV, run_cli
    wec.append_forwarded("EX07.contoso.local", 5, 1020, "CONTOSO\\Administrator")
    wec.heartbeat(SUB, "EX07.contoso.local", clock.now)
    path = tmp_path / "submitwatch.toml"
    path.write_text(f"""
[slack]
channel = "C0ALERTS"
api_url = "{slack.api_url}"

[store]
path = "{tmp_path / 'sw.db'}"

[[servers]]
name = "EX07"

[[collectors]]
name = "WEC01"
url = "{winrm.url_for('WEC01')}"
username = '{WINRM_USER}'
password_env = "WINRM_PASSWORD"
subscription = "{SUB}"
""", encoding="utf-8")
    result = run_cli("poll-once", "--config", str(path), env=ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WEC01: 1 new event(s)" in result.stdout and "EX07:" not in result.stdout
    [message] = slack.messages("C0ALERTS")
    assert "Administrator" in message["text"]


def _outbox(db):
    return list(db.query("SELECT kind, server, detail FROM outbox ORDER BY id"))


def test_the_scheduler_polls_the_collector_and_never_a_fed_server(winrm, slack, db_path, wec):
    from bot.ops.scheduler import build_scheduler
    from bot.slack.sender import SlackSender
    config = fed_config(winrm, slack, db_path)
    background = build_scheduler(config, SlackSender.from_config(config.slack))
    background.jobs.start(paused=True)
    try:
        jobs = {job.id for job in background.jobs.get_jobs()}
    finally:
        background.jobs.shutdown(wait=False)
    assert {"poll:EX01", "collector:WEC01"} <= jobs
    assert not any("EX07" in job for job in jobs)


def test_a_fed_server_s_protocol_log_is_said_unreadable_in_words(db, winrm, slack, db_path,
                                                                 wec):
    from bot.engine.devices import _read
    config = fed_config(winrm, slack, db_path)
    ex07 = {s.name: s for s in config.servers}["EX07"]

    def never(server):
        raise AssertionError("no shell is opened on a server without url")

    read, problem = _read(db, config, ex07, "EX07", "FrontEnd", (), never)
    assert read is None
    assert problem.startswith("SubmitWatch has no WinRM access to EX07 (its [[servers]] entry "
                              "has no url")


def test_status_lists_the_sources_a_collector_leaves_out(db, winrm, slack, db_path, wec, clock):
    from tests.helpers import ask
    config = fed_config(winrm, slack, db_path, unconfigured_origins="ignore")
    [collector] = config.collectors
    source = collector_source(config)
    watch_collector(db, collector, config, lambda: subscription_status(source, SUB), clock)
    text = ask(db, config, clock, "status").text
    [wec01] = [line for line in text.splitlines() if line.startswith("• *WEC01*")]
    assert ('left out, not configured (unconfigured_origins = "ignore"): '
            "`EX02.contoso.local`, `EX09.contoso.local`") in wec01
    assert "*EX09*" not in text


def test_a_collector_s_unset_password_is_named_before_anything_runs(winrm, slack, db_path, wec):
    from bot.core.config import missing_secrets, parse_config
    from tests.conftest import BOT_TOKEN, CHANNEL
    config = parse_config({
        "slack": {"channel": CHANNEL, "api_url": slack.api_url}, "store": {"path": db_path},
        "collectors": [{"name": "WEC01", "url": winrm.url_for("WEC01"), "username": WINRM_USER,
                        "password_env": "WEC_PASSWORD", "subscription": SUB}]},
        {"SLACK_BOT_TOKEN": BOT_TOKEN})
    assert "WEC_PASSWORD (the WinRM password for collector WEC01)" in missing_secrets(
        config, slack_mode=None)


def test_a_fed_server_is_unwatched_only_while_silent(db, winrm, slack, db_path, wec, clock):
    from bot.engine.liveness import sweep_collector
    from bot.engine.summary import unwatched
    config = fed_config(winrm, slack, db_path)
    assert unwatched(db, config) == ["EX01"]     # EX01 never polled; EX07 is never polled
    [collector] = config.collectors
    source = collector_source(config)
    wec.heartbeat(SUB, "EX07.contoso.local", clock.now - timedelta(hours=2))
    sweep_collector(db, source, collector, config, lambda: subscription_status(source, SUB),
                    clock)
    assert "EX07" in unwatched(db, config)       # silent past the heartbeat timeout
