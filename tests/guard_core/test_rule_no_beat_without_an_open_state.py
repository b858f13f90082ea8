"""A Guard whose state store never opened sends no heartbeat and applies no list.

Rule: heartbeats and revocation lists act on the license's state; while the
Guard has no open state it refuses both with its refusal's reason (typed,
``NotLicensedError``) and reports nothing to the server. A license can be
remembered without its state: ``unlock`` verifies the token (signature,
dates, device) before it opens the store, and the store's key may still not
open here (a license whose key shares do not rebuild its KEK on this device,
reason ``key_unavailable``).

Found by mutation testing (tests/MUTATION.md, guard/core.py ``heartbeat_now``
#7 and ``import_revocations`` #2: "license *and* store missing" for "license
*or* store missing" survived; on such a Guard it crashed with an
``AttributeError`` on the missing store).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from modelseal.crypto import ContentKey, PrivateKey, generate_private_key
from modelseal.guard import NotLicensedError
from modelseal.license import read_unverified
from tests.controlplane.test_guard_heartbeat import Clock, Server, _issue
from tests.guard_core.test_rule_renewals_and_revocation_lists import _crl, _guard, _resign
from tests.license.conftest import NOW


@pytest.fixture(scope="module")
def vendor() -> PrivateKey:
    return generate_private_key("ed25519")


def _shares_that_do_not_open(vendor: PrivateKey) -> str:
    """A genuine license (vendor-signed, this device) whose key shares are damaged."""
    _, claims = read_unverified(_issue(vendor, ContentKey.generate()))
    claims = copy.deepcopy(dict(claims))
    for share in claims["keys"]["shares"]:
        ct = share["ct"]
        share["ct"] = ct[:10] + ("A" if ct[10] != "A" else "B") + ct[11:]
    return _resign(vendor, claims)


def test_a_guard_without_an_open_state_refuses_beats_and_lists(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    clock = Clock(NOW)
    server = Server(vendor, clock)
    guard = _guard(
        _shares_that_do_not_open(vendor), [vendor], tmp_path, clock, server, verify=False
    )
    with pytest.raises(NotLicensedError) as info:
        guard.unlock("AAAAA-AAAAA-AAAAA-AAAAA-AAAAA")
    assert info.value.reason == "key_unavailable"
    assert guard.license is not None  # remembered, verified up to the device check
    with pytest.raises(NotLicensedError) as beat:
        guard.heartbeat_now()
    assert beat.value.reason == "key_unavailable"
    assert server.reports == []
    _, crl = _crl(vendor, licenses=frozenset({guard.license.license_id}))
    with pytest.raises(NotLicensedError) as listed:
        guard.import_revocations(crl)
    assert listed.value.reason == "key_unavailable"
