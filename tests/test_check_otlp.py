"""`submitwatch check` for the OTLP receiver (bot.ops.check.check_otlp): off, free, held by a
running receiver (plain and mutual TLS, over real sockets), held by another program, and what
it says about tokens, certificates and origins."""
from __future__ import annotations

import socket
from dataclasses import replace

import pytest

from bot.app import serve_otlp
from bot.ops.check import check_otlp
from tests.test_otlp import TOKEN, free_port
from tests.test_otlp_tls import make_client_ca
from tests.tls import make_pki


def lines_of(config, timeout=5.0):
    lines: list[str] = []
    failures = check_otlp(config, lines.append, timeout=timeout)
    return failures, lines


def otlp_config(make_config, **otlp):
    return make_config(otlp={"port": free_port(), "token_env": "OTLP_TOKEN", **otlp},
                       environ={"OTLP_TOKEN": TOKEN})


@pytest.fixture
def running():
    servers = []

    def start(config):
        server = serve_otlp(config)
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def tls_files(tmp_path):
    (tmp_path / "server").mkdir()
    server = make_pki(tmp_path / "server")
    senders = make_client_ca(tmp_path / "senders", "Collectors CA")
    return {"tls_cert": str(server.cert_file), "tls_key": str(server.key_file),
            "client_ca": str(senders.ca_file)}


def test_off_when_no_port(make_config):
    assert lines_of(make_config()) == (0, ["OK       OTLP receiver: off (otlp.port is not set)"])


def test_a_free_port_the_token_and_the_origins(make_config):
    config = otlp_config(make_config)
    failures, lines = lines_of(config)
    assert failures == 0
    text = "\n".join(lines)
    assert f"port {config.otlp.port} is free; `run` will open it" in text
    assert "senders need the bearer token in OTLP_TOKEN" in text
    assert "takes events of 2 configured server(s), EX01, EX02" in text
    assert "any other computer are dropped" in text and "'ignore'" in text
    assert all(line.startswith("OK ") for line in lines), lines
    own = otlp_config(make_config, unconfigured_origins="own_name")
    assert "taken under its own short name" in "\n".join(lines_of(own)[1])


def test_plain_http_on_every_interface_is_a_warning(make_config):
    _failures, lines = lines_of(otlp_config(make_config, host="0.0.0.0"))
    assert any(line.startswith("WARNING") and "cross the network in clear" in line
               for line in lines), lines


def test_a_port_held_by_the_running_receiver_is_fine(make_config, running):
    config = otlp_config(make_config)
    running(config)
    failures, lines = lines_of(config)
    assert failures == 0
    assert any(f"port {config.otlp.port} is in use by a SubmitWatch receiver (it answers GET"
               in line for line in lines), lines


def test_a_port_held_by_the_running_mtls_receiver_is_fine(make_config, running, tls_files):
    config = make_config(otlp={"port": free_port(), **tls_files})
    running(config)
    failures, lines = lines_of(config)
    text = "\n".join(lines)
    assert failures == 0, text
    assert "TLS loads: certificate CN=127.0.0.1 (names: 127.0.0.1) valid until" in text
    assert "senders need a client certificate issued by the CA in" in text
    assert "bearer token" not in text
    assert "in use by a SubmitWatch receiver (it presents the configured certificate)" in text
    assert f"https://127.0.0.1:{config.otlp.port}/v1/logs" in text


def test_a_port_held_by_another_program_fails_with_a_fix(make_config):
    config = otlp_config(make_config)
    with socket.socket() as other:
        other.bind(("127.0.0.1", config.otlp.port))
        other.listen()
        failures, lines = lines_of(config, timeout=0.5)
    assert failures == 1
    assert any(line.startswith("FAILED") and "in use by another program" in line
               for line in lines), lines
    assert any(line.startswith("FIX") and "another otlp.port" in line for line in lines)


def test_an_address_not_of_this_host_fails_with_a_fix(make_config):
    config = otlp_config(make_config, host="192.0.2.10")   # TEST-NET-1: no host has it
    failures, lines = lines_of(config)
    assert failures == 1
    assert any(line.startswith("FAILED") and "cannot be opened" in line for line in lines)
    assert any(line.startswith("FIX") and "not an address of this host" in line
               for line in lines), lines


def test_a_token_variable_unset_since_loading_fails(make_config):
    config = otlp_config(make_config)
    config = replace(config, otlp=replace(config.otlp, token=None))
    failures, lines = lines_of(config)
    assert failures == 1
    assert "FAILED   OTLP receiver" in lines[0] and "OTLP_TOKEN is not set" in lines[0]
    assert lines[1].startswith("FIX      set OTLP_TOKEN")


def test_tls_files_broken_since_loading_fail(make_config, tls_files, tmp_path):
    config = make_config(otlp={"port": free_port(), **tls_files})
    (tmp_path / "server" / "server.key").unlink()
    failures, lines = lines_of(config)
    assert failures == 1
    assert lines[0].startswith("FAILED") and "otlp.tls_key" in lines[0] and \
        "cannot be read" in lines[0]


def test_run_check_includes_the_receiver(make_config):
    from bot.ops.check import run_check
    lines: list[str] = []
    run_check(otlp_config(make_config), lines.append)
    assert any("OTLP receiver http://127.0.0.1:" in line and "is free" in line for line in lines)
