"""Reading Block Kit messages in tests: what Slack shows as prose, and the commands.

Prose lives in mrkdwn text objects and in rich_text sections (where untrusted names go, since
Slack shows their text literally); commands live in rich_text_preformatted blocks.
"""
from bot.slack.richtext import text_of


def mrkdwn_texts(blocks):
    """Every string Slack will parse as mrkdwn."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(blocks)
    return found


def rich_sections(blocks):
    """The text of every rich_text block that is prose (not a command), as a reader sees it."""
    return [text_of({"elements": [el]}) for b in blocks if b["type"] == "rich_text"
            for el in b["elements"] if el["type"] == "rich_text_section"]


def prose(blocks) -> str:
    """All prose of a message, mrkdwn and rich text, one string."""
    return "\n".join(mrkdwn_texts(blocks) + rich_sections(blocks))


def preformatted(blocks):
    """The text of each command block."""
    return [el["elements"][0]["text"] for b in blocks if b["type"] == "rich_text"
            for el in b["elements"] if el["type"] == "rich_text_preformatted"]


def rich_elements(blocks):
    """Every element inside rich_text sections (text, user, date ...)."""
    return [leaf for b in blocks if b["type"] == "rich_text" for el in b["elements"]
            if el["type"] == "rich_text_section" for leaf in el["elements"]]


def sections(reply) -> list[str]:
    """The prose blocks in order: mrkdwn sections, and rich text as a reader sees it."""
    out = []
    for b in reply.blocks:
        if b["type"] == "section" and "text" in b:
            out.append(b["text"]["text"])
        elif b["type"] == "rich_text" and b["elements"][0]["type"] == "rich_text_section":
            out.append(text_of(b))
    return out
