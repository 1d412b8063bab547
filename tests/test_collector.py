"""A Windows Event Collector: its [[collectors]] entry, origins mapped to configured servers,
liveness per origin from `wecutil gr`, `check`'s listing, and the simulator's collector mode."""
from __future__ import annotations

from datetime import timedelta

import pytest

from bot.core.config import ConfigError, ServerConfig
from bot.engine.liveness import watch_collector
from bot.ops.check import check_collectors
from bot.sources.origins import origin_name
from bot.sources.winrm import WinRMSource, parse_runtime_status, subscription_status
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


def collector_config(make_config, winrm, **extra):
    return make_config(collectors=[{
        "name": "WEC01", "url": winrm.url_for("WEC01"), "username": WINRM_USER,
        "password_env": "WINRM_PASSWORD", "subscription": SUB, **extra}])


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
    assert [(r["kind"], r["server"]) for r in rows] == [("server_down", "WEC01")]


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


def _outbox(db):
    return list(db.query("SELECT kind, server, detail FROM outbox ORDER BY id"))
