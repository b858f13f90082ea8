"""Signing key pairs (Ed25519, RSA, SM2), their PEM files and key ids.

A key knows which signature algorithms it may be used with; callers name
the algorithm with its JOSE name (``EdDSA``, ``RS256``, ``PS256``, ``SM2``)
because that is what licenses carry, and a key refuses any algorithm that
does not belong to it (RFC 8725 §3.1: the key decides the algorithm).

Files are PKCS#8 (private, optionally passphrase-protected with PBES2:
PBKDF2-HMAC-SHA256 and AES-256-CBC) and SubjectPublicKeyInfo (public), in
PEM, the forms ``openssl pkey`` reads. Key ids are RFC 7638 JWK thumbprints;
SM2 has no registered JWK curve name, so its members are
``{"crv": "SM2", "kty": "EC", "x", "y"}``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, cast, get_args

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from modelseal.crypto import sm2
from modelseal.errors import (
    InvalidSignatureError,
    KeyFileError,
    UnsupportedAlgorithmError,
)

if TYPE_CHECKING:
    from Crypto.Util.asn1 import DerObject

# pycryptodome (PEM, PKCS#8 wrapping, ASN.1) is imported where it is used:
# with cffi installed it parses C declarations at import, ~150 ms measured
# on the first modelseal.load of a process, which never touches a PEM file.

KeyType = Literal["ed25519", "rsa", "sm2"]
SignatureAlgorithm = Literal["EdDSA", "RS256", "PS256", "SM2"]

KEY_TYPES: Final[tuple[str, ...]] = get_args(KeyType)
SIGNATURE_ALGORITHMS: Final[tuple[str, ...]] = get_args(SignatureAlgorithm)

#: Which algorithms each key type may sign or verify with; the first is the default.
ALGORITHMS_FOR: Final[Mapping[str, tuple[SignatureAlgorithm, ...]]] = {
    "ed25519": ("EdDSA",),
    "rsa": ("PS256", "RS256"),
    "sm2": ("SM2",),
}

RSA_MIN_BITS: Final = 2048
RSA_DEFAULT_BITS: Final = 3072
#: PBKDF2 iterations for passphrase-protected key files (OWASP 2023: 600k for SHA-256).
PBKDF2_ITERATIONS: Final = 600_000

Pathish = str | os.PathLike[str]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if not isinstance(text, str) or any(c in text for c in "=+/ \n"):
        raise ValueError("not base64url without padding")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwk_thumbprint(members: Mapping[str, str]) -> str:
    """RFC 7638: SHA-256 over the required members, sorted, no whitespace."""
    canonical = json.dumps(dict(sorted(members.items())), separators=(",", ":"))
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def _int_b64(n: int) -> str:
    return b64url(n.to_bytes((n.bit_length() + 7) // 8 or 1, "big"))


def _check_alg(kty: str, alg: str) -> SignatureAlgorithm:
    for allowed in ALGORITHMS_FOR[kty]:
        if alg == allowed:
            return allowed
    raise UnsupportedAlgorithmError(f"algorithm {alg!r} cannot be used with a {kty} key")


_PSS: Final = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


@dataclass(frozen=True, eq=False)
class PublicKey:
    """A public key that verifies signatures (and, for SM2, encrypts keys)."""

    kty: KeyType
    _key: ed25519.Ed25519PublicKey | rsa.RSAPublicKey | bytes

    @property
    def algorithms(self) -> tuple[SignatureAlgorithm, ...]:
        return ALGORITHMS_FOR[self.kty]

    def jwk(self) -> dict[str, str]:
        """The RFC 7638 required members."""
        if self.kty == "ed25519":
            raw = cast(ed25519.Ed25519PublicKey, self._key).public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            return {"crv": "Ed25519", "kty": "OKP", "x": b64url(raw)}
        if self.kty == "rsa":
            nums = cast(rsa.RSAPublicKey, self._key).public_numbers()
            return {"e": _int_b64(nums.e), "kty": "RSA", "n": _int_b64(nums.n)}
        point = cast(bytes, self._key)
        return {"crv": "SM2", "kty": "EC", "x": b64url(point[:32]), "y": b64url(point[32:])}

    @property
    def key_id(self) -> str:
        return jwk_thumbprint(self.jwk())

    def verify(self, signature: bytes, message: bytes, *, alg: str) -> None:
        """Raise :class:`InvalidSignatureError` unless ``signature`` is valid."""
        checked = _check_alg(self.kty, alg)
        try:
            if self.kty == "ed25519":
                cast(ed25519.Ed25519PublicKey, self._key).verify(signature, message)
            elif self.kty == "rsa":
                pad = _PSS if checked == "PS256" else padding.PKCS1v15()
                cast(rsa.RSAPublicKey, self._key).verify(signature, message, pad, hashes.SHA256())
            else:
                sm2.verify(cast(bytes, self._key), message, signature)
        except InvalidSignature:
            raise InvalidSignatureError(f"{checked} signature does not verify") from None

    def sm2_encrypt(self, plaintext: bytes) -> bytes:
        if self.kty != "sm2":
            raise UnsupportedAlgorithmError("public-key encryption is offered for SM2 keys only")
        return sm2.encrypt(cast(bytes, self._key), plaintext)

    @property
    def sm2_point(self) -> bytes:
        if self.kty != "sm2":
            raise UnsupportedAlgorithmError("not an SM2 key")
        return cast(bytes, self._key)

    def to_der(self) -> bytes:
        if self.kty == "sm2":
            return sm2.encode_spki(cast(bytes, self._key))
        key = cast(ed25519.Ed25519PublicKey | rsa.RSAPublicKey, self._key)
        return key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def to_pem(self) -> bytes:
        from Crypto.IO import PEM

        return PEM.encode(self.to_der(), "PUBLIC KEY").encode("ascii") + b"\n"

    def save(self, path: Pathish, *, overwrite: bool = False) -> None:
        """Write the SPKI PEM atomically; an existing file needs ``overwrite=True``."""
        from modelseal._fs import write_file

        write_file(path, self.to_pem(), mode=0o644, overwrite=overwrite)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and self.to_der() == other.to_der()

    def __hash__(self) -> int:
        return hash(self.to_der())

    def __repr__(self) -> str:
        return f"PublicKey(kty={self.kty!r}, key_id={self.key_id!r})"


@dataclass(frozen=True, eq=False)
class PrivateKey:
    """A signing key. ``repr`` never shows secret material."""

    kty: KeyType
    _key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | tuple[bytes, bytes]

    @property
    def algorithms(self) -> tuple[SignatureAlgorithm, ...]:
        return ALGORITHMS_FOR[self.kty]

    @property
    def default_algorithm(self) -> SignatureAlgorithm:
        return ALGORITHMS_FOR[self.kty][0]

    def public_key(self) -> PublicKey:
        if self.kty == "sm2":
            return PublicKey("sm2", cast(tuple[bytes, bytes], self._key)[1])
        key = cast(ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey, self._key)
        return PublicKey(self.kty, key.public_key())

    @property
    def key_id(self) -> str:
        return self.public_key().key_id

    def sign(self, message: bytes, *, alg: str | None = None) -> bytes:
        checked = _check_alg(self.kty, alg or self.default_algorithm)
        if self.kty == "ed25519":
            return cast(ed25519.Ed25519PrivateKey, self._key).sign(message)
        if self.kty == "rsa":
            pad = _PSS if checked == "PS256" else padding.PKCS1v15()
            return cast(rsa.RSAPrivateKey, self._key).sign(message, pad, hashes.SHA256())
        d, q = cast(tuple[bytes, bytes], self._key)
        return sm2.sign(d, q, message)

    def sm2_decrypt(self, ciphertext: bytes) -> bytes:
        if self.kty != "sm2":
            raise UnsupportedAlgorithmError("public-key decryption is offered for SM2 keys only")
        return sm2.decrypt(cast(tuple[bytes, bytes], self._key)[0], ciphertext)

    def to_pem(self, passphrase: str | bytes | None = None) -> bytes:
        """PKCS#8 PEM; with a passphrase, PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC)."""
        from Crypto.IO import PEM, PKCS8
        from Crypto.Util.asn1 import DerObjectId

        if self.kty == "sm2":
            d, q = cast(tuple[bytes, bytes], self._key)
            inner = sm2.encode_ec_private_key(d, q)
            oid = sm2.OID_EC_PUBLIC_KEY
            params: DerObject | None = DerObjectId(sm2.OID_SM2_CURVE)
        else:
            key = cast(ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey, self._key)
            plain = key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            if not passphrase:
                return PEM.encode(plain, "PRIVATE KEY").encode("ascii") + b"\n"
            # cryptography's PKCS#8 encryption has no iteration setting; the
            # PBES2 wrapping goes through pycryptodome for every key type.
            oid, inner, raw_params = PKCS8.unwrap(plain)
            params = _der_params(raw_params)
        der = PKCS8.wrap(
            inner,
            oid,
            passphrase=passphrase or None,
            protection="PBKDF2WithHMAC-SHA256AndAES256-CBC" if passphrase else None,
            prot_params={"iteration_count": PBKDF2_ITERATIONS} if passphrase else None,
            key_params=params,
        )
        marker = "ENCRYPTED PRIVATE KEY" if passphrase else "PRIVATE KEY"
        return PEM.encode(der, marker).encode("ascii") + b"\n"

    def save(
        self, path: Pathish, passphrase: str | bytes | None = None, *, overwrite: bool = False
    ) -> None:
        """Write PKCS#8 PEM, mode 0600 from the first byte, atomically.

        An existing file is refused unless ``overwrite=True``: a vendor's
        signing key that is overwritten cannot sign for its customers again.
        """
        from modelseal._fs import write_file

        write_file(path, self.to_pem(passphrase), mode=0o600, overwrite=overwrite)

    def __repr__(self) -> str:
        return f"PrivateKey(kty={self.kty!r}, key_id={self.key_id!r})"


