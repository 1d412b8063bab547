"""The demo's HTML page of every Slack message, opened in a real headless browser.

Debian's chromium loads the page from a file:// URL (its network cut off: no DNS, no
background traffic, a fresh profile in tmp), dumps the DOM and takes screenshots. The alert's
header, diagnosis and commands must be text in that DOM, hostile names must stay text (no
element made from them), and the screenshot must show something (more than one colour).

chromium comes from .ci/debian-packages; without it these tests fail, never skip.

`python -m tests.test_preview docs/img/alert.png` makes README's picture the same way: the
demo's page, focused on the port-25 printer's alert (CONTOSO\\svc-mfp) as first posted.
"""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bot.demo import run_demo
from bot.exchange.advice import CAUSES, INTERNET_AUTH, advise
from bot.slack.html import render_page
from tests.conftest import CHANNEL
from tests.helpers import sweep

CHROMIUM = "/usr/bin/chromium"
MFP_HEADER = "SMTP submit denied: CONTOSO\\svc-mfp"
HOSTILE = ["CONTOSO\\<img src=x onerror=alert(1)>", "CONTOSO\\</pre><script>alert(2)</script>",
           "<!channel>"]


def chromium() -> str:
    found = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if not found:
        pytest.fail("chromium is missing: the browser tests need Debian's chromium, which "
                    ".ci/debian-packages installs (run `bash .ci/debian-packages` as root, or "
                    "`apt-get install chromium`)", pytrace=False)
    return found


def browse(page: Path, *flags: str, fragment: str = "") -> subprocess.CompletedProcess:
    """Run headless chromium on `page` with no network and a fresh profile."""
    with tempfile.TemporaryDirectory(prefix="submitwatch-chromium-") as home:
        argv = [chromium(), "--headless", "--disable-gpu", f"--user-data-dir={home}/profile",
                "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
                "--disable-extensions", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--dns-prefetch-disable",
                "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
                *(["--no-sandbox"] if os.geteuid() == 0 else []), *flags,
                page.absolute().as_uri() + fragment]
        env = {**os.environ, "HOME": home, "XDG_CONFIG_HOME": f"{home}/config",
               "XDG_CACHE_HOME": f"{home}/cache"}
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env,
                                stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def screenshot(page: Path, png: Path, size: str, fragment: str = "") -> Path:
    browse(page, f"--screenshot={png}", f"--window-size={size}", fragment=fragment)
    assert png.is_file(), f"chromium wrote no screenshot at {png}"
    return png


class Dom(HTMLParser):
    """The tags and the text of a page as the browser left it."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.chunks: list[str] = []
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.chunks.append(data)

    @property
    def text(self) -> str:
        return re.sub(r"\s+", " ", "".join(self.chunks))


def dom_of(page: Path) -> Dom:
    return Dom(browse(page, "--dump-dom").stdout)


# --- PNG, with the standard library ---------------------------------------------------------


def read_png(path: Path) -> tuple[int, int, int, list[bytes]]:
    """(width, height, bytes per pixel, rows of pixels) of an 8-bit RGB/RGBA PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", data[pos + 8:pos + 8 + length])
        elif kind == b"IDAT":
            idat.append(data[pos + 8:pos + 8 + length])
        pos += 12 + length
    assert header is not None
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, header
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = rows[-1]
    return width, height, bpp, rows


def colours(rows: list[bytes], bpp: int) -> set[bytes]:
    return {row[i:i + 3] for row in rows for i in range(0, len(row), bpp)}


def write_png(path: Path, rows: list[bytes], width: int, bpp: int) -> None:
    """An RGB PNG of `rows` (RGBA input loses its alpha): filter Sub, zlib level 9."""
    out = bytearray()
    for row in rows:
        rgb = row if bpp == 3 else bytes(b for i, b in enumerate(row) if i % 4 != 3)
        out.append(1)
        out += bytes([*rgb[:3]]) + bytes((rgb[i] - rgb[i - 3]) & 0xFF for i in range(3, len(rgb)))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, len(rows), 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(bytes(out), 9)) + chunk(b"IEND", b""))


# --- the demo's page ------------------------------------------------------------------------


def demo_page(directory: Path) -> tuple[Path, str]:
    """Run the demo; its page and the fragment that focuses the svc-mfp alert as posted."""
    lines: list[str] = []
    assert run_demo(str(directory / "demo.db"), out=lines.append) == 0
    out = "\n".join(lines)
    page = Path(out.rstrip().splitlines()[-1].strip())
    assert page == (directory / "demo.html").absolute() and page.is_file(), out[-500:]
    mfp = out[out.index(MFP_HEADER):]
    number = re.search(r"Preview in the browser: (\S+)#m(\d+)", mfp)
    assert number and number.group(1) == page.as_uri()
    return page, f"#m{number.group(2)}-1"


