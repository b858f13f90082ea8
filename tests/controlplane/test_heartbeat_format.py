"""The heartbeat request parser: strict, and never anything but a LicenseFormatError."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelseal.license.errors import LicenseFormatError
from modelseal.license.heartbeat import HeartbeatRequest, new_nonce

GOOD = HeartbeatRequest(
    license_id="lic_1", device_id="d", nonce=new_nonce(), time=1, calls_used=2, audit_head=(3, "h")
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def test_round_trip() -> None:
    assert HeartbeatRequest.from_body(GOOD.to_body()) == GOOD


@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    with contextlib.suppress(LicenseFormatError):
        HeartbeatRequest.from_body(data)


@given(st.sampled_from(sorted(GOOD.to_json())), json_values)
def test_any_member_replaced_by_any_value(member: str, value: object) -> None:
    obj = GOOD.to_json()
    obj[member] = value
    try:
        parsed = HeartbeatRequest.from_body(json.dumps(obj).encode())
    except LicenseFormatError:
        return
    assert parsed.to_json()[member] == value or member == "audit_head"


@pytest.mark.parametrize("extra", [{"x": 1}, {"v": True}])
def test_unknown_members_and_bool_versions_are_refused(extra: dict[str, object]) -> None:
    obj = {**GOOD.to_json(), **extra}
    with pytest.raises(LicenseFormatError):
        HeartbeatRequest.from_body(json.dumps(obj).encode())
