"""The magics' pure parsing: words of a magic line and their key=value literals."""

from __future__ import annotations

import pytest

from kernel_ext.functions.headers import HeaderError, parse_key_values, split_words, unquote


def test_words_keep_quotes_and_brackets_together():
    line = """q x='1' t='a b' y=[1, 2] d={"k": (1, 2)} s="it's" esc='a\\'b' bare"""
    assert split_words(line) == [
        "q",
        "x='1'",
        "t='a b'",
        "y=[1, 2]",
        'd={"k": (1, 2)}',
        's="it\'s"',
        "esc='a\\'b'",
        "bare",
    ]
    assert split_words("  ") == []


def test_values_are_python_literals_else_strings():
    words = ["x='1'", "n=3", "f=1.5", "b=True", "none=None", "t='a b'", "tag=red", "y=[1, 2]"]
    assert parse_key_values(words) == {
        "x": "1",
        "n": 3,
        "f": 1.5,
        "b": True,
        "none": None,
        "t": "a b",
        "tag": "red",
        "y": [1, 2],
    }
    with pytest.raises(HeaderError, match="Expected key=value"):
        parse_key_values(["no-equals"])


def test_an_unclosed_quote_is_explained():
    with pytest.raises(HeaderError, match="quote is not closed"):
        split_words("q note=don't")


def test_unquote_only_strips_one_quoted_string():
    assert unquote("'/tmp/a b'") == "/tmp/a b"
    assert unquote("plain") == "plain"
    assert unquote("'1'") == "1" and unquote("x='1'") == "x='1'"


def test_names_a_pushed_cell_would_miss():
    from kernel_ext.functions.cells import names_left_behind
    from kernel_ext.functions.headers import parse_header

    header = parse_header("m:q(n: v.number())")
    body = (
        "import math\n"
        "def local(x):\n    return x\n"
        "total = helper(n) + local(n) + math.pi + len(db.query('t').collect())\n"
        "return [fmt(i) for i in range(n)] + [k for k in other] + [v.string(), total]\n"
    )
    notebook = {"helper": 1, "fmt": 2, "math": 3, "other": 4, "total": 5, "v": 6, "len": 7}
    assert names_left_behind(header, body, notebook) == ["fmt", "helper", "other"]
    assert names_left_behind(header, "return (", notebook) == []  # compiling reports that
