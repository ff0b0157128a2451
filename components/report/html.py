"""Assembly of the report page: one self-contained HTML file (inline CSS, images as base64 data URIs,
no script, no external resource). Every string that comes from data goes through :func:`esc`;
:class:`Raw` marks markup built here.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import json
import math

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#212121;background:#fafafa;font-size:14px}
header{background:#263238;color:#eceff1;padding:16px 28px}
header h1{margin:0 0 6px 0;font-size:22px}
header dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:0;font-size:13px}
header dt{color:#90a4ae}header dd{margin:0;font-family:monospace}
nav{padding:8px 28px;background:#eceff1;font-size:13px}nav a{margin-right:12px;color:#1565c0}
main{padding:4px 28px 28px 28px;max-width:1280px}
section{background:white;border:1px solid #e0e0e0;border-radius:6px;padding:6px 18px 14px 18px;margin:16px 0}
h2{font-size:18px;margin:12px 0 8px 0}h3{font-size:15px;margin:14px 0 6px 0}
table{border-collapse:collapse;margin:6px 0 10px 0;font-size:12.5px}
th,td{border:1px solid #e0e0e0;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}td.nw{white-space:nowrap}
figure{margin:8px 0 14px 0}figure img{max-width:100%;height:auto;border:1px solid #eeeeee}
figcaption{font-size:12.5px;color:#546e7a;margin-top:4px;max-width:960px}
p.na{color:#8d6e63;font-style:italic;margin:6px 0}
p.note{color:#546e7a;font-size:12.5px;margin:4px 0}
pre{background:#f5f5f5;padding:8px;font-size:11.5px;overflow-x:auto;max-height:260px;white-space:pre-wrap}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:11.5px;font-weight:bold;color:white}
.b-succeeded,.b-ok,.b-published{background:#2e7d32}.b-skipped{background:#1565c0}.b-running{background:#f9a825}
.b-incomplete{background:#ef6c00}.b-failed,.b-bad{background:#c62828}.b-not-run{background:#9e9e9e}
.b-kept{background:#6d4c41}.b-not-judged{background:#78909c}
table.gallery td{text-align:center;width:112px;padding:4px}
table.gallery img{width:96px;height:96px;image-rendering:pixelated;border:3px solid #cfd8dc;display:block;margin:0 auto}
table.gallery td.query img{border-color:#263238}table.gallery td.same img{border-color:#43a047}
.cap{font-size:10.5px;color:#455a64;word-break:break-all}.noimg{width:96px;height:96px;line-height:96px;
background:#eeeeee;color:#9e9e9e;font-size:11px;margin:0 auto}
"""


@dataclasses.dataclass(frozen=True)
class Raw:
    """Markup built by this module (not escaped again)."""

    html: str

    def __str__(self) -> str:
        return self.html


@dataclasses.dataclass(frozen=True)
class Num:
    """A number already formatted by the caller (right-aligned cell)."""

    text: str


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def cell(value) -> str:
    """A table cell: markup as is, numbers right-aligned and formatted, anything else escaped."""
    if isinstance(value, Raw):
        return f"<td>{value}</td>"
    if isinstance(value, Num):
        return f'<td class="num">{esc(value.text)}</td>'
    if isinstance(value, bool) or value is None:
        return f"<td>{esc('-' if value is None else value)}</td>"
    if isinstance(value, (int, float)):
        return f'<td class="num">{esc(fmt(value))}</td>'
    text = str(value)
    return f'<td class="nw">{esc(text)}</td>' if len(text) <= 24 else f"<td>{esc(text)}</td>"


def fmt(value, digits: int = 4) -> str:
    """Numbers for humans: thousands separators for ints, ``digits`` significant decimals for floats."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value.is_integer() and abs(value) >= 1:
            return f"{int(value):,}"
        if abs(value) >= 100:
            return f"{value:,.1f}"
        if value != 0 and abs(value) < 10 ** -digits:
            return f"{value:.{digits - 1}e}"
        return f"{value:,.{digits}f}"
    return str(value)


def table(headers: list[str], rows: list[list], css_class: str = "") -> Raw:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    klass = f' class="{esc(css_class)}"' if css_class else ""
    return Raw(f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def badge(text: str, kind: str | None = None) -> Raw:
    kind = (kind or text).lower().replace(" ", "-")
    return Raw(f'<span class="badge b-{esc(kind)}">{esc(text)}</span>')


def data_uri(data: bytes, subtype: str = "png") -> str:
    return f"data:image/{subtype};base64,{base64.b64encode(data).decode('ascii')}"


def img(data: bytes, alt: str, subtype: str = "png") -> Raw:
    return Raw(f'<img src="{data_uri(data, subtype)}" alt="{esc(alt)}">')


def figure(png: bytes, alt: str, caption: str) -> Raw:
    """A plot with its caption (what is plotted, on which data)."""
    return Raw(f'<figure class="plot">{img(png, alt)}<figcaption>{esc(caption)}</figcaption></figure>')


def unavailable(reason: str) -> Raw:
    return Raw(f'<p class="na">not available: {esc(reason)}</p>')


def note(text: str) -> Raw:
    return Raw(f'<p class="note">{esc(text)}</p>')


def heading(text: str) -> Raw:
    return Raw(f"<h3>{esc(text)}</h3>")


def pre(text: str) -> Raw:
    return Raw(f"<pre>{esc(text)}</pre>")


def json_block(value) -> Raw:
    return pre(json.dumps(value, indent=2, sort_keys=True, default=str))


@dataclasses.dataclass
class Section:
    """One section of the page; ``status`` is ``rendered``, ``partial`` (some parts not available) or
    ``unavailable`` (nothing to show), ``reasons`` the not-available lines."""

    id: str
    title: str
    parts: list[Raw] = dataclasses.field(default_factory=list)
    reasons: list[str] = dataclasses.field(default_factory=list)
    shown: int = 0  # parts with content

    def add(self, part: Raw) -> None:
        self.parts.append(part)
        self.shown += 1

    def text(self, part: Raw) -> None:
        """Text that accompanies content (a heading, a note): does not make the section rendered."""
        self.parts.append(part)

    def missing(self, reason: str) -> None:
        self.parts.append(unavailable(reason))
        self.reasons.append(reason)

    @property
    def status(self) -> str:
        if not self.shown:
            return "unavailable"
        return "partial" if self.reasons else "rendered"

    def render(self) -> str:
        return f'<section id="{esc(self.id)}"><h2>{esc(self.title)}</h2>' + "".join(map(str, self.parts)) + "</section>"


def page(title: str, facts: list[tuple[str, str]], sections: list[Section]) -> str:
    """The whole document: header with ``facts`` (label, value), a table of contents, the sections."""
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    nav = "".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections)
    body = "".join(s.render() for s in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body><header><h1>{esc(title)}</h1><dl>{dl}</dl></header>"
            f"<nav>{nav}</nav><main>{body}</main></body></html>\n")
