"""viz/escape.py: text from a trace made safe for each output (synthetic
strings: what a crafted file can hold)."""

from __future__ import annotations

import json

from viz.escape import (
    ELLIPSIS,
    MAX_DEPTH,
    dot_string,
    html_text,
    json_safe,
    mermaid_label,
    plantuml_label,
    printable,
    printable_items,
    printable_list,
)

HOSTILE = "a\x1b[31mred\x07\x00\ud800\u202e\x85\u2028z"


def test_printable_shows_control_characters_and_surrogates_as_escapes() -> None:
    out = printable(HOSTILE)
    assert out == "a\\x1b[31mred\\x07\\x00\\ud800\\u202e\\x85\\u2028z"
    out.encode("utf-8")  # a lone surrogate would raise here
    assert printable("tab\there\nline") == "tab\\x09here\\x0aline"
    assert printable("caf\u00e9 \U0001f600") == "caf\u00e9 \U0001f600"  # printable text stays


def test_printable_is_idempotent_and_cuts_with_an_ellipsis() -> None:
    assert printable(printable(HOSTILE)) == printable(HOSTILE)
    cut = printable("x" * 10_000_000, 40)
    assert len(cut) == 40 and cut.endswith(ELLIPSIS)
    assert len(printable("\x1b" * 100, 10)) == 10  # escapes count towards the limit
    assert printable("x" * 500, None) == "x" * 500


def test_printable_takes_any_value() -> None:
    assert printable(42) == "42" and printable(None) == "None"
    assert printable(["a\x1b"]) == "['a\\x1b']"  # the list's repr
    assert printable(list(range(10_000))) == "[list of 10000 items]"
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    assert printable(deep) == "[list]"  # str() of it recurses too deep
    assert printable_list("one") == ["one"] and printable_list(None) == []
    assert printable_list(["a", 1]) == ["a", "1"]
    assert printable_items({"k\x1b": 1}) == [("k\\x1b", "1")]
    assert printable_items("not a dict") == []


def test_html_and_dot_escapes() -> None:
    assert html_text('<script>"x"&\x1b') == "&lt;script&gt;&quot;x&quot;&amp;\\x1b"
    assert html_text(5) == "5"
    assert dot_string('a\\b"\x00') == 'a\\\\b"\\\\x00'


def test_mermaid_and_plantuml_labels() -> None:
    assert mermaid_label("a;b#c\nd<e>\x1b") == "a#59;b#35;c d#60;e#62;\\x1b"
    assert plantuml_label("__x ~ <b>\\n\x07") == "~_~_x ~~ ~<b>\\\\n\\\\x07"


def test_json_safe_keeps_what_json_can_hold() -> None:
    value = {"comm": "a\ud800b", "n": float("nan"), "i": float("inf"), 3: ["\udfff"], "ok": 1}
    out = json_safe(value)
    assert out == {"comm": "a\ufffdb", "n": "nan", "i": "inf", "3": ["\ufffd"], "ok": 1}
    json.dumps(out, allow_nan=False, ensure_ascii=False).encode("utf-8")
    deep: list[object] = []
    for _ in range(5000):
        deep = [deep]
    nested = json.dumps(json_safe(deep), indent=1)  # no RecursionError
    assert f"nested deeper than {MAX_DEPTH}" in nested
