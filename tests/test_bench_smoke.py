"""A short run of the benchmark code (bench/, `make bench`) at tiny sizes: it must keep working
and produce sane figures. No timing is asserted: only that each row measured what it says."""
from __future__ import annotations

import pytest

from bench import (
    accounts,
    chat,
    collector,
    devices,
    footprint,
    history,
    ingest,
    latency,
    otlp,
    startup,
    storm,
    sweep,
)
from bench.common import QUICK, percentile, spread, table


def test_statistics_helpers():
    assert percentile([5, 1, 4, 2, 3], 50) == 3
    assert percentile(list(range(1, 101)), 99) == 99
    assert spread([3.0, 1.0, 2.0]) == "2.00 (1.00-3.00, n=3)"


def test_ingest_stores_every_event_and_measures_both_sides(tmp_path):
    result = ingest.run(QUICK, tmp_path)
    assert result.data["events"] == QUICK.ingest_events
    assert all(rate > 0 for rate in result.data["rates"] + result.data["floors"])
    assert result.ratio > 0 and result.met in (True, False)


def test_sweep_polls_every_server_over_ntlm_in_a_child_process(tmp_path):
    result = sweep.run(QUICK, tmp_path)
    assert result.data["workers"] == QUICK.sweep_servers
    # Create, one Command (gli & qe), its Receive, Delete: the NTLM handshake is made once per
    # server and kept, so a steady poll is four requests.
    assert result.data["requests_per_poll"] == 4
    assert result.data["one_poll"] > 0 and all(s > 0 for s in result.data["seconds"])


def test_latency_matches_every_event_to_its_slack_post(tmp_path):
    result = latency.run(QUICK, tmp_path)
    for _label, p50, p99, worst, count in result.data["variants"]:
        assert count == QUICK.latency_events
        assert 0 < p50 <= p99 <= worst < 60


def test_chat_handlers_answer_on_a_filled_database(tmp_path):
    result = chat.run(QUICK, tmp_path)
    assert set(result.data["figures"]) == {"history", "history ACCOUNT", "show", "status"}
    assert all(p50 > 0 and p95 >= p50 for p50, p95, _, _ in result.data["figures"].values())


def test_storm_posts_once_and_loses_nothing(tmp_path):
    result = storm.run(QUICK, tmp_path)
    data = result.data
    assert data["error"] is None and data["events"] == data["linked"] == QUICK.storm_events
    assert data["posts"] == 1 and data["final_ok"] and data["outbox_left"] == 0
    assert 0 < data["rss_start_mb"] <= data["peak_mb"]


def test_a_storm_of_accounts_is_a_few_alerts_and_one_digest(tmp_path):
    data = accounts.run(QUICK, tmp_path).data
    assert data["error"] is None and data["lost"] == 0 and data["duplicates"] == 0
    assert data["alone"] == 5 and data["alone"] + data["listed"] == QUICK.storm_accounts
    assert data["represented"] is not None and data["top_level"] == 6


def test_footprint_reads_an_idle_submitwatch_run(tmp_path):
    result = footprint.run(QUICK, tmp_path)
    assert result.data["polled"] == QUICK.footprint_servers
    assert result.data["posts"] == QUICK.footprint_servers  # one alert per server's account
    assert result.data["rss_mb"] > 10 and result.data["cpu_pct"] >= 0


def test_startup_compares_with_a_bare_interpreter(tmp_path):
    result = startup.run(QUICK, tmp_path)
    assert len(result.data["help_ms"]) == QUICK.startup_runs
    assert all(ms > 0 for ms in result.data["help_ms"] + result.data["bare_ms"])
    assert "| 7 |" in table([result])


def test_history_times_each_lookup_and_the_retention_run(tmp_path):
    result = history.run(QUICK, tmp_path)
    figures = result.data["figures"]
    assert {"history", "history ACCOUNT", "history SERVER", "show", "status", "summary",
            "floor"} <= set(figures)
    assert all(0 < p50 <= p95 <= worst for p50, p95, worst in figures.values())
    retention = result.data["retention"]
    assert retention["deleted"]["events"] == result.data["expiring"] >= history.QUICK_SIZES.expired
    assert retention["transactions"] >= len(retention["deleted"]) and retention["waits"]["before"]
    assert not list(tmp_path.iterdir())   # the database is deleted at the end


def test_device_lookups_read_the_protocol_log_and_time_a_poll_beside_them(tmp_path):
    data = devices.run(QUICK, tmp_path).data
    assert data["files"] == QUICK.devices_hours            # one file per hour, under the bound
    assert data["found"]["incidents"] == QUICK.devices_accounts
    assert data["found"]["written"] == QUICK.devices_sessions
    # Every incident's device, with every session: no line lost between runs.
    assert data["found"]["whole"] == data["found"]["incidents"]
    # Every refusal's line came back from the server at least once; every byte was read.
    assert sum(r["lines"] for r in data["reads"]) >= QUICK.devices_sessions
    assert data["read_bytes"] >= data["folder_bytes"] > QUICK.devices_file_bytes
    # One new incident in one hour: only that hour's file is read, and its device is named.
    assert data["only_its_hours"] and data["new_state"] == "found"
    assert [len(s) for s in data["alone"] + data["beside"]] == [QUICK.devices_polls] * 2
    assert all(runs > 0 for _, runs, _, _, _ in data["overlap"])
    assert not list(tmp_path.iterdir())   # the database is deleted at the end


def test_otlp_ingest_stores_every_event_and_each_push_reaches_slack(tmp_path):
    data = otlp.run(QUICK, tmp_path).data
    assert data["events"] == otlp.QUICK_SIZES.events
    assert len(data["requests"]) == otlp.QUICK_SIZES.events // otlp.QUICK_SIZES.batch
    assert all(rate > 0 for rate in data["rates"] + data["floors"] + data["stores"])
    assert len(data["latencies"]) == otlp.QUICK_SIZES.latency_events
    assert all(0 < seconds < 30 for seconds in data["latencies"])


@pytest.mark.parametrize("argv", [["--quick", "--rows", "7"]])
def test_the_command_prints_a_table(argv, capsys):
    from bench.__main__ import main
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| # | what |" in out and "Machine:" in out


def test_collector_sweep_stores_every_origin_apart_and_nothing_twice(tmp_path):
    data = collector.run(QUICK, tmp_path).data
    assert data["error"] is None
    assert data["events"] == data["pairs"] == data["represented"] == QUICK.collector_events
    assert data["origins"] == QUICK.collector_origins and data["duplicated"] == 0
    assert data["floor_seconds"] > 0 and data["floor_pages"] >= 2
