"""Compact JWS for licenses, on PyJWT's JWS layer.

PyJWT signs and verifies EdDSA, RS256 and PS256 itself, so standard
libraries read our licenses. SM2 (with SM3, user id 1234567812345678) is
registered on our own ``PyJWS`` instance under the name ``SM2``; nothing
global is changed. Verification never lets the token choose: the caller
passes exactly the algorithms its trusted key allows (RFC 8725 §3.1), and
``none`` and HMAC algorithms are never registered at all.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Final

import jwt
from jwt.algorithms import Algorithm, OKPAlgorithm, RSAAlgorithm, RSAPSSAlgorithm
from jwt.exceptions import InvalidAlgorithmError, InvalidSignatureError, InvalidTokenError

from modelseal._json import StrictJSONError, strict_loads
from modelseal.crypto import PrivateKey, PublicKey
from modelseal.errors import InvalidSignatureError as OurInvalidSignature
from modelseal.license.errors import (
    AlgorithmNotAllowedError,
    LicenseFormatError,
    LicenseSignatureError,
)


class _Sm2Algorithm(Algorithm):
    """SM2-with-SM3 over the JWS signing input, DER signature as OpenSSL writes it."""

    def prepare_key(self, key: Any) -> Any:
        if isinstance(key, PrivateKey | PublicKey) and key.kty == "sm2":
            return key
        raise InvalidAlgorithmError("SM2 needs an SM2 key")

    def sign(self, msg: bytes, key: Any) -> bytes:
        if not isinstance(key, PrivateKey):
            raise InvalidAlgorithmError("signing needs a private key")
        return key.sign(msg, alg="SM2")

    def verify(self, msg: bytes, key: Any, sig: bytes) -> bool:
        public = key.public_key() if isinstance(key, PrivateKey) else key
        try:
            public.verify(sig, msg, alg="SM2")
        except OurInvalidSignature:
            return False
        return True

    @staticmethod
    def to_jwk(key_obj: Any, as_dict: bool = False) -> Any:
        raise NotImplementedError

    @staticmethod
    def from_jwk(jwk: str | dict[str, Any]) -> Any:
        raise NotImplementedError


def _jws() -> jwt.PyJWS:
    jws = jwt.PyJWS(algorithms=[])
    jws.register_algorithm("EdDSA", OKPAlgorithm())
    jws.register_algorithm("RS256", RSAAlgorithm(RSAAlgorithm.SHA256))
    jws.register_algorithm("PS256", RSAPSSAlgorithm(RSAPSSAlgorithm.SHA256))
    jws.register_algorithm("SM2", _Sm2Algorithm())
    return jws


_JWS = _jws()


def _backend_key(key: PrivateKey | PublicKey) -> Any:
    """The object PyJWT's own algorithms expect (cryptography keys); ours for SM2."""
    return key if key.kty == "sm2" else key._key


def encode(claims: dict[str, Any], key: PrivateKey, *, alg: str, headers: dict[str, Any]) -> str:
    payload = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode("utf-8")
    if getattr(key, "external_signer", False):
        return _encode_external(payload, key, alg=alg, headers=headers)
    return _JWS.encode(payload, _backend_key(key), algorithm=alg, headers=headers)


def _encode_external(payload: bytes, key: PrivateKey, *, alg: str, headers: dict[str, Any]) -> str:
    """The same compact JWS PyJWT writes (sorted compact header, ``typ`` JWT unless given),
    for a key that only signs (a PKCS#11 token's: there is no key object to hand PyJWT)."""
    header = {"typ": "JWT", "alg": alg, **headers}
    raw_header = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
    signing_input = _b64(raw_header) + "." + _b64(payload)
    return signing_input + "." + _b64(key.sign(signing_input.encode("ascii"), alg=alg))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


_SEGMENT: Final = re.compile(r"^[A-Za-z0-9_-]*$")


def check_compact(token: str) -> None:
    """Refuse any spelling of a JWS but the one canonical form (RFC 7515 §2, §7.1).

    Three segments of unpadded base64url whose unused trailing bits are
    zero. Decoders accept ``=`` padding and stray bits, so without this
    check one signed license had many strings (a signature segment with
    ``==`` appended still verified, issue #8, item 15): every component that
    keys on the token (revocation lists, caches, audit records) must see
    exactly one.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise LicenseFormatError("a license is a compact JWS: three base64url parts")
    for name, part in zip(("header", "payload", "signature"), parts, strict=True):
        if not _SEGMENT.match(part) or len(part) % 4 == 1:
            raise LicenseFormatError(f"license {name} is not unpadded base64url")
        try:
            raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        except (binascii.Error, ValueError):
            raise LicenseFormatError(f"license {name} is not base64url") from None
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != part:
            raise LicenseFormatError(f"license {name} is not canonical base64url")


def unverified_header(token: str) -> dict[str, Any]:
    check_compact(token)
    try:
        header = jwt.get_unverified_header(token)
    except InvalidTokenError as exc:
        raise LicenseFormatError(f"not a compact JWS: {exc}") from None
    return dict(header)


def decode(token: str, key: PublicKey, *, alg: str) -> dict[str, Any]:
    """Verify the signature with ``key`` and ``alg`` only; returns the payload object."""
    if alg not in key.algorithms:
        raise AlgorithmNotAllowedError(f"algorithm {alg!r} is not allowed for this {key.kty} key")
    check_compact(token)
    try:
        payload = _JWS.decode(token, _backend_key(key), algorithms=[alg])
    except InvalidSignatureError:
        raise LicenseSignatureError("license signature does not verify") from None
    except InvalidAlgorithmError:
        raise AlgorithmNotAllowedError(f"token algorithm is not {alg}") from None
    except InvalidTokenError as exc:
        raise LicenseFormatError(f"malformed license: {exc}") from None
    try:
        obj = strict_loads(payload)
    except StrictJSONError as exc:
        # duplicate claims could be read differently by another verifier
        raise LicenseFormatError(f"license payload is not strict JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise LicenseFormatError("license payload is not a JSON object")
    return obj
