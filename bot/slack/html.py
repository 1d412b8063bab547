"""Block Kit as one self-contained HTML page: see the messages before Slack exists.

The demo writes one page per run with every message it sent (each version of a message edited
in place, its thread under it, the App Home tab), and `submitwatch preview` writes the same
page for messages rendered from a database. The page looks close enough to Slack that an admin
recognises an alert: Slack's font stack, colours and message layout. It is not Slack: nothing
is clickable beyond links, and the controls only show what Slack would show.

One file, nothing fetched: inline CSS, no script, no font, no image (an image block shows its
alt text); a Content-Security-Policy says so to the browser too. Every value from a message is
HTML-escaped, so a name such as `<img src=x onerror=alert(1)>` or `</pre><script>` is shown
as the text it is. Links keep only http, https and mailto targets.

A message is a mapping in the shape of the Slack stand-in's record (`sim.slack_api`):
`blocks` and `text` (blocks win, as in Slack), optionally `ts`, `edits`, `replies` (messages of
the same shape) and `versions` (oldest first, each `{"blocks", "text", "at"}`: what the message
showed as posted and after each update). An element id `m<N>` names the N-th message and
`m<N>-<V>` its V-th version: `page.html#m3` shows that message alone (pure CSS, `:target`).

Pure: no I/O except :func:`write_page`.
"""
from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["render_blocks", "render_mrkdwn", "render_page", "write_page"]

Message = Mapping[str, Any]

_SAFE_SCHEMES = ("http://", "https://", "mailto:")
_ENTITY = re.compile(r"&(amp|lt|gt);")
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">"}
# mrkdwn inline: a control sequence <...> or a code span `...`; the rest is text.
_INLINE = re.compile(r"<([^<>\n]*)>|`([^`\n]+)`")
_EMOJI = re.compile(r":([a-z0-9_+'-]*[a-z][a-z0-9_+'-]*):")
# Emphasis on already-escaped text (escaping never makes `*`, `_` or `~`): a marker opens at
# a word boundary before a non-space and closes after one, as Slack reads them.
_EMPHASIS = [(re.compile(r"(?<![\w*])\*(?=\S)([^*\n]*?\S)\*(?![\w*])"), "b"),
             (re.compile(r"(?<![\w_])_(?=\S)([^_\n]*?\S)_(?![\w_])"), "i"),
             (re.compile(r"(?<![\w~])~(?=\S)([^~\n]*?\S)~(?![\w~])"), "s")]


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _unescape(text: str) -> str:
    """mrkdwn's own escapes (&lt; &gt; &amp;) back to the characters, in one pass."""
    return _ENTITY.sub(lambda m: _ENTITIES[m.group(1)], text)


def _emoji(name: str) -> str:
    return f'<span class="emoji" title=":{_esc(name)}:">:{_esc(name)}:</span>'


def _plain_inline(text: str) -> str:
    """mrkdwn text between control sequences: escaped, then emphasis and emoji names."""
    out = _esc(_unescape(text))
    for pattern, tag in _EMPHASIS:
        out = pattern.sub(rf"<{tag}>\1</{tag}>", out)
    return _EMOJI.sub(lambda m: _emoji(m.group(1)), out)


def _link(target: str, label: str) -> str:
    shown = label or target
    if target.lower().startswith(_SAFE_SCHEMES):
        return f'<a href="{_esc(target)}" rel="noreferrer">{_esc(shown)}</a>'
    return _esc(shown)


def _control(inner: str) -> str:
    """One mrkdwn control sequence <...>: a mention, a date, a link."""
    target, _, label = inner.partition("|")
    target, label = _unescape(target), _unescape(label)
    if target.startswith("@"):
        return f'<span class="mention">@{_esc(label or target[1:])}</span>'
    if target.startswith("#"):
        return f'<span class="mention">#{_esc(label or target[1:])}</span>'
    if target.startswith("!subteam^"):
        return f'<span class="mention">{_esc(label or "@" + target[9:])}</span>'
    if target.startswith("!date^"):
        parts = target.split("^")
        stamp = parts[1] if len(parts) > 1 else ""
        return f'<span class="date" title="{_esc(stamp)}">{_esc(label or target)}</span>'
    if target.startswith("!"):
        return f'<span class="mention broadcast">@{_esc(target[1:])}</span>'
    return _link(target, label)


