"""The WinRM source over real pywinrm: the wire, the faults, and the words for each failure."""
from __future__ import annotations

import socket

import pytest

from bot.core.config import parse_config
from bot.sources.base import SourceError
from bot.sources.parse import parse_events
from bot.sources.winrm import WinRMSource, event_query
from sim.winrm_server import WinRMSimulator
from tests.conftest import WINRM_PASSWORD, WINRM_USER
from tests.tls import make_pki

FE = "MSExchangeFrontEndTransport"


def source_for(url, *, transport="ntlm", password=WINRM_PASSWORD, server=None, **polling):
    raw = {"slack": {"channel": "C0ALERTS"},
           "polling": {"operation_timeout": 1, "read_timeout": 2, **polling},
           "servers": [{"name": "EX01", "url": url, "username": WINRM_USER,
                        "password_env": "PW", "transport": transport, **(server or {})}]}
    config = parse_config(raw, {"PW": password})
    return WinRMSource(config.servers[0], config.polling)


def test_the_query_filters_provider_and_id_together_above_the_cursor():
    assert event_query(28859197) == (
        "*[System[Provider[@Name='MSExchangeTransport' or @Name='MSExchangeFrontEndTransport'] "
        "and (EventID=1018 or EventID=1020) and EventRecordID > 28859197]]")
    assert event_query(0, 86_400_000).endswith(
        "EventRecordID > 0 and TimeCreated[timediff(@SystemTime) <= 86400000]]]")


def test_ntlm_with_message_encryption_reads_names_exactly(logs):
    logs["EX01"].append(FE, 1020, ("CONTOSO\\jürgen.müller",))
    logs["EX01"].append_noise(3)
    with WinRMSimulator(logs, users={WINRM_USER: WINRM_PASSWORD}, auth="ntlm",
                        record_wire=True) as sim:
        with source_for(sim.url_for("EX01")).open() as shell:
            info = shell.log_info()
            answer = shell.query(0, 500)
        assert info.record_count == 4
        [event] = parse_events(answer.text, "EX01").events
        assert event.account == "CONTOSO\\jürgen.müller"
        # Every body after the handshake was sealed: no event text crossed the wire in clear.
        bodies = [body for _server, ctype, body in sim.wire_log if body]
        assert bodies and all("jürgen".encode() not in body and b"wevtutil" not in body
                              and "jürgen".encode("utf-16-le") not in body for body in bodies)
        assert all(ctype.startswith("multipart/encrypted") for _s, ctype, body in sim.wire_log if body)
        stats = sim.stats("EX01")
        assert stats.shells_open == 0  # the shell was closed
        assert stats.codepages == [65001]
        assert stats.encrypted_requests > 0


def test_basic_transport_works_too(logs):
    logs["EX01"].append(FE, 1020, ("CONTOSO\\svc-scanner",))
    with WinRMSimulator(logs, users={WINRM_USER: WINRM_PASSWORD}, auth="basic") as sim:
        with source_for(sim.url_for("EX01"), transport="basic").open() as shell:
            answer = shell.query(0, 500)
    assert "svc-scanner" in answer.text


def test_multi_chunk_output_is_joined(logs, winrm):
    for n in range(40):
        logs["EX01"].append(FE, 1020, (f"CONTOSO\\app{n}",))
    winrm.set_chunk_size("EX01", 512)
    with source_for(winrm.url_for("EX01")).open() as shell:
        answer = shell.query(0, 500)
    assert len(parse_events(answer.text, "EX01").events) == 40
    assert winrm.stats("EX01").actions["Receive"] > 10


def test_operation_timeouts_are_retried(logs, winrm):
    logs["EX01"].append(FE, 1020, ("CONTOSO\\svc-scanner",))
    winrm.inject("EX01", "operation_timeout", times=2)
    with source_for(winrm.url_for("EX01")).open() as shell:
        answer = shell.query(0, 500)
    assert "svc-scanner" in answer.text


def test_endless_operation_timeouts_give_up_with_words(logs, winrm):
    winrm.inject("EX01", "operation_timeout", times=None)
    with pytest.raises(SourceError, match="produced no output for over 2s"):
        with source_for(winrm.url_for("EX01")).open() as shell:
            shell.query(0, 500)


def test_wrong_password_says_what_to_check(winrm):
    with pytest.raises(SourceError) as info:
        source_for(winrm.url_for("EX01"), password="wrong").open()
    message = str(info.value)
    assert "refused the credentials of 'CONTOSO\\svc-submitwatch' (HTTP 401)" in message
    assert "Event Log Readers" in message and info.value.retryable is False
    assert "wrong" not in message and WINRM_PASSWORD not in message


