"""Block Kit helpers for the Slack stand-in: validation and terminal rendering.

Pure functions, no server and no state, so the product's renderer tests can
check its blocks against Slack's limits without starting the stand-in:

* :func:`validate_blocks` gives the ``invalid_blocks`` messages Slack would
  answer (the stand-in's ``chat.*`` methods refuse such blocks);
* :func:`render_text` shows a posted message as terminal text (the demo);
* :func:`block_kit_builder_url` links a message to Block Kit Builder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

__all__ = [
    "MAX_BLOCKS",
    "MAX_BLOCK_TEXT",
    "block_text_length",
    "MAX_HOME_BLOCKS",
    "block_kit_builder_url",
    "render_text",
    "validate_blocks",
]

#: Block Kit: blocks per message ...
MAX_BLOCKS = 50
#: ... and per Home tab (or modal).
MAX_HOME_BLOCKS = 100
#: Slack answers ``msg_blocks_too_long`` past about 13,170 characters of text in a message's
#: blocks (not in its published limits; bolt-js #2509, #2867). The stand-in refuses past
#: this many, counted as :func:`block_text_length` does: a margin below what was observed.
MAX_BLOCK_TEXT = 12_000

_KNOWN_BLOCK_TYPES = frozenset(
    {
        "actions",
        "context",
        "divider",
        "file",
        "header",
        "image",
        "input",
        "markdown",
        "rich_text",
        "section",
        "table",
        "video",
    }
)


# ---------------------------------------------------------------------------
# Validation (Block Kit limits)
# ---------------------------------------------------------------------------


def _text_problems(obj: Any, pointer: str, limit: int, *, plain_only: bool = False) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in ("plain_text", "mrkdwn"):
        return [f"[ERROR] must be a text object [json-pointer:{pointer}]"]
    if plain_only and obj["type"] != "plain_text":
        return [f"[ERROR] must be plain_text [json-pointer:{pointer}/type]"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"[ERROR] must be more than 0 characters [json-pointer:{pointer}/text]"]
    if len(text) > limit:
        return [f"[ERROR] must be less than {limit + 1} characters [json-pointer:{pointer}/text]"]
    return []


def _element_problems(element: Any, pointer: str) -> list[str]:
    if not isinstance(element, dict) or not isinstance(element.get("type"), str):
        return [f"[ERROR] element must have a type [json-pointer:{pointer}]"]
    problems: list[str] = []
    if len(str(element.get("action_id", ""))) > 255:
        problems.append(f"[ERROR] must be less than 256 characters [json-pointer:{pointer}/action_id]")
    if element["type"] == "button":
        problems += _text_problems(element.get("text"), f"{pointer}/text", 75, plain_only=True)
        if len(str(element.get("value", ""))) > 2000:
            problems.append(f"[ERROR] must be less than 2001 characters [json-pointer:{pointer}/value]")
        if len(str(element.get("url", ""))) > 3000:
            problems.append(f"[ERROR] must be less than 3001 characters [json-pointer:{pointer}/url]")
    elif element["type"] == "static_select":
        if "placeholder" in element:
            problems += _text_problems(element["placeholder"], f"{pointer}/placeholder", 150, plain_only=True)
        options = element.get("options")
        if not isinstance(options, list) or not 1 <= len(options) <= 100:
            return problems + [f"[ERROR] must have 1 to 100 items [json-pointer:{pointer}/options]"]
        for k, option in enumerate(options):
            at = f"{pointer}/options/{k}"
            if not isinstance(option, dict):
                problems.append(f"[ERROR] must be an option object [json-pointer:{at}]")
                continue
            problems += _text_problems(option.get("text"), f"{at}/text", 75, plain_only=True)
            value = option.get("value")
            if not isinstance(value, str) or not 1 <= len(value) <= 150:
                problems.append(f"[ERROR] must be 1 to 150 characters [json-pointer:{at}/value]")
    return problems


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def block_text_length(blocks: Any) -> int:
    """The text of a message's blocks as Slack may count it for ``msg_blocks_too_long``,
    erring high: UTF-16 code units of every text (text objects of sections, fields, headers,
    contexts, buttons, options and placeholders; rich text leaves, date fallbacks, link
    URLs), and mentions and emoji as written (``<@U123>``, ``:fire:``)."""
    if isinstance(blocks, list):
        return sum(block_text_length(item) for item in blocks)
    if not isinstance(blocks, dict):
        return 0
    total = 0
    kind = blocks.get("type")
    if kind in ("user", "usergroup", "channel"):
        total += 3 + _utf16(str(blocks.get(f"{kind}_id", "")))
    elif kind == "emoji":
        total += 2 + _utf16(str(blocks.get("name", "")))
    for key, value in blocks.items():
        if isinstance(value, str):
            if key in ("text", "fallback", "url", "alt_text"):
                total += _utf16(value)
        elif isinstance(value, (dict, list)):
            total += block_text_length(value)
    return total


def validate_blocks(blocks: Any, *, max_blocks: int = MAX_BLOCKS, pointer: str = "/blocks") -> list[str]:
    """Slack-style ``invalid_blocks`` messages for a message's blocks ([] = valid).

    Covers the limits SubmitWatch can trip over (Slack's Block Kit reference), not the
    whole Block Kit schema.  A Home tab takes ``max_blocks=MAX_HOME_BLOCKS`` and Slack
    points into it as ``pointer="/view/blocks"``.
    """
    if not isinstance(blocks, list):
        return [f"[ERROR] must be an array [json-pointer:{pointer}]"]
    problems: list[str] = []
    if len(blocks) > max_blocks:
        problems.append(f"[ERROR] no more than {max_blocks} items allowed [json-pointer:{pointer}]")
    seen_ids: set[str] = set()
    for i, block in enumerate(blocks):
        at = f"{pointer}/{i}"
        if not isinstance(block, dict) or block.get("type") not in _KNOWN_BLOCK_TYPES:
            problems.append(f"[ERROR] unsupported or missing block type [json-pointer:{at}/type]")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if len(str(block_id)) > 255:
                problems.append(f"[ERROR] must be less than 256 characters [json-pointer:{at}/block_id]")
            if block_id in seen_ids:
                problems.append(f"[ERROR] duplicate block_id [json-pointer:{at}/block_id]")
            seen_ids.add(block_id)
        kind = block["type"]
        if kind == "header":
            problems += _text_problems(block.get("text"), f"{at}/text", 150, plain_only=True)
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                problems.append(f"[ERROR] must provide text or fields [json-pointer:{at}]")
            if "text" in block:
                problems += _text_problems(block["text"], f"{at}/text", 3000)
            fields = block.get("fields", [])
            if not isinstance(fields, list) or len(fields) > 10:
                problems.append(f"[ERROR] no more than 10 items allowed [json-pointer:{at}/fields]")
            else:
                for j, item in enumerate(fields):
                    problems += _text_problems(item, f"{at}/fields/{j}", 2000)
            if "accessory" in block:
                problems += _element_problems(block["accessory"], f"{at}/accessory")
        elif kind in ("context", "actions"):
            elements = block.get("elements")
            limit = 10 if kind == "context" else 25
            if not isinstance(elements, list) or not elements or len(elements) > limit:
                problems.append(f"[ERROR] must have 1 to {limit} items [json-pointer:{at}/elements]")
            elif kind == "actions":
                for j, element in enumerate(elements):
                    problems += _element_problems(element, f"{at}/elements/{j}")
        elif kind == "rich_text":
            problems += _rich_text_problems(block.get("elements"), f"{at}/elements")
    return problems


_RICH_CONTAINERS = frozenset({"rich_text_section", "rich_text_preformatted", "rich_text_quote",
                              "rich_text_list"})
_RICH_LEAVES = frozenset({"text", "link", "user", "usergroup", "channel", "emoji", "date",
                          "broadcast", "color"})


def _rich_text_problems(elements: Any, pointer: str) -> list[str]:
    """rich_text: containers of leaves; a text leaf needs non-empty text, a date a timestamp."""
    if not isinstance(elements, list) or not elements:
        return [f"[ERROR] must have at least 1 item [json-pointer:{pointer}]"]
    problems: list[str] = []
    for i, container in enumerate(elements):
        at = f"{pointer}/{i}"
        if not isinstance(container, dict) or container.get("type") not in _RICH_CONTAINERS:
            problems.append(f"[ERROR] unsupported rich text element [json-pointer:{at}/type]")
            continue
        if container["type"] == "rich_text_list":
            problems += _rich_text_problems(container.get("elements"), f"{at}/elements")
            continue
        for j, leaf in enumerate(container.get("elements") or []):
            where = f"{at}/elements/{j}"
            kind = leaf.get("type") if isinstance(leaf, dict) else None
            if kind not in _RICH_LEAVES:
                problems.append(f"[ERROR] unsupported rich text element [json-pointer:{where}/type]")
            elif kind == "text" and (not isinstance(leaf.get("text"), str) or not leaf["text"]):
                problems.append(f"[ERROR] must be more than 0 characters [json-pointer:{where}/text]")
            elif kind == "date" and not isinstance(leaf.get("timestamp"), int):
                problems.append(f"[ERROR] must be an integer [json-pointer:{where}/timestamp]")
    return problems


# ---------------------------------------------------------------------------
# Terminal rendering (mrkdwn to plain text)
# ---------------------------------------------------------------------------

_ANGLE = re.compile(r"<([^<>\n]*)>")
_ENTITY = re.compile(r"&(amp|lt|gt);")
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">"}
_RULE = "-" * 40


def _mrkdwn_plain(text: str) -> str:
    """mrkdwn → terminal text: resolve ``<...>`` control sequences, then unescape.

    Order matters: a literal ``<`` in content arrives as ``&lt;`` so only real
    ``<...>`` are control sequences, and unescaping in one pass keeps
    ``&amp;lt;`` as the literal text ``&lt;``.  Emphasis markers (``*bold*``)
    are left alone; they read fine in a terminal.
    """

    def control(match: re.Match[str]) -> str:
        inner = match.group(1)
        target, _, label = inner.partition("|")
        if target.startswith("@"):
            return f"@{label or target[1:]}"
        if target.startswith("#"):
            return f"#{label or target[1:]}"
        if target.startswith("!subteam^"):
            return label or "@group"
        if target.startswith("!date^"):
            return label or target
        if target.startswith("!"):
            return f"@{target[1:]}"
        return f"{label} ({target})" if label else target

    return _ENTITY.sub(lambda m: _ENTITIES[m.group(1)], _ANGLE.sub(control, text))


def _text(obj: Any) -> str:
    """A Block Kit text object as plain text (mrkdwn is unescaped, plain_text is not)."""
    if isinstance(obj, str):
        return _mrkdwn_plain(obj)
    if not isinstance(obj, dict):
        return ""
    text = str(obj.get("text", ""))
    return _mrkdwn_plain(text) if obj.get("type") == "mrkdwn" else text


def _element(element: Any) -> str:
    """An interactive or context element as one short token."""
    if not isinstance(element, dict):
        return ""
    kind = element.get("type")
    if kind in ("plain_text", "mrkdwn"):
        return _text(element)
    if kind == "button":
        return f"[{_text(element.get('text'))}]"
    if kind == "image":
        return f"[image: {element.get('alt_text', '')}]"
    if kind == "overflow":
        return "[...]"
    label = _text(element.get("placeholder")) or str(kind)
    return f"[{label}]"


def _rich_text(node: Any) -> str:
    """Flatten rich_text elements into plain text (lists get "- " bullets)."""
    if isinstance(node, list):
        return "".join(_rich_text(child) for child in node)
    if not isinstance(node, dict):
        return ""
    kind = node.get("type")
    if kind == "text":
        return str(node.get("text", ""))
    if kind == "link":
        return str(node.get("text") or node.get("url", ""))
    if kind == "user":
        return f"@{node.get('user_id', '')}"
    if kind == "channel":
        return f"#{node.get('channel_id', '')}"
    if kind == "emoji":
        return f":{node.get('name', '')}:"
    if kind == "date":
        return str(node.get("fallback", ""))
    if kind == "rich_text_list":
        return "\n".join(f"- {_rich_text(item)}" for item in node.get("elements", [])) + "\n"
    return _rich_text(node.get("elements", []))


def _block_lines(block: dict) -> list[str]:
    kind = block.get("type")
    if kind == "header":
        title = _text(block.get("text"))
        return [title, "=" * len(title)]
    if kind == "divider":
        return [_RULE]
    if kind == "section":
        lines = _text(block.get("text")).splitlines() if "text" in block else []
        lines += [" ".join(_text(f).split("\n")) for f in block.get("fields", [])]
        if "accessory" in block:
            lines.append(_element(block["accessory"]))
        return lines
    if kind == "context":
        return [" | ".join(_element(e) for e in block.get("elements", []))]
    if kind == "actions":
        return [" ".join(_element(e) for e in block.get("elements", []))]
    if kind == "image":
        return [f"[image: {block.get('alt_text', '')}]"]
    if kind == "rich_text":
        return _rich_text(block.get("elements", [])).rstrip("\n").splitlines()
    if kind == "markdown":
        return str(block.get("text", "")).splitlines()
    if kind == "input":
        return [f"{_text(block.get('label'))}: [input]"]
    return [f"[{kind} block]"]


def render_text(message: Mapping[str, Any]) -> str:
    """A posted message as readable plain text for a terminal.

    Uses the Block Kit ``blocks`` when present (that is what people see in
    Slack), otherwise ``text``, otherwise attachment fallbacks.  Headers become
    an underlined title, section text/fields one line each, context elements
    joined by ``" | "``, buttons ``[Label]``, dividers a rule; mrkdwn escapes
    (``&lt;`` ``&gt;`` ``&amp;``) are shown as the characters.  Pure function.
    """
    blocks = message.get("blocks") or []
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    if blocks:
        lines: list[str] = []
        for block in blocks:
            if isinstance(block, dict):
                lines.extend(_block_lines(block))
        return "\n".join(lines)
    text = message.get("text") or ""
    if text:
        return _mrkdwn_plain(str(text))
    attachments = message.get("attachments") or []
    return "\n".join(
        _mrkdwn_plain(str(a.get("fallback") or a.get("text") or "")) for a in attachments if isinstance(a, dict)
    )


def block_kit_builder_url(blocks: Iterable[Mapping[str, Any]] | Mapping[str, Any]) -> str:
    """A Block Kit Builder link that previews ``blocks`` (only builds the string).

    Accepts a list of blocks or a message dict with a ``blocks`` key.  The
    builder reads URL-encoded JSON ``{"blocks": [...]}`` from the fragment, so
    nothing is sent to Slack until someone opens the link.
    """
    if isinstance(blocks, Mapping):
        blocks = blocks.get("blocks") or []
    payload = json.dumps({"blocks": list(blocks)}, separators=(",", ":"), ensure_ascii=False)
    return "https://app.slack.com/block-kit-builder/#" + quote(payload, safe="")
