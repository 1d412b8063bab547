"""What happens in this process, counted as it happens: polls, their duration, events stored,
Slack API calls and errors. Recorded where the work is done (bot.engine.poller,
bot.slack.sender); served by bot.ops.metrics, which registers these into each registry it serves.
"""
from __future__ import annotations

from prometheus_client import Counter, Histogram

POLLS = Counter("submitwatch_polls", "Polls of an Exchange server, by outcome (ok, failed).",
                ["server", "outcome"], registry=None)
POLL_SECONDS = Histogram("submitwatch_poll_duration_seconds",
                         "How long one poll of a server took.", ["server"], registry=None,
                         buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
EVENTS = Counter("submitwatch_events_stored", "New 1018/1020 events stored, per server.",
                 ["server"], registry=None)
SLACK_CALLS = Counter("submitwatch_slack_api_calls", "Slack Web API calls, by method.",
                      ["method"], registry=None)
SLACK_ERRORS = Counter("submitwatch_slack_api_errors",
                       "Slack Web API calls that failed, by method and error code.",
                       ["method", "error"], registry=None)
REFUSED = Counter("submitwatch_slack_messages_refused",
                  "Slack messages refused as they were (too long, invalid), by what was done: "
                  "shortened (sent smaller) or given_up.", ["outcome", "error"], registry=None)
OTLP = Counter("submitwatch_otlp", "What the OTLP/HTTP logs receiver took, by what: requests, "
               "records, stored (new events), dropped (not ours), malformed, unknown_origin "
               "(a computer that is not a configured server), refused (503: no writes).",
               ["what"], registry=None)
PROCESS_METRICS = (POLLS, POLL_SECONDS, EVENTS, SLACK_CALLS, SLACK_ERRORS, REFUSED, OTLP)


def record_poll(server: str, seconds: float, stored: int, failed: bool) -> None:
    POLLS.labels(server, "failed" if failed else "ok").inc()
    POLL_SECONDS.labels(server).observe(seconds)
    if stored:
        EVENTS.labels(server).inc(stored)


def record_slack_call(method: str, error: str | None = None) -> None:
    SLACK_CALLS.labels(method).inc()
    if error:
        SLACK_ERRORS.labels(method, error).inc()


def record_refused(outcome: str, error: str) -> None:
    """A message Slack refused as it was: "shortened" (a smaller rendering was sent) or
    "given_up"."""
    REFUSED.labels(outcome, error).inc()


def record_otlp(what: str, amount: int) -> None:
    if amount:
        OTLP.labels(what).inc(amount)
