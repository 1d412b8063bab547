"""contrib/submitwatch.service: a unit systemd accepts, sandboxed, feeding the secrets the code
reads. Checked with systemd's own `systemd-analyze verify` (.ci/debian-packages installs it)."""
from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bot.core.config import SECRET_ENV

ROOT = Path(__file__).parent.parent
UNIT = ROOT / "contrib/submitwatch.service"
INSTALLED = "/opt/submitwatch/.venv/bin/submitwatch"


def verify(text: str, tmp_path: Path) -> str:
    """systemd-analyze verify's complaints about a unit (it exits 0 on most of them)."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: run `bash .ci/debian-packages` (Debian: systemd)"
    # verify checks that ExecStart's program exists: point it at this checkout's entry point.
    unit = tmp_path / "submitwatch.service"
    unit.write_text(text.replace(INSTALLED, str(Path(sys.executable).parent / "submitwatch")),
                    encoding="utf-8")
    result = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True,
                            text=True, timeout=60)
    return (result.stdout + result.stderr).strip() + ("" if result.returncode == 0 else
                                                      f"\n(exit {result.returncode})")


def test_systemd_accepts_the_unit_without_a_single_complaint(tmp_path):
    assert verify(UNIT.read_text(encoding="utf-8"), tmp_path) == ""


def test_the_check_can_fail(tmp_path):
    broken = UNIT.read_text(encoding="utf-8").replace("ProtectSystem=strict", "ProtectSystem=x")
    assert "protect system" in verify(broken, tmp_path).lower()


def unit_settings() -> dict[str, list[str]]:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # keys are case-sensitive in systemd
    found: dict[str, list[str]] = {}
    # ConfigParser keeps only the last of repeated keys: read them line by line instead.
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_the_unit_is_sandboxed_and_writes_only_its_state_directory():
    unit = unit_settings()
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "ProtectHome": "yes", "UMask": "0077", "CapabilityBoundingSet": ""}.items():
        assert unit[key] == [value], key
    assert unit["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert unit["ReadWritePaths"] == ["/var/lib/submitwatch"]
    assert unit["StateDirectory"] == ["submitwatch"] and unit["User"] == ["submitwatch"]
    [start] = unit["ExecStart"]
    assert start.split()[:1] == [INSTALLED] and start.split()[-1] == "run"


def test_every_secret_comes_through_load_credential_as_the_file_variable_the_code_reads():
    unit = unit_settings()
    credentials = {value.split(":", 1)[0] for value in unit["LoadCredential"]}
    variables = dict(v.split("=", 1) for v in unit["Environment"])
    for name in (SECRET_ENV["bot_token"], SECRET_ENV["app_token"], "WINRM_PASSWORD"):
        path = variables[f"{name}_FILE"]
        assert path.startswith("%d/") and path[3:] in credentials, name
    assert all(not k.endswith(("TOKEN", "PASSWORD", "SECRET")) for k in variables)


@pytest.mark.parametrize("name", ["SLACK_BOT_TOKEN", "WINRM_PASSWORD"])
def test_a_file_variable_is_read_like_the_unit_sets_it(tmp_path, name):
    from bot.core.config import parse_config
    secret = tmp_path / "credential"
    secret.write_text("s3cret-from-a-file\n", encoding="utf-8")
    raw = {"slack": {"channel": "C0ALERTS"},
           "servers": [{"name": "EX01", "url": "https://ex01:5986/wsman", "username": "u",
                        "password_env": "WINRM_PASSWORD"}]}
    config = parse_config(raw, {f"{name}_FILE": str(secret)})
    value = (config.slack.bot_token if name == "SLACK_BOT_TOKEN"
             else config.servers[0].password)
    assert value.reveal() == "s3cret-from-a-file"
