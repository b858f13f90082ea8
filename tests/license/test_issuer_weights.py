"""Issue #8 item 4: the issuer weighs components from its own table, never the request's labels.

The attack: a customer edits ``request.json`` so that the hostname reads
"strong, weight 100". Those labels are covered by nothing; used as sent they
passed ``--strict-binding`` and the license opened on any machine that shared
only the hostname.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from modelseal.crypto import ContentKey, PrivateKey
from modelseal.device import COMPONENT_KINDS, ActivationRequest, KindInfo, make_request
from modelseal.license import (
    KeyDeliveryError,
    TrustStore,
    WrongDeviceError,
    assess_components,
    check_device,
    issue_license,
    open_content_key,
    verify_license,
)

from .conftest import NOW, make_device


def _relabel(request: ActivationRequest, labels: dict[str, tuple[str, int]]) -> ActivationRequest:
    """What the attacker does to the request file: edit strength and weight in the JSON."""
    obj = json.loads(request.to_bytes())
    for comp in obj["components"]:
        if comp["kind"] in labels:
            comp["strength"], comp["weight"] = labels[comp["kind"]]
    return ActivationRequest.from_bytes(json.dumps(obj).encode())


def _issue(key: PrivateKey, request: ActivationRequest, cek: ContentKey, **kw):  # type: ignore[no-untyped-def]
    return issue_license(
        signing_key=key,
        issuer="acme-models",
        customer="ACME",
        audience=["acme/ocr"],
        request=request,
        content_keys=[(cek, "acme/ocr")],
        now=NOW,
        valid_for=timedelta(days=30),
        **kw,
    )


def test_relabelled_hostname_does_not_carry_the_binding(vendor_keys, device, cek) -> None:  # type: ignore[no-untyped-def]
    key = vendor_keys["ed25519"]
    forged = _relabel(make_request(device, label="box"), {"os.hostname": ("strong", 100)})
    assert any(c.weight == 100 for c in forged.components)  # the request file says so

    issued = _issue(key, forged, cek, strict_binding=True)  # passes: the real binding is strong
    binding = issued.claims.device
    assert binding is not None
    host = [c for c in binding.components if c.kind == "os.hostname"]
    assert [(c.strength, c.weight) for c in host] == [("weak", 1)]
    assert binding.threshold == 5  # 3 + 2 + 2 + 1 + 1 = 9 from the table, majority 5
    assert sum(c.weight for c in binding.components) == 9
    assert len(issued.claims.keys.shares) == 9  # type: ignore[union-attr]

    lic = verify_license(issued.token, TrustStore([key.public_key()]), now=NOW)
    assert open_content_key(lic, device, cek.key_id) == cek
    # another machine sharing only the hostname: refused by the check and by the key math
    elsewhere = make_device(
        {
            k: "other-" + k
            for k in ("dmi.product_uuid", "disk.root_serial", "net.mac", "os.machine_id")
        }
    )
    with pytest.raises(WrongDeviceError):
        check_device(lic, elsewhere)
    with pytest.raises(KeyDeliveryError):
        open_content_key(lic, elsewhere, cek.key_id)


def test_strict_binding_judges_the_issuers_weights(vendor_keys, cek) -> None:  # type: ignore[no-untyped-def]
    """A device with only weak components, relabelled strong, is still refused under strict."""
    from modelseal.license import WeakBindingError

    weak_only = make_device(
        base={
            "os.machine_id": ("0f1e2d3c4b5a69788796a5b4c3d2e1f0", "weak", 1),
            "os.hostname": ("gpu-node-7", "weak", 1),
            "cpu.id": ("ab" * 32, "weak", 1),
        }
    )
    forged = _relabel(
        make_request(weak_only, label="box"),
        {k: ("strong", 50) for k in ("os.machine_id", "os.hostname", "cpu.id")},
    )
    with pytest.raises(WeakBindingError):
        _issue(vendor_keys["ed25519"], forged, cek, strict_binding=True)
    issued = _issue(vendor_keys["ed25519"], forged, cek)
    assert any("no strong components" in w for w in issued.warnings)


def test_unknown_kinds_get_the_weakest_label(vendor_keys, cek) -> None:  # type: ignore[no-untyped-def]
    device = make_device(
        base={
            "dmi.product_uuid": ("4c4c4544-0042-3510-8052-b3c04f4e3232", "strong", 3),
            "vendor.dongle": ("dongle-1234", "strong", 100),
        }
    )
    request = make_request(device, label="box")
    assessed = {c.kind: (c.strength, c.weight) for c in assess_components(request)}
    assert assessed == {"dmi.product_uuid": ("strong", 3), "vendor.dongle": ("weak", 1)}
    # a vendor that does trust its own kind says so in its table, not in the request
    table = {**COMPONENT_KINDS, "vendor.dongle": KindInfo("strong", 4, "our USB dongle")}
    issued = _issue(vendor_keys["ed25519"], request, cek, component_kinds=table)
    assert issued.claims.device is not None
    weights = {c.kind: c.weight for c in issued.claims.device.components}
    assert weights == {"dmi.product_uuid": 3, "vendor.dongle": 4}


def test_cli_issue_uses_the_table_and_says_the_request_was_relabelled(tmp_path: Path) -> None:
    """The attack as it was run: edit request.json, then ``license issue --strict-binding``."""

    def ms(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "modelseal.cli", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=tmp_path,
        )

    assert ms("keys", "generate", "--out", "keys").returncode == 0
    assert ms("device", "request", "--out", "request.json", "--label", "box").returncode == 0
    obj = json.loads((tmp_path / "request.json").read_text())
    kinds = [c["kind"] for c in obj["components"]]
    if "os.hostname" not in kinds:
        pytest.fail(f"this machine reports no hostname component: {kinds}")
    for comp in obj["components"]:
        if comp["kind"] == "os.hostname":
            comp["strength"], comp["weight"] = "strong", 100
    (tmp_path / "request.json").write_text(json.dumps(obj))
    r = ms(
        *("license", "issue", "--signing-key", "keys/vendor.pem", "--request", "request.json"),
        *("--customer", "c", "--product", "acme/ocr", "--out", "l.jwt", "--json"),
    )
    assert r.returncode == 0, r.stderr
    issued = json.loads(r.stdout)
    device = issued["claims"]["device"]
    host = [c for c in device["components"] if c["kind"] == "os.hostname"]
    assert [(c["strength"], c["weight"]) for c in host] == [("weak", 1)]
    assert device["threshold"] > 1
    assert any("os.hostname (strong, weight 100)" in w for w in issued["warnings"])
