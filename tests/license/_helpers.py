"""A signed license over the conftest device, with every default spelled out,
so each rule test changes exactly the one thing it checks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from modelseal.crypto import ContentKey, PrivateKey
from modelseal.device import DeviceFingerprint, make_request
from modelseal.license import IssuedLicense, issue_license
from tests.license.conftest import NOW


def issue(key: PrivateKey, device: DeviceFingerprint, cek: ContentKey, **kw: Any) -> IssuedLicense:
    args: dict[str, Any] = dict(
        signing_key=key,
        issuer="acme-models",
        customer="ACME Hospital",
        audience=["acme/ocr"],
        request=make_request(device, label="rule test", salt=b"r" * 32),
        content_keys=[(cek, "acme/ocr")],
        now=NOW,
        valid_for=timedelta(days=30),
        features=["ocr"],
        threshold=6,
    )
    args.update(kw)
    return issue_license(**args)
