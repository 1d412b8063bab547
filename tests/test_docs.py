"""The README and docs/ are part of the product: the config reference, the commands, the cause
table and the links between the pages must be true."""
import json
import re
from pathlib import Path

import pytest

from bot.cli import build_parser
from bot.core.config import KEYS

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = {path: path.read_text(encoding="utf-8") for path in sorted((ROOT / "docs").glob("*.md"))}
#: The README and every docs page, one text: what the product documents, wherever it lives.
EVERYTHING = "\n".join([README, *DOCS.values()])


def _doc(name: str) -> str:
    return DOCS[ROOT / "docs" / name]


CONFIGURATION = _doc("configuration.md")


def test_readme_opens_with_the_two_commands():
    first_block = README.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci/run").read_text()


def test_readme_first_screen_is_the_two_commands_then_the_picture():
    lines = README.splitlines()
    assert lines[0] == "# SubmitWatch"
    commands = lines.index("make demo    # the full pipeline against the built-in Exchange "
                           "simulator and Slack stand-in")
    picture = next(i for i, line in enumerate(lines) if line.startswith("![") and ".png)" in line)
    headings = [i for i, line in enumerate(lines) if line.startswith("#")]
    assert commands < picture < 30, (commands, picture)
    assert lines[commands + 1].startswith("make test")
    # Nothing but the title and "What it does" comes before the picture.
    assert [lines[i] for i in headings if i < picture] == ["# SubmitWatch", "## What it does"]
    assert (ROOT / "docs/img/alert.png").is_file()


def test_readme_keeps_the_newcomers_sections_in_order():
    sections = re.findall(r"^## (.+)$", README, re.M)
    assert sections == ["What it does", "Three ways to feed it", "Set it up for real",
                        "Where to go next"]
    assert re.findall(r"^### (.+)$", README, re.M) == [
        "Create the Slack app", "The WinRM account: least privilege"]


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / target).resolve() for target, _ in _links(README)}
    unlinked = [path.name for path in DOCS if path.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def _without_code(text: str) -> str:
    """The text with fenced blocks and code spans blanked: links in code are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _links(text: str) -> list[tuple[str, str]]:
    """(path, anchor) of every relative markdown link or image in `text`."""
    links = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _without_code(text)):
        if re.match(r"[a-z]+:", target):      # https:, mailto:, file:
            continue
        path, _, anchor = target.partition("#")
        links.append((path, anchor))
    return links


def _anchors(text: str) -> set[str]:
    """GitHub's anchors for the headings of a markdown page."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+?)\s*$", _without_fences(text), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _without_fences(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


@pytest.mark.parametrize("page", [ROOT / "README.md", *DOCS], ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(page):
    text = page.read_text(encoding="utf-8")
    for path, anchor in _links(text):
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: no such file {path}"
        if anchor:
            assert target.suffix == ".md", f"{page.name}: anchor into {path}"
            assert anchor in _anchors(target.read_text(encoding="utf-8")), (
                f"{page.name}: no heading #{anchor} in {target.name}")


def test_the_anchor_rule_is_githubs():
    assert _anchors("# How it works\n## Directory checks (optional, read-only)\n"
                    "## The WinRM account: least privilege\n## `fix` and `verify`\n## Tests\n"
                    "## Tests\n") == {
        "how-it-works", "directory-checks-optional-read-only",
        "the-winrm-account-least-privilege", "fix-and-verify", "tests", "tests-1"}


def test_every_config_key_is_documented_and_every_documented_key_exists():
    documented = set(re.findall(r"^\| `([a-z_]+\.[a-z0-9_]+)` \|", CONFIGURATION, re.M))
    real = {f"{table}.{key}" for table, keys in KEYS.items() for key in keys}
    assert documented == real, (f"undocumented: {sorted(real - documented)}; "
                                f"documented but unknown: {sorted(documented - real)}")


def test_every_command_is_documented_and_every_documented_command_exists():
    parser = build_parser()
    [subparsers] = [a for a in parser._actions if a.dest == "command"]
    real = set(subparsers.choices)
    documented = set(re.findall(r"`submitwatch ([a-z][a-z-]*)", EVERYTHING))
    assert documented == real


def test_secrets_named_in_the_docs_are_the_ones_the_code_reads():
    from bot.core.config import SECRET_ENV
    for variable in SECRET_ENV.values():
        assert variable in CONFIGURATION


def test_documented_defaults_are_the_real_defaults():
    from bot.core.config import (
    Config,
    DevicesConfig,
    DirectoryConfig,
    IncidentConfig,
    KerberosConfig,
    MetricsConfig,
    OtlpConfig,
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
                "devices": DevicesConfig(), "otlp": OtlpConfig(),
                "kerberos": KerberosConfig(principal="svc@CONTOSO.COM")}
    rows = re.findall(r"^\| `([a-z_]+)\.([a-z0-9_]+)` \| `([^`|]+)` \|", CONFIGURATION, re.M)
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


def _section(text: str, heading: str) -> str:
    """The text under the `## heading` of a page, up to its next `## ` heading."""
    start = text.index(f"\n## {heading}\n") + len(heading) + 5
    end = text.find("\n## ", start)
    return text[start:] if end < 0 else text[start:end]


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
    rows = _table(_section(_doc("causes.md"), "The cause table"),
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