def test_a_wsman_fault_is_explained(winrm):
    winrm.inject("EX01", "wsman_fault", code=2150858770, subcode="w:InternalError",
                 reason="The client cannot connect to the destination specified in the request.")
    with pytest.raises(SourceError, match="answered with a fault .*cannot connect to the dest"):
        source_for(winrm.url_for("EX01")).open()


def test_a_hung_server_times_out(winrm):
    winrm.inject("EX01", "hang", seconds=5)
    with pytest.raises(SourceError, match="did not answer before polling.read_timeout ran out"):
        source_for(winrm.url_for("EX01")).open()


def test_a_refused_connection_is_explained():
    with socket.socket() as s:  # a loopback port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SourceError, match="connection to .* refused: is WinRM listening"):
        source_for(f"http://127.0.0.1:{port}/wsman").open()


def test_tls_failure_is_explained(winrm):
    # An https URL to a plain-http port: the TLS handshake fails.
    url = winrm.url_for("EX01").replace("http://", "https://")
    with pytest.raises(SourceError, match="TLS to .* failed"):
        source_for(url).open()


@pytest.fixture
def https_winrm(logs, tmp_path):
    pki = make_pki(tmp_path)
    logs["EX01"].append(FE, 1020, ("CONTOSO\\svc-scanner",))
    with WinRMSimulator(logs, users={WINRM_USER: WINRM_PASSWORD}, auth="ntlm",
                        tls=pki.server_context()) as sim:
        yield sim, pki


def test_https_with_an_unknown_ca_is_refused(https_winrm):
    sim, _pki = https_winrm
    with pytest.raises(SourceError, match="TLS to .* failed .*point ca_bundle at it"):
        source_for(sim.url_for("EX01")).open()
    assert sim.stats("EX01").soap_requests == 0  # no credentials went to an unverified server


def test_https_with_the_ca_bundle_works(https_winrm):
    sim, pki = https_winrm
    with source_for(sim.url_for("EX01"), server={"ca_bundle": str(pki.ca_file)}).open() as shell:
        assert "svc-scanner" in shell.query(0, 500).text


def test_https_without_validation_works_only_when_turned_off(https_winrm):
    sim, _pki = https_winrm
    source = source_for(sim.url_for("EX01"), server={"validate_certificate": False})
    with source.open() as shell:
        assert "svc-scanner" in shell.query(0, 500).text


def test_a_nonzero_exit_code_reports_the_error_text_not_clixml(logs, winrm):
    with source_for(winrm.url_for("EX01")).open() as shell:
        winrm.inject("EX01", "exit_code")
        with pytest.raises(SourceError, match="failed with exit code 5") as info:
            shell.query(0, 500)
    assert "#< CLIXML" not in str(info.value) and "<Objs" not in str(info.value)


def test_garbage_output_becomes_problems_not_a_crash(logs, winrm):
    logs["EX01"].append(FE, 1020, ("CONTOSO\\svc-scanner",))
    with source_for(winrm.url_for("EX01")).open() as shell:
        winrm.inject("EX01", "garbage")
        answer = shell.query(0, 500)
    batch = parse_events(answer.text, "EX01")
    assert batch.problems


def test_an_invalid_query_is_reported_with_the_servers_words(logs, winrm):
    with source_for(winrm.url_for("EX01")).open() as shell:
        with pytest.raises(SourceError, match="exit code"):
            shell.run("wevtutil", ["qe", "Application", '/q:"*[System[Nonsense]]"'])


def test_the_authenticated_connection_is_kept_between_polls(logs):
    with WinRMSimulator(logs, users={WINRM_USER: WINRM_PASSWORD}, auth="ntlm") as sim:
        source = source_for(sim.url_for("EX01"))
        for _ in range(3):
            with source.open() as shell:
                shell.log_info()
        stats = sim.stats("EX01")
        assert stats.auth_successes == 1 and stats.connections == 1
        assert stats.shells_created == 3 and stats.shells_open == 0


def test_a_kept_connection_the_server_no_longer_accepts_is_replaced_once(logs):
    with WinRMSimulator(logs, users={WINRM_USER: WINRM_PASSWORD}, auth="ntlm") as sim:
        source = source_for(sim.url_for("EX01"))
        with source.open() as shell:
            shell.log_info()
        sim.inject("EX01", "unauthorized", times=1)   # e.g. the server restarted meanwhile
        with source.open() as shell:
            assert shell.log_info().record_count >= 0
        assert sim.stats("EX01").auth_successes == 2


def test_a_failed_poll_does_not_keep_its_connection(logs):
    with WinRMSimulator(logs, users={WINRM_USER: WINRM_PASSWORD}, auth="ntlm") as sim:
        source = source_for(sim.url_for("EX01"))
        sim.inject("EX01", "exit_code", times=1)
        with pytest.raises(SourceError):
            with source.open() as shell:
                shell.log_info()
        with source.open() as shell:
            shell.log_info()
        assert sim.stats("EX01").auth_successes == 2
