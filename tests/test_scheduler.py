"""The background wiring: one APScheduler job per server with the options the issue asks
for, housekeeping beside them, and the delivery loop that polls wake."""
from apscheduler.triggers.interval import IntervalTrigger

from bot.scheduler import build_scheduler
from bot.slack.sender import SlackSender


def test_one_poll_job_per_server_plus_delivery_and_the_quiet_sweep(make_config):
    config = make_config(polling={"interval": "90s", "jitter": "7s"})
    background = build_scheduler(config, SlackSender.from_config(config.slack))
    background.jobs.start(paused=True)  # job defaults are applied when jobs are really added
    try:
        jobs = {job.id: job for job in background.jobs.get_jobs()}
    finally:
        background.jobs.shutdown(wait=False)
    assert set(jobs) == {"poll:EX01", "poll:EX02", "housekeeping", "retention"}
    for name in ("EX01", "EX02"):
        job = jobs[f"poll:{name}"]
        assert isinstance(job.trigger, IntervalTrigger)
        assert job.trigger.interval.total_seconds() == 90 and job.trigger.jitter == 7
        assert job.max_instances == 1 and job.coalesce is True
        assert job.executor == "default"
    # Housekeeping never waits behind slow servers; delivery has a thread of its own.
    assert jobs["housekeeping"].executor == jobs["retention"].executor == "housekeeping"
    assert background.delivery.interval == config.polling.delivery_interval


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
        scheduler.shutdown()


def test_a_poll_that_stores_events_while_delivery_is_sending_is_not_dropped(logs, make_config,
                                                                             slack):
    """The wake must not be lost when delivery is busy: a second alert found while the first is
    still being sent goes out right after it, not a whole delivery interval (60 s) later."""
    slack.answer_delay = 4  # each Slack call is taken at once but answered 4 s later
    logs["EX01"].append("MSExchangeFrontEndTransport", 1020, ("CONTOSO\\svc-scanner",))
    config = make_config(polling={"interval": "1s", "jitter": 0, "delivery_interval": "60s"})
    scheduler = build_scheduler(config, SlackSender.from_config(config.slack))
    scheduler.start()
    try:
        slack.wait_for_calls("chat.postMessage", 1, timeout=15)
        # Delivery now waits for Slack's answer; EX02's next poll (1 s) finds a new account.
        logs["EX02"].append("MSExchangeFrontEndTransport", 1020, ("CONTOSO\\svc-copier",))
        posts = slack.wait_for_calls("chat.postMessage", 2, timeout=20)
    finally:
        scheduler.shutdown()
    assert "svc-copier" in posts[1].params["text"]