def make_readme_image(png: Path) -> Path:
    """docs/img/alert.png: the demo's page focused on the svc-mfp alert, cropped to it."""
    with tempfile.TemporaryDirectory() as tmp:
        page, fragment = demo_page(Path(tmp))
        shot = screenshot(page, Path(tmp) / "alert.png", "960,1600", fragment=fragment)
        width, height, bpp, rows = read_png(shot)
    sidebar = 230 * bpp   # the sidebar fills every row: the alert ends where the column does
    background = rows[-1][sidebar:sidebar + 3]
    last = max(y for y, row in enumerate(rows)
               if any(row[i:i + 3] != background for i in range(sidebar, len(row), bpp)))
    write_png(png, rows[:min(height, last + 16)], width, bpp)
    return png


def test_the_demo_page_shows_the_alert_in_a_real_browser(tmp_path):
    page, fragment = demo_page(tmp_path)
    markup = page.read_text(encoding="utf-8")
    # One file with nothing to fetch: no script, no external reference of any kind.
    assert "<script" not in markup.lower() and not re.search(r"(src|href)=\"(?!#|https?:)", markup)
    assert "@import" not in markup and "url(" not in markup
    dom = dom_of(page)
    assert {tag for tag, _ in dom.tags} <= {
        "html", "head", "meta", "title", "style", "body", "div", "nav", "a", "main", "section",
        "article", "span", "b", "i", "s", "code", "pre", "blockquote", "ul", "ol", "li", "button",
        "label", "select", "option", "hr"}
    first_fix = advise(1018, "CONTOSO\\svc-mfp", "EX01", "Default Frontend EX01",
                       version="2019").fixes[0]
    for visible in (MFP_HEADER, CAUSES[INTERNET_AUTH][0], first_fix.title,
                    "Get-ReceiveConnector -Identity 'EX01\\Client Frontend EX01'",
                    "Acknowledge", "Show fix", "Snooze",
                    # a thread reply, an update in place, the storm digest, the App Home tab
                    "CONTOSO\\app-erp: now also seen on EX01", "Resolved: CONTOSO\\svc-mfp",
                    "Storm: 35 accounts refused SMTP submit", "App Home as U0DEMOADMIN sees it"):
        assert visible in dom.text, visible
    # The whole page, and the alert alone as README shows it: something drawn, not blank.
    for size, focus in (("1100,1400", ""), ("960,1200", fragment)):
        width, height, bpp, rows = read_png(screenshot(page, tmp_path / "shot.png", size, focus))
        assert (width, height) == tuple(int(n) for n in size.split(","))
        assert len(colours(rows, bpp)) > 50, "the screenshot is (nearly) blank"


def test_hostile_names_are_text_in_the_browser(tmp_path, logs, db, make_config, slack, clock):
    """Names from events reach the page through the real pipeline and the stand-in: each is
    shown as the text it is, and no element comes of it."""
    config = make_config(servers=("EX01",))
    for name in HOSTILE:
        logs["EX01"].append_refusal(1018, name, "Client Frontend EX01")
    sweep(db, config, clock)
    messages = slack.messages(CHANNEL)
    assert len(messages) == len(HOSTILE)
    # ... and in every slot a message can carry a value, straight from Block Kit.
    slots = [{"blocks": [
        {"type": "header", "text": {"type": "plain_text", "text": value}},
        {"type": "section", "text": {"type": "plain_text", "text": value},
         "fields": [{"type": "plain_text", "text": value}]},
        {"type": "rich_text", "elements": [
            {"type": "rich_text_section", "elements": [
                {"type": "text", "text": value, "style": {"bold": True}},
                {"type": "date", "timestamp": 0, "format": "{date}", "fallback": value},
                {"type": "user", "user_id": value}, {"type": "emoji", "name": value},
                {"type": "link", "url": "javascript:alert(3)", "text": value}]},
            {"type": "rich_text_preformatted", "elements": [{"type": "text", "text": value}]}]},
        {"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": value}, "value": "1"},
            {"type": "static_select", "placeholder": {"type": "plain_text", "text": value},
             "options": [{"text": {"type": "plain_text", "text": value}, "value": "1"}]}]},
        {"type": "context", "elements": [{"type": "plain_text", "text": value}]},
        {"type": "image", "image_url": "https://example.invalid/x.png", "alt_text": value}],
        "text": value} for value in HOSTILE]
    page = tmp_path / "hostile.html"
    page.write_text(render_page(messages + slots, channel="<b>C0</b>", title=HOSTILE[1],
                                home={"blocks": slots[0]["blocks"]}, home_user=HOSTILE[0]),
                    encoding="utf-8")
    dom = dom_of(page)
    names = {tag for tag, _ in dom.tags}
    assert not names & {"img", "script", "iframe", "object", "embed", "svg", "math"}, names
    assert not any(v.startswith("javascript:") for _, attrs in dom.tags for v in attrs.values()
                   if v)
    for name in HOSTILE:
        assert f"SMTP submit denied: {name}" in dom.text, name   # the pipeline's alert header
        assert dom.text.count(name) >= 10, name                  # every slot above
    assert "<b>c0</b>" in dom.text and "<!channel>" in dom.text


if __name__ == "__main__":  # python -m tests.test_preview docs/img/alert.png
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img/alert.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    print(make_readme_image(target), target.stat().st_size, "bytes")
