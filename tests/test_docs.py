"""The README is part of the product: its config reference and commands must be true."""
import json
import re
from pathlib import Path

from bot.cli import build_parser
from bot.core.config import KEYS

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_opens_with_the_two_commands():
    first_block = README.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci/run").read_text()


def test_every_config_key_is_documented_and_every_documented_key_exists():
    documented = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", README, re.M))
    real = {f"{table}.{key}" for table, keys in KEYS.items() for key in keys}
    assert documented == real, (f"undocumented: {sorted(real - documented)}; "
                                f"documented but unknown: {sorted(documented - real)}")


def test_every_command_is_documented_and_every_documented_command_exists():
    parser = build_parser()
    [subparsers] = [a for a in parser._actions if a.dest == "command"]
    real = set(subparsers.choices)
    documented = set(re.findall(r"`submitwatch ([a-z-]+)", README))
    assert documented == real


def test_secrets_named_in_the_readme_are_the_ones_the_code_reads():
    from bot.core.config import SECRET_ENV
    for variable in SECRET_ENV.values():
        assert variable in README


def test_documented_defaults_are_the_real_defaults():
    from bot.core.config import (
    Config,
    DevicesConfig,
    DirectoryConfig,
    IncidentConfig,
    MetricsConfig,
    PermissionsConfig,
    PollingConfig,
    RouteConfig,
    ServerConfig,
    SlackConfig,
    StoreConfig,
    SummaryConfig,
    _summary_config,
    parse_duration,
    parse_size,
)
    logging_defaults = type("Logging", (), {"format": Config.log_format})
    defaults = {"slack": SlackConfig(channel="C"), "store": StoreConfig(),
                "permissions": PermissionsConfig(), "metrics": MetricsConfig(),
                "logging": logging_defaults,
                "polling": PollingConfig(), "incidents": IncidentConfig(),
                "servers": ServerConfig(name="x", url="u"),
                "routes": RouteConfig(name="x"),
                "directory": DirectoryConfig(urls=("ldaps://dc",), user="u", password_env="P"),
                "devices": DevicesConfig()}
    rows = re.findall(r"^\| `([a-z_]+)\.([a-z_]+)` \| `([^`|]+)` \|", README, re.M)
    assert len(rows) >= 15
    for table, key, shown in rows:
        if key == "channel" and table in ("servers", "summary"):  # slack.channel, by reference
            assert shown == "slack.channel"
            continue
        if table == "summary":   # stored parsed (a time, a weekday): the shown text parses so
            assert _summary_config({key: shown}) == SummaryConfig(), key
            continue
        real = getattr(defaults[table], key)
        if isinstance(real, tuple):
            assert shown in (str(list(real)), json.dumps(list(real))), (table, key)
        elif isinstance(real, bool):
            assert shown == str(real).lower(), (table, key)
        elif isinstance(real, float):
            assert parse_duration(shown) == real, (table, key)
        elif isinstance(real, int) and not shown.isdigit():
            assert parse_size(shown) == real, (table, key)
        else:
            assert shown == str(real), (table, key)


def _section(heading: str) -> str:
    """The README's text under `## heading`, up to the next `## ` heading."""
    start = README.index(f"\n## {heading}\n") + len(heading) + 5
    end = README.find("\n## ", start)
    return README[start:] if end < 0 else README[start:end]


def _table(text: str, header: tuple[str, ...]) -> list[dict[str, str]]:
    """The rows of the markdown table in `text` whose header row is `header`."""
    lines = text.splitlines()
    head = "| " + " | ".join(header) + " |"
    at = lines.index(head)
    assert re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[at + 1])
    rows = []
    for line in lines[at + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == len(header), line
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def test_the_causes_table_has_one_true_row_per_cause():
    from bot.exchange.advice import CAUSES
    rows = _table(_section("How SubmitWatch decides the cause"),
                  ("Cause", "When", "First fix", "Rests on"))
    headlines = {headline: cause for cause, (headline, _) in CAUSES.items()}
    shown = [row["Cause"] for row in rows]
    assert not set(shown) - set(headlines), f"no such cause: {sorted(set(shown) - set(headlines))}"
    assert sorted(shown) == sorted(headlines), "every cause exactly once"
    for row in rows:
        sources = CAUSES[headlines[row["Cause"]]][1]
        # The default sources first, as CAUSES lists them; what adds inference after a ';'.
        assert row["Rests on"].split(";")[0].strip() == ", ".join(sources), row["Cause"]
        assert all(source in row["Rests on"] for source in sources)
        assert row["When"] and row["First fix"]