def _der_params(raw: bytes | None) -> DerObject | None:
    """AlgorithmIdentifier parameters as pycryptodome's wrap() wants them back.

    The three key types we accept carry none (Ed25519), NULL (RSA) or a curve
    OID (SM2); anything else is refused rather than re-encoded blindly.
    """
    from Crypto.Util.asn1 import DerNull, DerObjectId

    if raw is None:
        return None
    if raw == b"\x05\x00":
        return DerNull()
    try:
        return DerObjectId().decode(raw)
    except ValueError:
        raise KeyFileError("unsupported key algorithm parameters") from None


def _write_private(path: Path, data: bytes) -> None:
    """Create with 0600 from the first byte: never a window where others can read it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def generate_private_key(kty: str, *, rsa_bits: int = RSA_DEFAULT_BITS) -> PrivateKey:
    if kty == "ed25519":
        return PrivateKey("ed25519", ed25519.Ed25519PrivateKey.generate())
    if kty == "rsa":
        if rsa_bits < RSA_MIN_BITS:
            raise UnsupportedAlgorithmError(f"RSA keys must have at least {RSA_MIN_BITS} bits")
        return PrivateKey("rsa", rsa.generate_private_key(65537, rsa_bits))
    if kty == "sm2":
        return PrivateKey("sm2", sm2.generate())
    raise UnsupportedAlgorithmError(
        f"unknown key type {kty!r}; choose one of {', '.join(KEY_TYPES)}"
    )


def _read(source: Pathish | bytes) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {source}: {exc.strerror}") from None


def _pem_blocks(data: bytes) -> tuple[str, bytes]:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError("key file is not PEM text") from None
    for marker in ("ENCRYPTED PRIVATE KEY", "PRIVATE KEY", "PUBLIC KEY"):
        begin = f"-----BEGIN {marker}-----"
        start = text.find(begin)
        if start >= 0:
            end = text.find(f"-----END {marker}-----", start)
            if end < 0:
                break
            block = text[start : end + len(f"-----END {marker}-----")]
            from Crypto.IO import PEM

            try:
                der, _, _ = PEM.decode(block)
            except ValueError:
                break
            return marker, der
    raise KeyFileError("no PKCS#8 or SubjectPublicKeyInfo PEM block found")


def _check_rsa_size(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> None:
    if key.key_size < RSA_MIN_BITS:
        raise KeyFileError(f"RSA key of {key.key_size} bits; at least {RSA_MIN_BITS} required")


def load_private_key(source: Pathish | bytes, passphrase: str | bytes | None = None) -> PrivateKey:
    """Read a PKCS#8 PEM private key (Ed25519, RSA or SM2)."""
    from Crypto.IO import PKCS8
    from Crypto.Util.asn1 import DerObjectId

    marker, der = _pem_blocks(_read(source))
    if marker == "PUBLIC KEY":
        raise KeyFileError("this is a public key; a private key is needed here")
    if marker == "ENCRYPTED PRIVATE KEY" and not passphrase:
        raise KeyFileError("the private key is passphrase-protected; give the passphrase")
    try:
        oid, inner, params = PKCS8.unwrap(der, passphrase if marker.startswith("ENC") else None)
    except (ValueError, TypeError, IndexError):
        raise KeyFileError(
            "cannot decode the private key (wrong passphrase or damaged file)"
        ) from None
    if oid == sm2.OID_EC_PUBLIC_KEY and params is not None:
        try:
            curve = DerObjectId().decode(params).value
        except (ValueError, TypeError):
            curve = None
        if curve == sm2.OID_SM2_CURVE:
            return PrivateKey("sm2", sm2.decode_ec_private_key(inner))
    plain = der
    if marker.startswith("ENC"):
        plain = PKCS8.wrap(inner, oid, key_params=_der_params(params))
    try:
        key = serialization.load_der_private_key(plain, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyFileError("unsupported or damaged private key") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return PrivateKey("ed25519", key)
    if isinstance(key, rsa.RSAPrivateKey):
        _check_rsa_size(key)
        return PrivateKey("rsa", key)
    raise KeyFileError(f"unsupported key type {type(key).__name__}; use Ed25519, RSA or SM2")


def load_public_key(source: Pathish | bytes) -> PublicKey:
    """Read an SPKI PEM public key (Ed25519, RSA-2048+ or SM2)."""
    data = _read(source)
    marker, der = _pem_blocks(data)
    if marker != "PUBLIC KEY":
        raise KeyFileError("expected a public key (-----BEGIN PUBLIC KEY-----)")
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        return PublicKey("sm2", sm2.decode_spki(der))
    if isinstance(key, ed25519.Ed25519PublicKey):
        return PublicKey("ed25519", key)
    if isinstance(key, rsa.RSAPublicKey):
        _check_rsa_size(key)
        return PublicKey("rsa", key)
    raise KeyFileError(f"unsupported key type {type(key).__name__}; use Ed25519, RSA or SM2")
