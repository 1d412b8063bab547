"""`submitwatch preview`: the open incidents' alerts, rendered from the database as they would be
posted now, into one local page; read-only, nothing sent."""
from __future__ import annotations

import html

import pytest

from handlers.preview import write_preview
from store.db import StoreError


def test_preview_renders_the_open_alerts_without_sending_anything(posted, slack, tmp_path):
    config, incident, message = posted
    calls = len(slack.calls_to("chat.postMessage")) + len(slack.calls_to("chat.update"))
    page, count = write_preview(config, tmp_path / "preview.html")
    text = page.read_text(encoding="utf-8")
    assert count == 1
    assert html.escape(f"SMTP submit denied: {incident.account}") in text
    assert "nothing was sent to Slack" in text
    assert len(slack.calls_to("chat.postMessage")) + len(slack.calls_to("chat.update")) == calls


def test_preview_of_a_database_that_does_not_exist_creates_nothing(make_config, tmp_path):
    config = make_config(store={"path": str(tmp_path / "none.db")})
    with pytest.raises(StoreError, match="no database at"):
        write_preview(config, tmp_path / "p.html")
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "p.html").exists()
