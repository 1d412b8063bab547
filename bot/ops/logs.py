"""Log lines for a person (text) or for a log shipper (one JSON object per line).

JSON lines carry the time (UTC, ISO 8601), level, logger and message, and the structured fields
a call passes with `extra=` (server, incident, outbox_id), so a shipper can filter on them
without parsing the message. The filters on the handler (no NTLM tokens) apply to both.
"""
from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"
#: Fields a log call may attach with extra={...}; JSON lines carry them as keys.
FIELDS = ("server", "incident", "outbox_id")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in FIELDS:
            if getattr(record, field, None) is not None:
                line[field] = getattr(record, field)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter(kind: str) -> logging.Formatter:
    return JsonFormatter() if kind == "json" else logging.Formatter(TEXT_FORMAT)


def use_format(kind: str) -> None:
    """Switch every root handler to `kind` ("text" or "json")."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter(kind))


#: slack_sdk's Web API client logs every failed attempt and every retry on its own logger, at
#: ERROR and INFO ("Failed to send a request to Slack API server: <urlopen error ...>", "A
#: retry handler found: ...", "Going to retry the same request: ..."), with raw exception text.
#: SubmitWatch says the outcome once, in words: `check` one FAILED line, delivery its own line.
SLACK_SDK_LOGGER = "slack_sdk.web.base_client"
SLACK_SDK_ATTEMPT_LINES = ("Failed to send a request to Slack API server",
                           "A retry handler found:", "Going to retry the same request")


def _not_a_slack_sdk_attempt(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(SLACK_SDK_ATTEMPT_LINES)


def quiet_slack_sdk_attempts() -> None:
    """Keep slack_sdk's per-attempt lines out of the log (its other lines stay). Idempotent."""
    logger = logging.getLogger(SLACK_SDK_LOGGER)
    if _not_a_slack_sdk_attempt not in logger.filters:
        logger.addFilter(_not_a_slack_sdk_attempt)
