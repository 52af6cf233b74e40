"""Text from a trace made safe for the output it goes to: one module for
every renderer.

A trace is data from a file anyone can write: its strings (comm, probe
names, header fields, lost and trailer records) may hold terminal escape
sequences, lone surrogates (valid in JSON, not encodable as UTF-8), other
control characters, markup of the output format, or megabytes; a header
field may even be a number or a list. Every renderer passes such text
through one of these functions, which accept any value:

- `printable`: control characters (C0, DEL, C1, line and paragraph
  separators, bidirectional overrides, BOM) and lone surrogates become
  visible escapes (`\\x1b`, `\\u202e`, `\\ud800`); text longer than `limit`
  is cut with an ellipsis. The result is valid UTF-8 with no control
  character: safe on a terminal, and the base of every other escape here.
- `html_text`: printable, then HTML-escaped (HTML pages, graphviz HTML-like
  labels and SVG).
- `dot_string`: printable, for a graphviz quoted attribute (tooltip).
- `mermaid_label`, `plantuml_label`: printable, then the markup that each
  tool reads in a label escaped.
- `json_safe`: strings for a JSON document: control characters are JSON's
  to escape, but lone surrogates cannot be written as UTF-8: U+FFFD.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any

# The longest trace string any renderer shows (a kernel comm is 15 bytes,
# a hostname 64, a probe name well under 100): longer is cut with ELLIPSIS.
MAX_TEXT = 200
# The deepest nesting json_safe passes on (a header field is a flat value
# or a list or mapping of them).
MAX_DEPTH = 16
ELLIPSIS = "\u2026"

_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff"
    "\ufff9-\ufffb\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _visible(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: object, limit: int | None = MAX_TEXT) -> str:
    """`value` as one line of plain, printable text of at most `limit`
    characters (None: no limit)."""
    text = value if isinstance(value, str) else _as_text(value, limit)
    if limit is not None and len(text) > limit:
        text = text[:limit + 1]  # escaping only lengthens: no need to look further
    text = _UNSAFE.sub(_visible, text)
    if limit is not None and len(text) > limit:
        text = text[:max(limit - 1, 0)] + ELLIPSIS
    return text


def _as_text(value: object, limit: int | None) -> str:
    """str() of a value that should have been a string, without building
    the text of a huge list or dict only to cut it."""
    if isinstance(value, list | tuple | dict) and limit is not None and len(value) > limit:
        return f"[{type(value).__name__} of {len(value)} items]"
    try:
        return str(value)
    except (ValueError, RecursionError):  # a nested value too deep, an int too long
        return f"[{type(value).__name__}]"


def printable_list(value: object, limit: int | None = MAX_TEXT) -> list[str]:
    """Each item of what should be a list of strings, printable; anything
    else as a one-item list (an empty list for None)."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [printable(v, limit) for v in value[:MAX_TEXT]]
    return [printable(value, limit)]


def printable_items(value: object, limit: int | None = MAX_TEXT) -> list[tuple[str, str]]:
    """The (key, value) pairs of what should be a mapping, printable, in
    its order; nothing when it is not a mapping."""
    if not isinstance(value, dict):
        return []
    return [(printable(k, limit), printable(v, limit)) for k, v in list(value.items())[:MAX_TEXT]]


def html_text(value: object, limit: int | None = MAX_TEXT) -> str:
    """Printable, then escaped for HTML text and attribute values."""
    return html.escape(printable(value, limit), quote=True)


def dot_string(value: object, limit: int | None = MAX_TEXT) -> str:
    """Printable, for a graphviz quoted string: the python graphviz package
    adds the quotes and escapes `"`; a backslash is graphviz's own escape
    character (`\\N`, `\\l`), so it is doubled."""
    return printable(value, limit).replace("\\", "\\\\")


_MERMAID = {";": "#59;", "#": "#35;", "<": "#60;", ">": "#62;"}


def mermaid_label(value: object, limit: int | None = None) -> str:
    """A Mermaid label: kpath's own line breaks become spaces, anything
    unprintable a visible escape, and `;` (ends a statement), `#` (starts an
    entity), `<` and `>` (HTML to Mermaid) its entity codes, in one pass so
    that codes are not escaped again."""
    text = printable(_one_line(value), limit)
    return "".join(_MERMAID.get(ch, ch) for ch in text)


_PLANTUML_MARKUP = "_*/\"-"


def plantuml_label(value: object, limit: int | None = None) -> str:
    """A PlantUML label: `~` escapes the next character of creole markup,
    so doubled markup characters (`__`, `**`, `//`, `""`, `--`), `<` (an
    HTML-like tag) and `~` itself get one; a backslash is doubled (`\\n`
    would be a line break)."""
    text = printable(_one_line(value), limit)
    out: list[str] = []
    n = len(text)
    for i, ch in enumerate(text):
        if ch == "\\":
            out.append("\\\\")
        elif ch in "<~" or ch in _PLANTUML_MARKUP and ((i + 1 < n and text[i + 1] == ch)
                                         or (i > 0 and text[i - 1] == ch)):
            out.append("~" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _one_line(value: object) -> object:
    return value.replace("\r\n", " ").replace("\n", " ").replace("\r", " ") \
        if isinstance(value, str) else value


def json_safe(value: Any, depth: int = 0) -> Any:
    """A value for a JSON document, whatever the trace held: strings with
    their lone surrogates replaced (U+FFFD: not writable as UTF-8, refused
    by strict JSON parsers), NaN and infinities as text (not JSON numbers),
    nesting deeper than MAX_DEPTH as a note (json.dumps with indent recurses
    in Python), lists and dicts through."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value) if _SURROGATE.search(value) else value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list | tuple | dict) and depth >= MAX_DEPTH:
        return f"[{type(value).__name__} nested deeper than {MAX_DEPTH}]"
    if isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {json_safe(k) if isinstance(k, str) else printable(k, None):
                json_safe(v, depth + 1) for k, v in value.items()}
    return value