def _mrkdwn_inline(text: str) -> str:
    out: list[str] = []
    at = 0
    for match in _INLINE.finditer(text):
        out.append(_plain_inline(text[at:match.start()]))
        if match.group(2) is not None:
            out.append(f"<code>{_esc(_unescape(match.group(2)))}</code>")
        else:
            out.append(_control(match.group(1)))
        at = match.end()
    out.append(_plain_inline(text[at:]))
    return "".join(out)


def render_mrkdwn(text: str) -> str:
    """Slack mrkdwn as HTML: ```code blocks```, > quotes, `code`, *bold*, _italic_, ~strike~,
    <links|and mentions>, :emoji: names. The result goes in a `white-space: pre-wrap` box."""
    out: list[str] = []
    for i, part in enumerate(re.split(r"```", text)):
        if i % 2:  # inside ``` ... ```
            out.append(f'<pre class="pre">{_esc(_unescape(part.strip(chr(10))))}</pre>')
            continue
        lines = part.split("\n")
        quote: list[str] = []
        rendered: list[str] = []
        for line in lines:
            if line.startswith(("&gt;", ">")):
                quote.append(_mrkdwn_inline(line.removeprefix("&gt;").removeprefix(">").lstrip()))
                continue
            if quote:
                rendered.append('<blockquote>' + "\n".join(quote) + "</blockquote>")
                quote = []
            rendered.append(_mrkdwn_inline(line))
        if quote:
            rendered.append('<blockquote>' + "\n".join(quote) + "</blockquote>")
        joined = "\n".join(rendered)
        out.append(joined.replace("</blockquote>\n", "</blockquote>"))
    return "".join(out)


def _text(obj: Any) -> str:
    """A Block Kit text object (plain_text or mrkdwn) as HTML."""
    if isinstance(obj, str):
        return render_mrkdwn(obj)
    if not isinstance(obj, Mapping):
        return ""
    text = str(obj.get("text", ""))
    if obj.get("type") == "mrkdwn":
        return render_mrkdwn(text)
    return _EMOJI.sub(lambda m: _emoji(m.group(1)), _esc(text)) if obj.get("emoji") else _esc(text)


# ---------------------------------------------------------------------------
# Rich text
# ---------------------------------------------------------------------------


def _rich_leaf(leaf: Mapping[str, Any]) -> str:
    kind = leaf.get("type")
    if kind == "text":
        out = _esc(leaf.get("text", ""))
    elif kind == "link":
        out = _link(str(leaf.get("url", "")), str(leaf.get("text") or ""))
    elif kind == "user":
        out = f'<span class="mention">@{_esc(leaf.get("user_id", ""))}</span>'
    elif kind == "usergroup":
        out = f'<span class="mention">@{_esc(leaf.get("usergroup_id", ""))}</span>'
    elif kind == "channel":
        out = f'<span class="mention">#{_esc(leaf.get("channel_id", ""))}</span>'
    elif kind == "broadcast":
        out = f'<span class="mention broadcast">@{_esc(leaf.get("range", ""))}</span>'
    elif kind == "emoji":
        out = _emoji(str(leaf.get("name", "")))
    elif kind == "date":
        out = (f'<span class="date" title="{_esc(leaf.get("timestamp", ""))}">'
               f'{_esc(leaf.get("fallback", ""))}</span>')
    elif kind == "color":
        value = str(leaf.get("value", ""))
        swatch = value if re.fullmatch(r"#[0-9A-Fa-f]{3,8}", value) else "transparent"
        out = f'<span class="swatch" style="background:{swatch}"></span>{_esc(value)}'
    else:
        out = f"[{_esc(kind)}]"
    style = leaf.get("style")
    style = style if isinstance(style, Mapping) else {}
    for flag, tag in (("code", "code"), ("strike", "s"), ("italic", "i"), ("bold", "b")):
        if style.get(flag):
            out = f"<{tag}>{out}</{tag}>"
    return out


def _rich_leaves(container: Mapping[str, Any]) -> str:
    return "".join(_rich_leaf(leaf) for leaf in container.get("elements") or []
                   if isinstance(leaf, Mapping))


