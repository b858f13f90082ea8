"""Generate tests/vectors/unlock-v1.json (run once; the output is checked in).

Each vector lists the inputs, the packed payload, the exact HMAC input, the
truncated MAC and the code, so another implementation can be checked step by
step against docs/guard-audit-unlock.md. Negative vectors say which error a
verifier must raise.

    .venv/bin/python tests/guard/gen_unlock_vectors.py
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from modelseal.guard.unlock import DOMAIN, issue_unlock_code

OUT = Path(__file__).parents[1] / "vectors" / "unlock-v1.json"


def _secret(i: int) -> bytes:
    return hashlib.sha256(b"modelseal unlock vector secret %d" % i).digest()


def _ts(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _lp(value: str) -> bytes:
    raw = value.encode()
    return len(raw).to_bytes(2, "big") + raw


def main() -> None:
    cases = [
        ("basic", "lic-0001", "sha256:3f1c9a", datetime(2026, 11, 24, 18, 0, tzinfo=UTC), 1, 24),
        (
            "expiry rounded down to the minute, max grant",
            "lic-0001",
            "sha256:3f1c9a",
            datetime(2026, 12, 1, 9, 30, 59, tzinfo=UTC),
            2,
            720,
        ),
        (
            "max serial, min grant, non-ASCII license id",
            "Lizenz-Ä-7",
            "dev:8d9e2f0b4c1a",
            datetime(2030, 1, 1, 0, 0, tzinfo=UTC),
            65535,
            1,
        ),
        ("serial 0", "L", "D", datetime(2027, 6, 15, 12, 34, tzinfo=UTC), 0, 168),
    ]
    vectors: list[dict[str, Any]] = []
    for i, (name, lid, did, until, serial, grant) in enumerate(cases):
        secret = _secret(i)
        code = issue_unlock_code(
            secret,
            license_id=lid,
            device_id=did,
            valid_until=until,
            serial=serial,
            grant_hours=grant,
        )
        minute = int(until.timestamp()) // 60
        payload = ((1 << 52) | (minute << 26) | (serial << 10) | grant).to_bytes(7, "big")
        mac_input = DOMAIN + _lp(lid) + _lp(did) + payload
        mac = hmac.new(secret, mac_input, hashlib.sha256).digest()[:8]
        vectors.append(
            {
                "name": name,
                "unlock_secret": secret.hex(),
                "license_id": lid,
                "device_id": did,
                "valid_until": _ts(until),
                "expiry_minute": minute,
                "serial": serial,
                "grant_hours": grant,
                "payload": payload.hex(),
                "mac_input": mac_input.hex(),
                "mac": mac.hex(),
                "code": code,
                "accept_at": _ts(until - timedelta(minutes=1)),
            }
        )

    base = vectors[0]
    code = base["code"]
    # One substituted character (position 3) and one swap of unequal neighbours.
    sub = code[:2] + ("0" if code[2] != "0" else "1") + code[3:]
    compact = code.replace("-", "")
    j = next(k for k in range(len(compact) - 2) if compact[k] != compact[k + 1])
    swapped = compact[:j] + compact[j + 1] + compact[j] + compact[j + 2 :]
    negative = [
        {"name": "one character mistyped", "code": sub, "error": "malformed"},
        {"name": "two characters swapped", "code": swapped, "error": "malformed"},
        {"name": "too short", "code": code[:-2], "error": "malformed"},
        {"name": "U is not in the alphabet", "code": "U" + code[1:], "error": "malformed"},
        {"name": "other device", "code": code, "device_id": "sha256:000000", "error": "invalid"},
        {"name": "other license", "code": code, "license_id": "lic-0002", "error": "invalid"},
        {"name": "at expiry", "code": code, "now": base["valid_until"], "error": "expired"},
        {"name": "serial already used", "code": code, "used_serials": [1], "error": "used"},
    ]
    for n in negative:
        n.setdefault("license_id", base["license_id"])
        n.setdefault("device_id", base["device_id"])
        n.setdefault("now", base["accept_at"])
        n.setdefault("used_serials", [])
        n["unlock_secret"] = base["unlock_secret"]
    doc = {
        "format": "modelseal unlock code",
        "version": 1,
        "spec": "docs/guard-audit-unlock.md",
        "alphabet": "0123456789ABCDEFGHJKMNPQRSTVWXYZ",
        "vectors": vectors,
        "negative": negative,
    }
    OUT.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
