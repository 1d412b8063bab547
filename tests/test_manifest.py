"""manifest.yml is valid against Slack's published schema and matches what the app listens to."""
import json
from pathlib import Path

import jsonschema
import yaml

from handlers.commands import COMMAND

ROOT = Path(__file__).parent.parent
SCHEMA = ROOT / "tests/data/slack-manifest-schema/manifest.schema.1.0.0.json"


def manifest():
    return yaml.safe_load((ROOT / "manifest.yml").read_text(encoding="utf-8"))


def test_manifest_validates_against_slacks_schema():
    jsonschema.validate(manifest(), json.loads(SCHEMA.read_text(encoding="utf-8")))


def test_the_schema_check_can_fail():
    broken = manifest()
    broken["settings"]["socket_mode_enabled"] = "yes"
    try:
        jsonschema.validate(broken, json.loads(SCHEMA.read_text(encoding="utf-8")))
    except jsonschema.ValidationError as exc:
        assert "'yes' is not of type 'boolean'" in exc.message
    else:
        raise AssertionError("an invalid manifest passed validation")


def test_declares_the_slash_command_and_socket_mode_with_minimal_scopes():
    m = manifest()
    assert [c["command"] for c in m["features"]["slash_commands"]] == [COMMAND]
    assert m["settings"]["socket_mode_enabled"] is True
    assert sorted(m["oauth_config"]["scopes"]["bot"]) == ["chat:write", "commands"]