def _rich_element(node: Any) -> str:
    if not isinstance(node, Mapping):
        return ""
    kind = node.get("type")
    if kind == "rich_text_preformatted":
        return f'<pre class="pre">{_rich_leaves(node)}</pre>'
    if kind == "rich_text_quote":
        return f"<blockquote>{_rich_leaves(node)}</blockquote>"
    if kind == "rich_text_list":
        tag = "ol" if node.get("style") == "ordered" else "ul"
        indent = int(node.get("indent") or 0) if str(node.get("indent") or 0).isdigit() else 0
        items = "".join(f"<li>{_rich_element(item)}</li>" for item in node.get("elements") or [])
        return f'<{tag} style="margin-left:{min(indent, 8) * 24}px">{items}</{tag}>'
    return f'<span class="rt-section">{_rich_leaves(node)}</span>'


# ---------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------


def _element(element: Any) -> str:
    """A control or context element."""
    if not isinstance(element, Mapping):
        return ""
    kind = element.get("type")
    if kind in ("plain_text", "mrkdwn"):
        return f'<span class="ctx-text">{_text(element)}</span>'
    if kind == "button":
        style = element.get("style")
        css = " primary" if style == "primary" else " danger" if style == "danger" else ""
        label = _text(element.get("text"))
        url = str(element.get("url", ""))
        if url.lower().startswith(_SAFE_SCHEMES):
            return (f'<a class="btn{css}" href="{_esc(url)}" rel="noreferrer">{label}</a>')
        return f'<button type="button" class="btn{css}">{label}</button>'
    if kind in ("static_select", "multi_static_select", "external_select", "users_select",
                "conversations_select", "channels_select"):
        placeholder = _text(element.get("placeholder")) or "Select an item"
        options = []
        for group in element.get("option_groups") or [{"options": element.get("options") or []}]:
            for option in group.get("options") or []:
                if isinstance(option, Mapping):
                    options.append(f"<option>{_text(option.get('text'))}</option>")
        return (f'<label class="select"><select><option selected disabled hidden>{placeholder}'
                f'</option>{"".join(options)}</select></label>')
    if kind == "overflow":
        return '<button type="button" class="btn overflow" title="More actions">&#8942;</button>'
    if kind == "image":
        return f'<span class="img-alt">[image: {_esc(element.get("alt_text", ""))}]</span>'
    if kind in ("datepicker", "timepicker", "plain_text_input", "checkboxes", "radio_buttons"):
        placeholder = _text(element.get("placeholder")) or _esc(kind)
        return f'<span class="input">{placeholder}</span>'
    return f'<span class="unknown">[{_esc(kind)}]</span>'


def _block(block: Mapping[str, Any]) -> str:
    kind = block.get("type")
    if kind == "header":
        return f'<div class="bk header">{_text(block.get("text"))}</div>'
    if kind == "divider":
        return '<hr class="bk divider">'
    if kind == "section":
        parts = []
        if "text" in block:
            parts.append(f'<div class="mrkdwn">{_text(block.get("text"))}</div>')
        fields = [f'<div class="mrkdwn">{_text(f)}</div>' for f in block.get("fields") or []]
        if fields:
            parts.append(f'<div class="fields">{"".join(fields)}</div>')
        body = f'<div class="section-body">{"".join(parts)}</div>'
        accessory = block.get("accessory")
        side = f'<div class="accessory">{_element(accessory)}</div>' if accessory else ""
        return f'<div class="bk section">{body}{side}</div>'
    if kind == "context":
        items = "".join(_element(e) for e in block.get("elements") or [])
        return f'<div class="bk context">{items}</div>'
    if kind == "actions":
        items = "".join(_element(e) for e in block.get("elements") or [])
        return f'<div class="bk actions">{items}</div>'
    if kind == "rich_text":
        items = "".join(_rich_element(e) for e in block.get("elements") or [])
        return f'<div class="bk rich">{items}</div>'
    if kind == "markdown":
        return f'<div class="bk mrkdwn">{_esc(block.get("text", ""))}</div>'
    if kind == "image":
        title = _text(block.get("title")) if block.get("title") else ""
        return (f'<div class="bk img-alt">{title} [image: {_esc(block.get("alt_text", ""))}]'
                "</div>")
    if kind == "input":
        return (f'<div class="bk input-block"><div class="label">{_text(block.get("label"))}'
                f'</div>{_element(block.get("element"))}</div>')
    return f'<div class="bk unknown">[{_esc(kind)} block]</div>'


