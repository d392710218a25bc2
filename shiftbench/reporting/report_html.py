"""HTML building blocks for the report: escaping, numbers with confidence intervals, tables,
inlined images, and the small Markdown-table converter used for the data cards."""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

CSS = """
body{font-family:"DejaVu Sans",Arial,Helvetica,sans-serif;margin:1.5em auto;max-width:1150px;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ccc;padding-bottom:.2em;margin-top:2em}h3{margin-top:1.4em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;height:auto;border:1px solid #eee;display:block;margin:.4em 0}
.meta td:first-child{font-weight:bold;background:#f7f7f7}
.note{color:#555;font-size:.9em}.warn{color:#8a4b00}
details{margin:.8em 0;padding:.4em .8em;border:1px solid #ddd;background:#fcfcfc}summary{cursor:pointer;font-weight:bold}
code{background:#f3f3f3;padding:0 .2em}
nav ul{columns:2}
"""

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def file_part(name: str) -> str:
    """A pair or target name as a file-name component."""
    return _SAFE_NAME.sub("_", str(name)) or "_"


def anchor(name: str) -> str:
    return "pair-" + file_part(name)


def finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def fmt_num(x: Any, digits: int = 4, scale: float = 1.0) -> str:
    """Fixed decimals, "–" for a missing value, never "-0.0000"."""
    if not finite(x):
        return "–"
    text = f"{scale * float(x):.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def with_ci(mean: Any, low: Any, high: Any, digits: int = 4) -> str:
    if not finite(mean):
        return "–"
    if finite(low) and finite(high):
        return f"{fmt_num(mean, digits)} [{fmt_num(low, digits)}, {fmt_num(high, digits)}]"
    return fmt_num(mean, digits)


def pct_ci(mean: Any, low: Any, high: Any) -> str:
    if not finite(mean):
        return "–"
    if finite(low) and finite(high):
        return f"{fmt_num(mean, 1, 100)} % [{fmt_num(low, 1, 100)}, {fmt_num(high, 1, 100)}]"
    return f"{fmt_num(mean, 1, 100)} %"


def html_table(
    header: Sequence[str] | None, rows: Iterable[Sequence[str]], numeric: Sequence[bool] | None = None, cls: str = ""
) -> str:
    """An HTML table (no header row when ``header`` is None); cells are escaped here."""
    rows = [list(r) for r in rows]
    width = len(header) if header is not None else max((len(r) for r in rows), default=0)
    numeric = list(numeric or [False] * width)
    out = [f'<table class="{esc(cls)}">' if cls else "<table>"]
    if header is not None:
        out += ["<thead><tr>", *(f"<th>{esc(h)}</th>" for h in header), "</tr></thead>"]
    out.append("<tbody>")
    for row in rows:
        cells = "".join(
            f'<td class="num">{esc(c)}</td>' if numeric[i] else f"<td>{esc(c)}</td>" for i, c in enumerate(row)
        )
        out.append(f"<tr>{cells}</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def img_tag(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'


# --- Markdown data cards -------------------------------------------------------------------


_MD_INLINE = [
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # links become their text: the report links nowhere
]


def _md_inline(text: str) -> str:
    """One line of Markdown: escaped characters (``\\|``) stay literal, the rest is HTML-escaped
    before code spans, bold and links are converted."""
    text = text.replace("\0", "")
    text = re.sub(r"\\([\\`*_\[\]<>|#+\-!{}()])", lambda m: f"\0{ord(m.group(1))}\0", text)
    out = html.escape(text, quote=False)
    for pattern, repl in _MD_INLINE:
        out = pattern.sub(repl, out)
    return re.sub("\0([0-9]+)\0", lambda m: f"&#{m.group(1)};", out)


_MD_RULE = re.compile(r"\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?")  # |---|:--:| under a table header


def _md_cells(line: str) -> list[str]:
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [c.strip() for c in re.split(r"(?<!\\)\|", body)]


def markdown_to_html(text: str) -> str:
    """A tiny Markdown subset (what the generated cards use): ``#`` headings, pipe tables,
    ``-`` lists, paragraphs, inline code and bold. Everything is HTML-escaped; links keep only
    their text and HTML comments are dropped."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    lines = text.splitlines()
    out: list[str] = []
    para: list[str] = []
    i = 0

    def flush() -> None:
        if para:
            out.append("<p>" + " ".join(_md_inline(p) for p in para) + "</p>")
            para.clear()

    while i < len(lines):
        line = lines[i].rstrip()
        stripped = line.strip()
        if not stripped:
            flush()
            i += 1
        elif m := re.match(r"(#{1,6})\s+(.*)", stripped):
            flush()
            level = min(len(m.group(1)) + 3, 6)  # card headings sit below the report's own
            out.append(f"<h{level}>{_md_inline(m.group(2))}</h{level}>")
            i += 1
        elif stripped.startswith("|") and i + 1 < len(lines) and _MD_RULE.fullmatch(lines[i + 1].strip()):
            flush()
            header = _md_cells(stripped)
            i += 2
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_md_cells(lines[i]))
                i += 1
            table = ["<table><thead><tr>", *(f"<th>{_md_inline(h)}</th>" for h in header), "</tr></thead><tbody>"]
            for row in rows:
                table.append("<tr>" + "".join(f"<td>{_md_inline(c)}</td>" for c in row) + "</tr>")
            table.append("</tbody></table>")
            out.append("".join(table))
        elif re.match(r"[-*]\s+", stripped):
            flush()
            items = []
            while i < len(lines) and re.match(r"\s*[-*]\s+", lines[i]):
                items.append("<li>" + _md_inline(re.sub(r"^\s*[-*]\s+", "", lines[i]).strip()) + "</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        else:
            para.append(stripped)
            i += 1
    flush()
    return "\n".join(out)


# --- sections ------------------------------------------------------------------------------
