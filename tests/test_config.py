"""The config file: defaults, strictness, and secrets that never come from the file."""
import pytest

from bot.core.config import ConfigError, Secret, config_path, load_config, missing_secrets

MINIMAL = """
[slack]
channel = "C0ALERTS"

[[servers]]
name = "EX01"
url = "https://ex01.contoso.com:5986/wsman"
username = 'CONTOSO\\svc-submitwatch'
password_env = "EX01_PASSWORD"
"""


def write(tmp_path, text):
    path = tmp_path / "submitwatch.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_config_gets_the_documented_defaults(tmp_path):
    config = load_config(write(tmp_path, MINIMAL), {"EX01_PASSWORD": "pw", "SLACK_BOT_TOKEN": "xoxb-1"})
    assert config.slack.api_url == "https://slack.com/api/"
    assert config.slack.mode == "socket"
    assert config.store.path == "submitwatch.db"
    assert config.polling.interval == 60 and config.polling.lookback == 86400
    assert config.polling.batch_size == 500
    assert config.incidents.quiet_period == 86400
    [server] = config.servers
    assert server.transport == "ntlm" and server.validate_certificate is True
    assert server.password.reveal() == "pw"
    assert config.slack.bot_token.reveal() == "xoxb-1"
    assert config.channel_for("EX01") == "C0ALERTS"


def test_the_example_config_in_the_repository_loads(tmp_path):
    from pathlib import Path
    example = Path(__file__).parent.parent / "submitwatch.example.toml"
    config = load_config(example, {})
    assert len(config.servers) >= 2
    assert {s.transport for s in config.servers} >= {"ntlm"}


def test_durations_accept_units_and_numbers(tmp_path):
    text = MINIMAL + '\n[polling]\ninterval = "5m"\nlookback = 3600\njitter = "250ms"\n'
    text += '[incidents]\nquiet_period = "7d"\n'
    config = load_config(write(tmp_path, text), {})
    assert config.polling.interval == 300 and config.polling.lookback == 3600
    assert config.polling.jitter == 0.25 and config.incidents.quiet_period == 7 * 86400


def test_server_overrides(tmp_path):
    text = MINIMAL + """channel = "C0OTHER"
submission_connector = 'EX01\\Client Frontend EX01'
validate_certificate = false
transport = "credssp"
"""
    config = load_config(write(tmp_path, text), {})
    server = config.servers[0]
    assert config.channel_for("EX01") == "C0OTHER"
    assert server.submission_connector == "EX01\\Client Frontend EX01"
    assert server.validate_certificate is False and server.transport == "credssp"


def test_a_transport_whose_package_is_missing_says_what_to_install(tmp_path, monkeypatch):
    import bot.core.config
    monkeypatch.setitem(bot.core.config.TRANSPORT_PACKAGES, "kerberos",
                        (("no_such_module_for_test",), "pywinrm[kerberos]"))
    text = MINIMAL.replace('name = "EX01"', 'name = "EX01"\ntransport = "kerberos"')
    with pytest.raises(ConfigError, match="needs the 'pywinrm\\[kerberos\\]' package, which is "
                                          "not installed"):
        load_config(write(tmp_path, text), {})


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_durations_are_refused(tmp_path, value):
    with pytest.raises(ConfigError, match="polling.interval must be a duration"):
        load_config(write(tmp_path, MINIMAL + f"\n[polling]\ninterval = {value}\n"), {})


@pytest.mark.parametrize("patch, message", [
    (("[slack]", "[slack]\nchanel = 'x'"), "unknown key 'slack.chanel'; allowed here: api_url"),
    (("[slack]", "[slack]\nbot_token = 'xoxb-123'"), "secrets never go in the config file"),
    (('password_env = "EX01_PASSWORD"', 'password = "hunter2"'), "secrets never go in the config file"),
    (("[slack]", "[slack]\nmode = 'websocket'"), "slack.mode must be one of 'socket', 'http'"),
    (("[slack]", "[slack]\napi_url = 'slack.com/api'"), "slack.api_url must be an http(s) URL"),
    (('url = "https://ex01.contoso.com:5986/wsman"', 'url = "ex01.contoso.com"'),
     "servers.EX01.url must be a full WinRM endpoint URL"),
    (('name = "EX01"', 'name = "EX01"\ntransport = "telnet"'),
     "servers.EX01.transport must be one of 'ntlm', 'kerberos', 'credssp', 'ssl', 'basic', 'certificate'"),
    (('name = "EX01"', 'name = "EX01"\nvalidate_certificate = "no"'),
     "servers.EX01.validate_certificate must be true or false"),
    (('password_env = "EX01_PASSWORD"', ''), "servers.EX01.password_env is required"),
    (('name = "EX01"', 'name = "EX 01; rm"'), "must be 1-63 letters"),
    (("[slack]\nchannel = \"C0ALERTS\"", "[slack]"), "slack.channel is required"),
])
def test_wrong_keys_types_and_values_name_the_key(tmp_path, patch, message):
    old, new = patch
    assert old in MINIMAL
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, MINIMAL.replace(old, new, 1)), {})
    assert message in str(info.value)