def render_blocks(blocks: Sequence[Any]) -> str:
    """A list of Block Kit blocks as HTML (the inside of one message or view)."""
    return "".join(_block(b) for b in blocks if isinstance(b, Mapping))


def _content(shown: Mapping[str, Any]) -> str:
    """What a message shows: its blocks, else its text as mrkdwn (as Slack does)."""
    blocks = shown.get("blocks") or []
    if blocks:
        return render_blocks(blocks)
    return f'<div class="bk mrkdwn">{render_mrkdwn(str(shown.get("text") or ""))}</div>'


# ---------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------


def _clock(value: Any) -> str:
    try:
        return datetime.fromtimestamp(float(value), UTC).strftime("%H:%M")
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def _initials(app: str) -> str:
    capitals = "".join(ch for ch in app if ch.isupper())
    return (capitals if len(capitals) >= 2 else app)[:2].upper()


def _message(shown: Mapping[str, Any], *, element_id: str, app: str, when: str, note: str = "",
             edited: bool = False, css: str = "") -> str:
    label = f'<div class="note">{note}</div>' if note else ""
    edit = ' <span class="edited">(edited)</span>' if edited else ""
    return (f'<article class="msg{css}" id="{_esc(element_id)}">{label}'
            f'<div class="avatar" aria-hidden="true">{_esc(_initials(app))}</div>'
            f'<div class="msg-body"><div class="meta"><span class="name">{_esc(app)}</span>'
            f'<span class="app-badge">APP</span><span class="time">{_esc(when)}</span></div>'
            f'<div class="blocks">{_content(shown)}</div>{edit}</div></article>')


def _conversation(message: Message, number: int, app: str) -> str:
    element_id = f"m{number}"
    versions = [v for v in message.get("versions") or [] if isinstance(v, Mapping)]
    when = _clock(versions[0].get("at")) if versions else _clock(message.get("ts"))
    parts: list[str] = []
    if len(versions) > 1:
        total = len(versions) - 1
        parts.append(_message(versions[0], element_id=f"{element_id}-1", app=app, when=when,
                              note=f"As posted; updated in place {total} time(s) since, "
                                   "each update below"))
        for k, version in enumerate(versions[1:], start=1):
            now = " (what Slack shows now)" if k == total else ""
            parts.append(_message(version, element_id=f"{element_id}-{k + 1}", app=app,
                                  when=_clock(version.get("at")), css=" update",
                                  note=f"Update {k} of {total}{now}", edited=True))
    else:
        shown = versions[0] if versions else message
        parts.append(_message(shown, element_id=f"{element_id}-1", app=app, when=when,
                              edited=bool(message.get("edits"))))
    replies = [r for r in message.get("replies") or [] if isinstance(r, Mapping)]
    if replies:
        items = []
        for k, reply in enumerate(replies, start=1):
            reply_versions = [v for v in reply.get("versions") or [] if isinstance(v, Mapping)]
            shown = reply_versions[-1] if reply_versions else reply
            reply_when = _clock(reply_versions[0].get("at")) if reply_versions \
                else _clock(reply.get("ts"))
            items.append(_message(shown, element_id=f"{element_id}-r{k}", app=app,
                                  when=reply_when, css=" reply",
                                  edited=len(reply_versions) > 1 or bool(reply.get("edits"))))
        count = f"{len(replies)} repl{'y' if len(replies) == 1 else 'ies'}"
        parts.append(f'<div class="thread"><div class="thread-count">{count}</div>'
                     f'{"".join(items)}</div>')
    return f'<section class="conv" id="{element_id}">{"".join(parts)}</section>'


