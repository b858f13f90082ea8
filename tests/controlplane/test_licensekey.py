"""License keys: format, checksum, forgiving reading, and the activation salt."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelseal.license.licensekey import (
    ALPHABET,
    LicenseKeyFormatError,
    activation_salt,
    generate_license_key,
    normalize_license_key,
)

keys = st.builds(lambda _: generate_license_key(), st.integers())


@given(keys)
def test_a_generated_key_reads_back_in_any_spelling(key: str) -> None:
    assert normalize_license_key(key) == key
    assert normalize_license_key(key.lower().replace("-", " ")) == key
    assert normalize_license_key(key.replace("1", "I").replace("0", "o")) == key


@given(keys, st.integers(0, 24), st.sampled_from(ALPHABET))
def test_every_single_typo_is_caught(key: str, position: int, char: str) -> None:
    raw = key.replace("-", "")
    if raw[position] == char:
        return
    typo = raw[:position] + char + raw[position + 1 :]
    with pytest.raises(LicenseKeyFormatError):
        normalize_license_key(typo)


@given(st.text(max_size=80))
def test_garbage_is_a_format_error_never_a_crash(text: str) -> None:
    with contextlib.suppress(LicenseKeyFormatError):
        normalize_license_key(text)


def test_keys_are_unique_and_salts_differ() -> None:
    made = {generate_license_key() for _ in range(2000)}
    assert len(made) == 2000
    a, b = sorted(made)[:2]
    assert activation_salt(a) != activation_salt(b)
    assert activation_salt(a) == activation_salt(a.lower())
    assert len(activation_salt(a)) == 32
