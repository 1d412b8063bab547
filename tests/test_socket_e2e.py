"""The whole app as a team uses it, over Socket Mode: `bot.app.run` with its scheduler polls the
simulator, posts through slack_sdk, and answers button clicks, the Home tab and slash commands
that the Slack stand-in delivers as websocket envelopes. Acks are checked for each envelope."""
from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from bot.app import run
from bot.core.config import Secret
from bot.slack.alerts import ACTION_ACK, ACTION_SHOW_FIX, ACTION_SNOOZE
from store import chat
from store.db import open_db
from tests.conftest import CHANNEL
from tests.helpers import scanner, wait_until

ALICE, MALLORY = "U0ALICE", "U0MALLORY"


@pytest.fixture
def running(logs, make_config, slack, db_path):
    # Delivery's own tick (60 s) is longer than any wait below: the alert and every change to
    # it go out because the poll, the click or the command woke delivery.
    config = make_config(servers=("EX01",), polling={"interval": "1s", "jitter": 0,
                                                      "delivery_interval": "60s"},
                         incidents={"update_interval": "0s"},
                         permissions={"users": [ALICE]})
    config = replace(config, slack=replace(config.slack, app_token=Secret(slack.app_token)))
    scanner(logs["EX01"], 2)
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(config, stop), daemon=True)
    thread.start()
    slack.wait_for_socket(timeout=20)
    slack.wait_for_calls("chat.postMessage", 1, timeout=20)
    [message] = slack.messages(CHANNEL)
    incident_id = message["metadata"]["event_payload"]["incident_id"]
    yield message, incident_id
    stop.set()
    thread.join(30)
    assert not thread.is_alive()


def click(slack, user, message, action_id, **value):
    payload = slack.block_actions_payload(user, CHANNEL, message["ts"], action_id, **value)
    envelope = slack.send_envelope("interactive", payload)
    assert slack.wait_for_ack(envelope, timeout=5)["envelope_id"] == envelope
    return payload


def test_acknowledge_button_updates_the_alert_and_its_thread(running, slack, db_path):
    message, incident_id = running
    click(slack, ALICE, message, ACTION_ACK, value=str(incident_id))
    updated = wait_until(lambda: next((m for m in slack.messages(CHANNEL)
                                       if "Acknowledged by <@U0ALICE>" in str(m["blocks"])),
                                      None))
    assert updated["ts"] == message["ts"] and len(slack.messages(CHANNEL)) == 1
    wait_until(lambda: slack.messages(CHANNEL)[0]["replies"])
    assert slack.messages(CHANNEL)[0]["replies"][0]["text"].startswith(
        "Acknowledged by <@U0ALICE> at ")
    [row] = chat.audit_trail(open_db(db_path), incident_id)
    assert (row["user_id"], row["via"], row["outcome"]) == (ALICE, "button", "done")


def test_someone_not_allowed_gets_a_private_refusal_and_is_audited(running, slack, db_path):
    message, incident_id = running
    payload = click(slack, MALLORY, message, ACTION_SNOOZE,
                    selected_option_value=f"{incident_id}:3600")
    [response] = slack.wait_for_responses(1, timeout=10, url=payload["response_url"])
    assert response["payload"]["response_type"] == "ephemeral"
    assert response["payload"]["replace_original"] is False
    assert "limited to <@U0ALICE>" in response["payload"]["text"]
    [row] = chat.audit_trail(open_db(db_path), incident_id)
    assert (row["user_id"], row["action"], row["outcome"]) == (MALLORY, "snooze", "refused")
    assert chat.active_snoozes(open_db(db_path), datetime.now(UTC)) == []


def test_snooze_menu_and_show_fix(running, slack, db_path):
    message, incident_id = running
    click(slack, ALICE, message, ACTION_SNOOZE, selected_option_value=f"{incident_id}:14400")
    wait_until(lambda: "Snoozed (this incident) by <@U0ALICE>" in str(
        slack.messages(CHANNEL)[0]["blocks"]))
    payload = click(slack, MALLORY, message, ACTION_SHOW_FIX, value=str(incident_id))
    [response] = slack.wait_for_responses(1, timeout=10, url=payload["response_url"])
    shown = str(response["payload"]["blocks"])
    # Reading is for anyone. A 1020 (a built-in identity on 2013+): the SID check, no grant.
    assert "NTAccount -ArgumentList 'CONTOSO\\\\svc-scanner'" in shown
    assert "Add-ADPermission" not in shown
    assert response["payload"]["response_type"] == "ephemeral"


def test_the_home_tab_is_published_when_opened(running, slack):
    _, incident_id = running
    envelope = slack.send_envelope("events_api", slack.app_home_opened_event(ALICE))
    slack.wait_for_ack(envelope, timeout=5)
    view = wait_until(lambda: slack.home_view(ALICE))
    text = str(view["blocks"])
    assert f"#{incident_id}" in text and "You may acknowledge and snooze alerts." in text


def test_slash_history_over_socket_mode(running, slack):
    payload = slack.slash_command_payload("history CONTOSO\\svc-scanner --share")
    envelope = slack.send_envelope("slash_commands", payload)
    slack.wait_for_ack(envelope, timeout=5)
    [response] = slack.wait_for_responses(1, timeout=10, url=payload["response_url"])
    assert response["payload"]["response_type"] == "in_channel"
    assert "svc-scanner" in str(response["payload"])


def test_slash_ack_updates_the_alert_at_once(running, slack):
    message, incident_id = running
    payload = slack.slash_command_payload(f"ack #{incident_id} replacing the scanner's account",
                                          user_id=ALICE)
    slack.wait_for_ack(slack.send_envelope("slash_commands", payload), timeout=5)
    wait_until(lambda: "Acknowledged by <@U0ALICE>" in str(slack.messages(CHANNEL)[0]["blocks"]))
    assert slack.messages(CHANNEL)[0]["ts"] == message["ts"]


def test_the_first_slash_command_is_acked_in_time_while_the_web_api_is_slow(
        make_config, slack):
    # auth.test takes 6 s: Bolt used to call it before the first listener could ack.
    slack.slow("auth.test", 6)
    config = make_config(servers=("EX01",), polling={"interval": "60s", "jitter": 0})
    config = replace(config, slack=replace(config.slack, app_token=Secret(slack.app_token)))
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(config, stop), daemon=True)
    thread.start()
    try:
        slack.wait_for_socket(timeout=20)
        payload = slack.slash_command_payload("help")
        envelope = slack.send_envelope("slash_commands", payload)
        slack.wait_for_ack(envelope, timeout=5)
        [record] = [e for e in slack.envelopes() if e["envelope_id"] == envelope]
        assert not record["late"] and record["ack_seconds"] < 3, record
        [response] = slack.wait_for_responses(1, timeout=10, url=payload["response_url"])
        assert "/submitwatch" in response["payload"]["text"]
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