_CSS = """
*{box-sizing:border-box}
html,body{margin:0;padding:0}
body{font-family:"Slack-Lato","Lato","Helvetica Neue",Helvetica,"Segoe UI",Arial,
 "Liberation Sans",sans-serif;font-size:15px;line-height:1.46668;color:#1d1c1d;
 background:#fff;-webkit-font-smoothing:antialiased}
code,pre,.pre{font-family:"Slack-Mono",Monaco,Menlo,Consolas,"Courier New","Liberation Mono",
 "DejaVu Sans Mono",monospace}
a{color:#1264a3;text-decoration:none}
.topbar{height:40px;background:#350d36;color:#fff;display:flex;align-items:center;
 padding:0 16px;font-size:13px;opacity:.97}
.topbar b{margin-right:12px}
.layout{display:flex;min-height:calc(100vh - 40px)}
.sidebar{width:220px;flex:none;background:#3f0e40;color:#cfc3cf;padding:12px 0;font-size:15px}
.sidebar .team{color:#fff;font-weight:900;font-size:18px;padding:0 16px 12px;
 border-bottom:1px solid #522653;margin-bottom:12px}
.sidebar .heading{padding:8px 16px 4px;font-size:14px}
.sidebar a{display:block;color:#cfc3cf;padding:2px 16px 2px 26px}
.sidebar a.active{background:#1164a3;color:#fff}
main{flex:1;min-width:0}
.pane-head{height:49px;border-bottom:1px solid #e2e2e2;display:flex;align-items:center;
 padding:0 20px;font-weight:900;font-size:18px}
.pane-head .sub{font-weight:400;font-size:13px;color:#616061;margin-left:12px}
.banner{margin:12px 20px;padding:8px 12px;border-radius:6px;background:#f8f8f8;
 border:1px solid #e2e2e2;color:#616061;font-size:13px}
.one{display:none}
.conv{border-bottom:1px solid #f0f0f0;padding:4px 0}
.msg{display:grid;grid-template-columns:36px 1fr;column-gap:8px;padding:8px 20px}
.msg:hover{background:#f8f8f8}
.msg .note{grid-column:1/3;font-size:12px;color:#616061;margin:0 0 4px 44px}
.msg.update{margin-left:44px;border-left:3px solid #e8e8e8;padding-left:16px}
.avatar{width:36px;height:36px;border-radius:6px;background:#4a154b;color:#fff;
 font-weight:900;font-size:14px;display:flex;align-items:center;justify-content:center}
.msg-body{min-width:0}
.meta{line-height:1.2;margin-bottom:2px}
.name{font-weight:900}
.app-badge{display:inline-block;background:rgba(29,28,29,.13);color:rgba(29,28,29,.7);
 font-size:10px;font-weight:700;border-radius:2px;padding:1px 3px;margin:0 6px;
 vertical-align:1px}
.time{color:#616061;font-size:12px}
.edited{color:#868686;font-size:13px}
.bk{margin:4px 0}
.header{font-size:18px;font-weight:900;line-height:1.33;margin-top:2px}
.mrkdwn,.rich,.ctx-text{white-space:pre-wrap;overflow-wrap:anywhere}
.rt-section{display:block}
.section{display:flex;gap:12px;align-items:flex-start}
.section-body{flex:1;min-width:0}
.fields{display:grid;grid-template-columns:1fr 1fr;gap:8px 16px;margin-top:4px}
.context{font-size:12px;color:#616061;display:flex;flex-wrap:wrap;gap:4px 8px;
 align-items:center}
.divider{border:0;border-top:1px solid #e2e2e2;margin:12px 0}
code{font-size:12px;color:#e01e5a;background:rgba(29,28,29,.04);
 border:1px solid rgba(29,28,29,.13);border-radius:3px;padding:2px 3px 1px;
 white-space:pre-wrap;overflow-wrap:anywhere}
.pre{display:block;font-size:12px;line-height:1.5;background:rgba(29,28,29,.04);
 border:1px solid rgba(29,28,29,.13);border-radius:4px;padding:8px;margin:4px 0;
 white-space:pre-wrap;overflow-wrap:anywhere;color:#1d1c1d}
.pre code{border:0;background:none;color:inherit;padding:0}
blockquote{margin:4px 0;padding-left:12px;border-left:4px solid #ddd}
ul,ol{margin:2px 0;padding-left:24px}
.mention{color:#1264a3;background:rgba(29,155,209,.1);border-radius:3px;padding:0 2px}
.mention.broadcast{color:#8f6a00;background:rgba(242,199,68,.25)}
.date{border-bottom:1px dotted #868686}
.emoji{color:#616061;font-size:.93em}
.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:3px;
 vertical-align:-1px;border:1px solid rgba(0,0,0,.2)}
.actions{display:flex;flex-wrap:wrap;gap:8px;margin-top:8px}
.btn{font:inherit;font-size:13px;font-weight:700;height:28px;padding:0 12px;border-radius:4px;
 border:1px solid rgba(29,28,29,.3);background:#fff;color:#1d1c1d;display:inline-flex;
 align-items:center;cursor:default}
.btn.primary{background:#007a5a;border-color:#007a5a;color:#fff}
.btn.danger{background:#e01e5a;border-color:#e01e5a;color:#fff}
.btn.overflow{padding:0 8px}
.select select{font:inherit;font-size:13px;font-weight:700;height:28px;border-radius:4px;
 border:1px solid rgba(29,28,29,.3);background:#fff;color:#1d1c1d;padding:0 8px;
 min-width:120px}
.img-alt,.unknown,.input{color:#616061;font-style:italic}
.input{font-style:normal;border:1px solid rgba(29,28,29,.3);border-radius:4px;padding:2px 8px}
.thread{margin:0 20px 8px 64px;border-left:2px solid #e2e2e2}
.thread-count{color:#1264a3;font-weight:700;font-size:13px;padding:2px 12px}
.msg.reply{padding-left:12px}
.home{border-top:8px solid #f8f8f8}
.tabs{display:flex;gap:20px;padding:0 20px;border-bottom:1px solid #e2e2e2;font-size:14px}
.tabs span{padding:10px 0;color:#616061}
.tabs span.on{color:#1d1c1d;font-weight:700;border-bottom:2px solid #1264a3}
.home-body{padding:12px 20px 24px;max-width:880px}
.empty{color:#616061;padding:12px 20px}
body:has(.conv:target,.msg:target) .conv:not(:target):not(:has(:target)),
body:has(.conv:target,.msg:target) .home,
body:has(.conv:target,.msg:target) .banner.all{display:none}
body:has(.msg:target) .conv>:not(:target){display:none}
body:has(.conv:target,.msg:target) .one{display:block}
"""


