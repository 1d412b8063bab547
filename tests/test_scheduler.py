"""The background wiring: one APScheduler job per server with the options the issue asks
for, housekeeping beside them, and the delivery loop that polls wake."""
import threading

from apscheduler.triggers.interval import IntervalTrigger

from bot.ops.scheduler import DeliveryLoop, build_scheduler, poll_and_wake
from bot.slack.sender import SlackSender
from bot.sources.winrm import WinRMSource


def test_one_poll_job_per_server_plus_delivery_and_the_quiet_sweep(make_config):
    config = make_config(polling={"interval": "90s", "jitter": "7s"})
    background = build_scheduler(config, SlackSender.from_config(config.slack))
    background.jobs.start(paused=True)  # job defaults are applied when jobs are really added
    try:
        jobs = {job.id: job for job in background.jobs.get_jobs()}
    finally:
        background.jobs.shutdown(wait=False)
    # and the device look-up ([devices] is on by default), beside the polls
    assert set(jobs) == {"poll:EX01", "poll:EX02", "housekeeping", "retention", "devices"}
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
    """Delivery runs every 10 minutes here and the next poll is a minute away: the alert still
    comes right after the first poll, which woke delivery (real APScheduler, no interval waited
    for: the first poll of a server runs at start)."""
    logs["EX01"].append("MSExchangeFrontEndTransport", 1020, ("CONTOSO\\svc-scanner",))
    config = make_config(servers=("EX01",), polling={"interval": "60s", "jitter": 0,
                                                      "delivery_interval": "600s"})
    background = build_scheduler(config, SlackSender.from_config(config.slack))
    background.start()
    try:
        slack.wait_for_calls("chat.postMessage", 1, timeout=15)
    finally:
        background.shutdown()


def test_poll_and_wake_wakes_delivery_only_when_events_were_stored(logs, db, make_config):
    config = make_config(servers=("EX01",))
    source = WinRMSource(config.servers[0], config.polling)
    wakes: list[int] = []
    poll_and_wake(lambda: wakes.append(1), db, source, config)
    assert wakes == []                       # nothing new
    logs["EX01"].append("MSExchangeFrontEndTransport", 1020, ("CONTOSO\\svc-scanner",))
    poll_and_wake(lambda: wakes.append(1), db, source, config)
    assert wakes == [1]


def test_a_wake_while_delivery_is_sending_runs_it_once_more_never_lost_never_doubled():
    """The second alert found while the first is still being sent goes out right after it, not
    a whole delivery interval (an hour here) later; two wakes during one step make one rerun."""
    started, release = threading.Semaphore(0), threading.Semaphore(0)
    runs: list[int] = []

    def step():
        runs.append(len(runs))
        started.release()
        release.acquire()       # "waiting for Slack's answer" until the test lets it go

    loop = DeliveryLoop(step, interval=3600)
    loop.start()
    try:
        assert started.acquire(timeout=10)      # the first round, at start
        loop.wake()
        loop.wake()                             # two polls stored events meanwhile
        release.release()
        assert started.acquire(timeout=10)      # one more round, at once
        release.release()
        assert not started.acquire(timeout=0.3)  # and no third: the wakes were one
        assert runs == [0, 1]
    finally:
        loop.stop(timeout=5)
        release.release()
