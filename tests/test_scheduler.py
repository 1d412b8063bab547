"""The APScheduler wiring: one job per server with the options the issue asks for."""
from apscheduler.triggers.interval import IntervalTrigger

from bot.scheduler import build_scheduler
from bot.slack_out import SlackSender


def test_one_poll_job_per_server_plus_delivery_and_the_quiet_sweep(make_config):
    config = make_config(polling={"interval": "90s", "jitter": "7s"})
    scheduler = build_scheduler(config, SlackSender.from_config(config.slack))
    scheduler.start(paused=True)  # job defaults are applied when jobs are really added
    try:
        jobs = {job.id: job for job in scheduler.get_jobs()}
    finally:
        scheduler.shutdown(wait=False)
    assert set(jobs) == {"poll:EX01", "poll:EX02", "deliver", "housekeeping",
                         "retention"}
    for name in ("EX01", "EX02"):
        job = jobs[f"poll:{name}"]
        assert isinstance(job.trigger, IntervalTrigger)
        assert job.trigger.interval.total_seconds() == 90 and job.trigger.jitter == 7
        assert job.max_instances == 1 and job.coalesce is True
        assert job.executor == "default"
    # Slack delivery never waits behind slow servers.
    assert jobs["deliver"].executor == jobs["housekeeping"].executor == "slack"
    assert jobs["retention"].executor == "slack"
    assert jobs["deliver"].max_instances == 1 and jobs["deliver"].coalesce is True
    assert jobs["deliver"].trigger.interval.total_seconds() == config.polling.delivery_interval


def test_a_poll_that_stored_events_runs_delivery_at_once(logs, make_config, slack):
    """Delivery runs every 30 s here; the alert still comes right after the poll that found it."""
    logs["EX01"].append("MSExchangeFrontEndTransport", 1020, ("CONTOSO\\svc-scanner",))
    config = make_config(servers=("EX01",), polling={"interval": "1s", "jitter": 0,
                                                      "delivery_interval": "30s"})
    scheduler = build_scheduler(config, SlackSender.from_config(config.slack))
    scheduler.start()
    try:
        slack.wait_for_calls("chat.postMessage", 1, timeout=15)
    finally:
        scheduler.shutdown(wait=True)
