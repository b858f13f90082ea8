"""Generate tests/vectors/unlock-v2.json (run once; the output is checked in).

Each vector lists the inputs, the exact HMAC input and secret, the exact
verifier input and the verifier, and the code, so another implementation
can be checked step by step against docs/guard-audit-unlock.md. Negative
vectors say which error a verifier must raise.

    PYTHONPATH=src .venv/bin/python tests/guard/gen_unlock_vectors.py
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from modelseal.guard.unlock import issue_unlock_code
from modelseal.license.unlockcodes import CODE_LABEL, VERIFIER_LABEL, make_verifiers

OUT = Path(__file__).parents[1] / "vectors" / "unlock-v2.json"


def _seed(i: int) -> bytes:
    return hashlib.sha256(b"modelseal unlock vector seed %d" % i).digest()


def _lp(value: str) -> bytes:
    raw = value.encode()
    return len(raw).to_bytes(2, "big") + raw


def main() -> None:
    cases = [
        ("basic", "lic-0001", "sha256:3f1c9a", 1),
        ("serial 0", "lic-0001", "sha256:3f1c9a", 0),
        ("max serial, non-ASCII license id", "Lizenz-Ä-7", "dev:8d9e2f0b4c1a", 4095),
        ("one-byte ids", "L", "D", 17),
    ]
    vectors: list[dict[str, Any]] = []
    for i, (name, lid, did, serial) in enumerate(cases):
        seed = _seed(i)
        ids = _lp(lid) + _lp(did) + serial.to_bytes(2, "big")
        code_input = CODE_LABEL + ids
        secret = hmac.new(seed, code_input, hashlib.sha256).digest()[:13]
        verifier_input = VERIFIER_LABEL + ids + secret
        verifier = make_verifiers(seed, license_id=lid, device_id=did, count=serial + 1)[serial]
        vectors.append(
            {
                "name": name,
                "unlock_seed": seed.hex(),
                "license_id": lid,
                "device_id": did,
                "serial": serial,
                "code_input": code_input.hex(),
                "secret": secret.hex(),
                "verifier_input": verifier_input.hex(),
                "verifier": verifier,
                "code": issue_unlock_code(seed, license_id=lid, device_id=did, serial=serial),
            }
        )

    base = vectors[0]
    code = base["code"]
    verifiers = list(
        make_verifiers(
            _seed(0), license_id=base["license_id"], device_id=base["device_id"], count=4
        )
    )
    # One substituted character (position 3) and one swap of unequal neighbours.
    sub = code[:2] + ("0" if code[2] != "0" else "1") + code[3:]
    compact = code.replace("-", "")
    j = next(k for k in range(len(compact) - 2) if compact[k] != compact[k + 1])
    swapped = compact[:j] + compact[j + 1] + compact[j] + compact[j + 2 :]
    negative: list[dict[str, Any]] = [
        {"name": "one character mistyped", "code": sub, "error": "malformed"},
        {"name": "two characters swapped", "code": swapped, "error": "malformed"},
        {"name": "too short", "code": code[:-2], "error": "malformed"},
        {"name": "U is not in the alphabet", "code": "U" + code[1:], "error": "malformed"},
        {"name": "other device", "code": code, "device_id": "sha256:000000", "error": "invalid"},
        {"name": "other license", "code": code, "license_id": "lic-0002", "error": "invalid"},
        {
            "name": "serial beyond the license's codes",
            "code": code,
            "verifiers": verifiers[:1],
            "error": "invalid",
        },
        {"name": "serial already used", "code": code, "used_serials": [1], "error": "used"},
    ]
    for n in negative:
        n.setdefault("license_id", base["license_id"])
        n.setdefault("device_id", base["device_id"])
        n.setdefault("verifiers", verifiers)
        n.setdefault("used_serials", [])
    doc = {
        "format": "modelseal unlock code",
        "version": 2,
        "spec": "docs/guard-audit-unlock.md",
        "alphabet": "0123456789ABCDEFGHJKMNPQRSTVWXYZ",
        "vectors": vectors,
        "negative": negative,
    }
    OUT.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