def render_page(messages: Sequence[Message], *, channel: str, title: str = "SubmitWatch",
                app: str = "SubmitWatch", workspace: str = "Contoso",
                home: Mapping[str, Any] | None = None, home_user: str = "",
                note: str = "") -> str:
    """The page: `channel`'s messages in post order, each with its versions and thread, then
    the App Home tab `home` (a published view, as seen by `home_user`) when there is one."""
    conversations = "".join(_conversation(m, n, app) for n, m in enumerate(messages, start=1))
    if not conversations:
        conversations = '<div class="empty">No message was sent to this channel.</div>'
    home_html = ""
    home_link = ""
    if home is not None:
        seen_by = f" as {_esc(home_user)} sees it" if home_user else ""
        home_html = (f'<section class="home" id="home"><div class="pane-head">{_esc(app)}'
                     f'<span class="sub">App Home{seen_by}</span></div><div class="tabs">'
                     '<span class="on">Home</span><span>Messages</span><span>About</span></div>'
                     f'<div class="home-body">{render_blocks(home.get("blocks") or [])}</div>'
                     "</section>")
        home_link = f'<div class="heading">Apps</div><a href="#home">{_esc(app)}</a>'
    banner = (f'<div class="banner all">{_esc(note)}</div>' if note else "")
    count = f"{len(messages)} message{'' if len(messages) == 1 else 's'}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; form-action 'none'; base-uri 'none'\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        f'<div class="topbar"><b>{_esc(workspace)}</b>{_esc(title)}</div>'
        '<div class="layout"><nav class="sidebar">'
        f'<div class="team">{_esc(workspace)}</div><div class="heading">Channels</div>'
        f'<a class="active" href="#">#&nbsp;{_esc(channel.lower())}</a>{home_link}</nav><main>'
        f'<section class="channel"><div class="pane-head">#&nbsp;{_esc(channel.lower())}'
        f'<span class="sub">{count}</span></div>{banner}'
        '<div class="banner one">One message of this page. <a href="#">Show them all</a></div>'
        f"{conversations}</section>{home_html}</main></div></body></html>\n")


def write_page(path: str | Path, messages: Sequence[Message], **options: Any) -> Path:
    """Write :func:`render_page` to `path` (UTF-8), replacing it; returns the absolute path."""
    target = Path(path).absolute()
    target.write_text(render_page(messages, **options), encoding="utf-8")
    return target