@pytest.mark.parametrize("section, message", [
    ("[polling]\ninterval = 'soon'", "polling.interval must be a duration"),
    ("[polling]\nbatch_size = 0", "polling.batch_size must be a whole number from 1 to 5000"),
    ("[polling]\nbatch_size = true", "polling.batch_size must be a whole number"),
    ("[polling]\nread_timeout = 10\noperation_timeout = 20", "read_timeout must be longer"),
    ("[incidents]\nquiet_period = '5s'", "incidents.quiet_period must be a duration from 60s to 3650d"),
    ("[incidents]\nquiet_period = '99999999999d'", "quiet_period must be a duration from 60s to "
                                                    "3650d"),
    ("[store]\nretention = 1e300", "store.retention must be a duration from"),
    ("[store]\npath = ''", "store.path must be a non-empty string"),
    ("[extra]\nx = 1", "unknown key 'extra'"),
])
def test_bad_values_in_other_tables(tmp_path, section, message):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, MINIMAL + "\n" + section + "\n"), {})
    assert message in str(info.value)


def test_duplicate_server_names_are_refused(tmp_path):
    text = MINIMAL + MINIMAL[MINIMAL.index("[[servers]]"):].replace("EX01", "ex01")
    with pytest.raises(ConfigError, match="two \\[\\[servers\\]\\] entries are named 'ex01'"):
        load_config(write(tmp_path, text), {})


def test_unreadable_files_say_so(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", {})
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(write(tmp_path, "[slack\n"), {})


def test_secrets_come_from_files_too(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("xoxb-from-file\n")
    config = load_config(write(tmp_path, MINIMAL), {"SLACK_BOT_TOKEN_FILE": str(token_file)})
    assert config.slack.bot_token.reveal() == "xoxb-from-file"
    with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN_FILE names .* which cannot be read"):
        load_config(write(tmp_path, MINIMAL), {"SLACK_BOT_TOKEN_FILE": str(tmp_path / "nope")})


def test_missing_secrets_are_listed_by_variable_name(tmp_path):
    config = load_config(write(tmp_path, MINIMAL), {})
    missing = missing_secrets(config, slack_mode="socket")
    assert [m.split()[0] for m in missing] == ["SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "EX01_PASSWORD"]
    config = load_config(write(tmp_path, MINIMAL), {"SLACK_BOT_TOKEN": "x", "EX01_PASSWORD": "y"})
    assert [m.split()[0] for m in missing_secrets(config, slack_mode="http")] == ["SLACK_SIGNING_SECRET"]
    assert missing_secrets(config, slack_mode=None) == []


def test_secrets_do_not_print_themselves(tmp_path):
    config = load_config(write(tmp_path, MINIMAL), {"SLACK_BOT_TOKEN": "xoxb-SECRET", "EX01_PASSWORD": "hunter2"})
    text = repr(config) + str(config.servers)
    assert "xoxb-SECRET" not in text and "hunter2" not in text
    assert repr(Secret("x")) == "Secret('***')"


def test_config_path_precedence(tmp_path):
    assert str(config_path("a.toml", {"SUBMITWATCH_CONFIG": "b.toml"})) == "a.toml"
    assert str(config_path(None, {"SUBMITWATCH_CONFIG": "b.toml"})) == "b.toml"
    assert str(config_path(None, {})) == "submitwatch.toml"


def test_a_config_saved_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "submitwatch.toml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode("utf-8"))
    config = load_config(path, {"EX01_PASSWORD": "pw", "SLACK_BOT_TOKEN": "xoxb-1"})
    assert [s.name for s in config.servers] == ["EX01"]


def test_a_config_in_another_encoding_says_where_and_that_it_must_be_utf8(tmp_path):
    path = tmp_path / "submitwatch.toml"
    path.write_bytes((MINIMAL + '\n# caf\u00e9\n').encode("cp1252"))
    line = (MINIMAL + "\n").count("\n") + 1
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert str(caught.value) == (f"{path} is not UTF-8: line {line}, column 6 has the byte "
                                 "0xE9. Save it as UTF-8 (in Notepad: Save As, Encoding UTF-8)")


def test_an_empty_secret_file_is_named_as_empty(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("\n")
    with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN_FILE names .*token, which is empty"):
        load_config(write(tmp_path, MINIMAL), {"EX01_PASSWORD": "pw",
                                               "SLACK_BOT_TOKEN_FILE": str(token_file)})
