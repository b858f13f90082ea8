"""Key delivery bound to a device (spec: docs/license.md, "Key delivery").

The content keys of the licensed models are wrapped under a fresh 256-bit
license key-encryption key (KEK). The KEK is split k-of-n with Shamir's
scheme (pycryptodome, over GF(2^128): the two 16-byte halves are shared with
the same x-coordinates), and each share is encrypted under a key derived
from one fingerprint component's secret. A component of weight w receives
w shares, so k counts weight, not components. On the bound device enough
components reproduce their secrets to decrypt k shares and rebuild the
KEK; on another machine they do not, whatever the verifying code does,
because the key material is simply not there.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from Crypto.Protocol.SecretSharing import Shamir

from modelseal.crypto import ContentKey, b64url, b64url_decode, hkdf_sha256, new_aead
from modelseal.errors import DecryptionError
from modelseal.license.claims import EncryptedShare, KeyDelivery, WrappedContentKey
from modelseal.license.errors import KeyDeliveryError, LicenseFormatError

KEK_SIZE: Final = 32
SALT_SIZE: Final = 32
_INFO_SHARE: Final = b"modelseal/license/v1/share/"
_AAD_SHARE: Final = b"modelseal/license/v1/share"
_AAD_CEK: Final = b"modelseal/license/v1/cek/"
_AAD_UNLOCK: Final = b"modelseal/license/v1/unlock/"
_INFO_STATE: Final = b"modelseal/license/v1/state/"


@dataclass(frozen=True)
class ShareHolder:
    """One component as the issuer sees it: its kind, weight and key secret."""

    kind: str
    weight: int
    secret: bytes  # from the activation request (HMAC of the raw value; never in the license)


@dataclass(frozen=True)
class LocalSecret:
    """One component as the device sees it: kind and the secret recomputed from hardware."""

    kind: str
    secret: bytes


def split_kek(kek: bytes, threshold: int, count: int) -> list[tuple[int, bytes]]:
    if len(kek) != KEK_SIZE:
        raise ValueError("KEK must be 32 bytes")
    if not 1 <= threshold <= count <= 255:
        raise ValueError("need 1 <= threshold <= shares <= 255")
    lo = Shamir.split(threshold, count, kek[:16])
    hi = Shamir.split(threshold, count, kek[16:])
    return [(x, a + b) for (x, a), (x2, b) in zip(lo, hi, strict=True) if x == x2]


def combine_kek(shares: Sequence[tuple[int, bytes]]) -> bytes:
    lo = Shamir.combine([(x, s[:16]) for x, s in shares])
    hi = Shamir.combine([(x, s[16:]) for x, s in shares])
    return bytes(lo + hi)


def _share_key(secret: bytes, salt: bytes, jti: str, kind: str) -> bytes:
    return hkdf_sha256(
        secret, salt=salt, info=_INFO_SHARE + jti.encode() + b"/" + kind.encode(), length=32
    )


def _share_aad(jti: str, kind: str, x: int) -> bytes:
    return b"\x00".join((_AAD_SHARE, jti.encode(), kind.encode(), str(x).encode()))


def build(
    *,
    jti: str,
    holders: Sequence[ShareHolder],
    threshold: int,
    content_keys: Iterable[tuple[ContentKey, str | None]],
    unlock_secret: bytes | None = None,
    kek: bytes | None = None,
    salt: bytes | None = None,
) -> KeyDelivery:
    """The ``keys`` claim: encrypted shares, wrapped content keys, wrapped unlock secret."""
    kek = kek or os.urandom(KEK_SIZE)
    salt = salt or os.urandom(SALT_SIZE)
    total = sum(h.weight for h in holders)
    if threshold > total:
        raise ValueError(f"threshold {threshold} exceeds the total component weight {total}")
    points = iter(split_kek(kek, threshold, total))
    shares: list[EncryptedShare] = []
    for holder in holders:
        key = new_aead("aes-256-gcm", _share_key(holder.secret, salt, jti, holder.kind))
        for _ in range(holder.weight):
            x, share = next(points)
            ct = key.seal_random(share, _share_aad(jti, holder.kind, x))
            shares.append(EncryptedShare(kind=holder.kind, x=x, ct=b64url(ct)))
    wrap = new_aead("aes-256-gcm", kek)
    wrapped = tuple(
        WrappedContentKey(
            key_id=ck.key_id,
            model_id=model_id,
            wrapped=b64url(
                wrap.seal_random(ck.raw(), _AAD_CEK + jti.encode() + b"/" + ck.key_id.encode())
            ),
        )
        for ck, model_id in content_keys
    )
    unlock = (
        b64url(wrap.seal_random(unlock_secret, _AAD_UNLOCK + jti.encode()))
        if unlock_secret is not None
        else None
    )
    return KeyDelivery(
        salt=b64url(salt),
        threshold=threshold,
        shares=tuple(shares),
        content_keys=wrapped,
        unlock_secret=unlock,
    )


def recover_kek(delivery: KeyDelivery, *, jti: str, local: Iterable[LocalSecret]) -> bytes:
    """Rebuild the KEK from the shares this device's components can open."""
    try:
        salt = b64url_decode(delivery.salt)
    except ValueError:
        raise LicenseFormatError("key delivery salt is not base64url") from None
    by_kind: dict[str, list[bytes]] = {}
    for comp in local:
        by_kind.setdefault(comp.kind, []).append(_share_key(comp.secret, salt, jti, comp.kind))
    opened: dict[int, bytes] = {}
    for share in delivery.shares:
        if share.x in opened:
            continue
        try:
            ct = b64url_decode(share.ct)
        except ValueError:
            raise LicenseFormatError("encrypted share is not base64url") from None
        for key in by_kind.get(share.kind, ()):
            try:
                opened[share.x] = new_aead("aes-256-gcm", key).open_random(
                    ct, _share_aad(jti, share.kind, share.x)
                )
                break
            except DecryptionError:
                continue
    if len(opened) < delivery.threshold:
        raise KeyDeliveryError(
            f"this device opens {len(opened)} of the {delivery.threshold} key shares it needs"
        )
    chosen = sorted(opened.items())[: delivery.threshold]
    return combine_kek(chosen)


def _unwrap(kek: bytes, blob: str, aad: bytes, what: str) -> bytes:
    try:
        return new_aead("aes-256-gcm", kek).open_random(b64url_decode(blob), aad)
    except (ValueError, DecryptionError):
        # Wrong KEK means the shares combined to garbage: not this device.
        raise KeyDeliveryError(f"the {what} does not open on this device") from None


def unwrap_content_key(delivery: KeyDelivery, kek: bytes, *, jti: str, key_id: str) -> ContentKey:
    for entry in delivery.content_keys:
        if entry.key_id == key_id:
            raw = _unwrap(
                kek, entry.wrapped, _AAD_CEK + jti.encode() + b"/" + key_id.encode(), "content key"
            )
            return ContentKey(raw)
    raise KeyDeliveryError(f"the license carries no content key {key_id}")


def unwrap_unlock_secret(delivery: KeyDelivery, kek: bytes, *, jti: str) -> bytes:
    if delivery.unlock_secret is None:
        raise KeyDeliveryError("the license carries no unlock secret")
    return _unwrap(kek, delivery.unlock_secret, _AAD_UNLOCK + jti.encode(), "unlock secret")


def state_key(kek: bytes, *, jti: str) -> bytes:
    """Key for the guard's state file: it opens only where the KEK does."""
    return hkdf_sha256(kek, salt=b"", info=_INFO_STATE + jti.encode(), length=32)
