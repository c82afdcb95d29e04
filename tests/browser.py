"""Headless Chromium for the HTML report tests: the DOM after scripts ran, a screenshot, and a small PNG reader.

Chromium is started per call with a throw-away profile and every background
service off; `CHROMIUM` is None where no browser is installed (the tests skip).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM = next(
    (p for p in (os.environ.get("LMC_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"), shutil.which("google-chrome")) if p),
    None,
)
SKIP_REASON = "chromium is not installed (apt-get install chromium, or set LMC_CHROMIUM); the page was not rendered"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--disable-extensions",
    "--mute-audio",
]


def _run(args: list[str], timeout: float = 90) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="lmc-chromium-") as profile:
        return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, timeout=timeout, check=False)


def without_scripts(path: Path, out: Path) -> Path:
    """A copy of the page with its scripts removed: what a browser with JavaScript off shows.

    (Headless Chromium's own switches for that either stop --dump-dom/--screenshot from working
    or still run page scripts, so the page is stripped instead.)"""
    import re

    text = re.sub(r"<script>.*?</script>", "", Path(path).read_text(encoding="utf-8"), flags=re.S)
    out.write_text(text, encoding="utf-8")
    return out


def dump_dom(path: Path, fragment: str = "") -> str:
    """The document as Chromium holds it after the page's scripts ran (`#fragment` appended to the URL)."""
    url = Path(path).resolve().as_uri() + (f"#{fragment}" if fragment else "")
    proc = _run(["--dump-dom", url])
    assert proc.returncode == 0 and proc.stdout, proc.stderr.decode(errors="replace")[-2000:]
    return proc.stdout.decode("utf-8")


def screenshot(path: Path, out: Path, *, width: int = 1280, height: int = 2000) -> Path:
    args = [f"--screenshot={out}", f"--window-size={width},{height}"]
    proc = _run([*args, Path(path).resolve().as_uri()])
    assert proc.returncode == 0 and out.is_file(), proc.stderr.decode(errors="replace")[-2000:]
    return out


# ---------------------------------------------------------------- PNG


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit RGB or RGBA PNG, as Chromium writes them."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def ink(path: Path, *, step: int = 4) -> float:
    """Share of (sampled) pixels that are not near-white: a blank page is ~0, a readable report well above."""
    width, height, rows = png_pixels(path)
    bpp = len(rows[0]) // width
    dark = total = 0
    for y in range(0, height, step):
        row = rows[y]
        for x in range(0, width, step):
            r, g, b = row[x * bpp], row[x * bpp + 1], row[x * bpp + 2]
            total += 1
            dark += (r + g + b) < 600
    return dark / total


# ---------------------------------------------------------------- a small DOM


class Node:
    def __init__(self, tag: str, attrs: dict, parent: "Node | None"):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def find_all(self, tag: str | None = None, **attrs: str) -> list["Node"]:
        out = []
        for c in self.children:
            if isinstance(c, Node):
                if (tag is None or c.tag == tag) and all(
                    (v is True and k.replace("_", "-").rstrip("-") in c.attrs) or c.attrs.get(k.replace("_", "-").rstrip("-")) == v
                    for k, v in attrs.items()
                ):
                    out.append(c)
                out += c.find_all(tag, **attrs)
        return out

    def find(self, tag: str | None = None, **attrs: str) -> "Node":
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag}> with {attrs}"
        return found[0]


_VOID = {"br", "hr", "img", "input", "meta", "link", "wbr", "source", "col", "area", "base", "embed", "param", "track"}


class _Builder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: (v if v is not None else "") for k, v in attrs}, self.cur)
        self.cur.children.append(node)
        if tag not in _VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, {k: (v or "") for k, v in attrs}, self.cur))

    def handle_endtag(self, tag):
        node = self.cur
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.cur = node.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def parse(html: str) -> Node:
    b = _Builder()
    b.feed(html)
    b.close()
    return b.root
