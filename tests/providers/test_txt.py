"""TXT presentation form as Route53 (octal escapes) and Cloud DNS (decimal) use it."""

from __future__ import annotations

import pytest

from providers.txt import parse_txt, quote_txt


@pytest.mark.parametrize(
    ("value", "decimal", "octal"),
    [
        ("plain", '"plain"', '"plain"'),
        ('say "hi"', '"say \\"hi\\""', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"', '"back\\\\slash"'),
        ("tab\there", '"tab\\009here"', '"tab\\011here"'),
        ("é", '"\\195\\169"', '"\\303\\251"'),
        ("", '""', '""'),
    ],
)
def test_values_quote_and_parse_back(value: str, decimal: str, octal: str):
    assert quote_txt(value) == decimal
    assert quote_txt(value, base=8) == octal
    assert parse_txt(decimal) == value
    assert parse_txt(octal, base=8) == value


def test_long_values_become_several_strings():
    quoted = quote_txt("x" * 600)
    assert quoted == " ".join(['"' + "x" * 255 + '"'] * 2 + ['"' + "x" * 90 + '"'])
    assert parse_txt(quoted) == "x" * 600


def test_unquoted_words_and_several_strings_are_joined():
    assert parse_txt('"two" "strings"') == "twostrings"
    assert parse_txt("bare words") == "barewords"
    assert parse_txt('  "a\\"b"  c ') == 'a"bc'


def test_a_backslash_before_a_non_digit_escapes_that_character():
    assert parse_txt('"a\\;b"') == "a;b"
    assert parse_txt('"\\8"', base=8) == "8"
