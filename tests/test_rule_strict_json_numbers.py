"""Rule: strict JSON refuses numbers that Python would turn into something else.

``json.loads`` reads ``1e400`` as ``inf`` (a quota, expiry or offset of
infinity passes every ``<`` comparison) and raises a bare ``ValueError`` for
an integer longer than ``sys.get_int_max_str_digits()``. Everything modelseal
parses from files or the network goes through ``strict_loads``, so both must
be a :class:`StrictJSONError` there, which callers turn into their typed
errors.
"""

from __future__ import annotations

import sys

import pytest

from modelseal._json import StrictJSONError, strict_loads


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1E999", "123456789e308"])
def test_a_float_that_overflows_to_infinity_is_refused(number: str) -> None:
    with pytest.raises(StrictJSONError, match="out of range"):
        strict_loads(f'{{"exp": {number}}}')


def test_an_integer_beyond_the_digit_limit_is_a_strict_json_error() -> None:
    digits = sys.get_int_max_str_digits() + 1
    with pytest.raises(StrictJSONError):
        strict_loads('{"quota": ' + "9" * digits + "}")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1.7976931348623157e308", 1.7976931348623157e308),  # the largest finite double
        ("-0.0", -0.0),
        ("5e-324", 5e-324),
        ("1e-400", 0.0),  # underflow is finite: JSON says nothing about precision
        ("12345678901234567890", 12345678901234567890),
    ],
)
def test_finite_numbers_still_parse(text: str, value: float) -> None:
    assert strict_loads(f'{{"n": {text}}}') == {"n": value}
