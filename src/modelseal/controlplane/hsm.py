"""Signing keys in a PKCS#11 token (an HSM, or SoftHSM2 to try it): the key never leaves it.

A vendor's signing key can live in the token instead of the sealed key
table: ``POST /v1/keys/rotate?store=hsm`` generates the pair *in* the token
(``CKA_SENSITIVE``, not ``CKA_EXTRACTABLE``, ``CKA_TOKEN``), the server
keeps the public key and a reference (``pkcs11:`` + JSON of the key's
``CKA_LABEL`` and ``CKA_ID``; nothing secret), and every signature (licenses,
heartbeat replies, revocation lists) is a ``C_Sign`` call: Ed25519 with
``CKM_EDDSA``, RSA with ``CKM_SHA256_RSA_PKCS_PSS`` (PS256: SHA-256, MGF1
SHA-256, 32-byte salt, RFC 7518 §3.5). Licenses it signs carry the same
``kid`` (RFC 7638 thumbprint of the public key) and verify with the same
trust files. SM2 stays in software: SoftHSM2 (and most HSMs) have no SM2
mechanism.

Settings: ``MODELSEAL_PKCS11_MODULE`` (the library, e.g.
``/usr/lib/softhsm/libsofthsm2.so``), ``MODELSEAL_PKCS11_TOKEN`` (the token
label) and ``MODELSEAL_PKCS11_PIN_FILE`` (the user PIN, in a file: never on
a command line). One logged-in session per process; a lock serialises
calls on it (PKCS#11 sessions are not for concurrent use).
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, cast

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from modelseal.controlplane.errors import ConflictError, ControlPlaneError
from modelseal.crypto import PrivateKey
from modelseal.crypto.keys import ALGORITHMS_FOR, PublicKey
from modelseal.errors import MissingDependencyError, UnsupportedAlgorithmError

PREFIX: Final = "pkcs11:"
#: DER of the Ed25519 OID 1.3.101.112 (RFC 8410), the CKA_EC_PARAMS of an Ed25519 key
ED25519_PARAMS: Final = bytes.fromhex("06032b6570")


class HsmError(ControlPlaneError):
    """The token is not configured, not reachable, or refused an operation."""

    status_code = 409
    code = "hsm_unavailable"
    exit_code = 24


@dataclass(frozen=True, eq=False)
class Pkcs11PrivateKey(PrivateKey):
    """A signing key whose private half stays in the token; signs with ``C_Sign``."""

    #: license/jws.py builds the JWS around ``sign`` instead of handing PyJWT a key object
    external_signer: ClassVar[bool] = True

    _public: PublicKey | None = None
    _token: Pkcs11Token | None = None
    _ref: dict[str, str] = field(default_factory=dict)

    def public_key(self) -> PublicKey:
        assert self._public is not None
        return self._public

    def sign(self, message: bytes, *, alg: str | None = None) -> bytes:
        checked = alg or self.default_algorithm
        if checked not in ALGORITHMS_FOR[self.kty]:
            raise UnsupportedAlgorithmError(f"a {self.kty} key does not sign {checked}")
        assert self._token is not None
        return self._token.sign(self._ref, self.kty, checked, message)

    def sm2_decrypt(self, ciphertext: bytes) -> bytes:
        raise HsmError("keys in the token only sign")

    def to_pem(self, passphrase: str | bytes | None = None) -> bytes:
        raise HsmError("a key in the token cannot be exported (that is the point)")

    def __repr__(self) -> str:
        return f"Pkcs11PrivateKey(kty={self.kty!r}, ref={self._ref!r})"


class Pkcs11Token:
    """One token of one PKCS#11 library, logged in with the user PIN."""

    def __init__(self, module: Path, token_label: str, pin_file: Path) -> None:
        try:
            import pkcs11
        except ImportError:
            raise MissingDependencyError(
                "PKCS#11 signing keys need python-pkcs11: pip install 'modelseal[hsm]'"
            ) from None
        self._pkcs11 = pkcs11
        try:
            pin = pin_file.read_text().strip()
            self._token = pkcs11.lib(str(module)).get_token(token_label=token_label)
            self._session = self._token.open(user_pin=pin, rw=True)
        except OSError as exc:
            raise HsmError(f"cannot read the PKCS#11 PIN file {pin_file}: {exc}") from None
        except pkcs11.PKCS11Error as exc:
            raise HsmError(f"cannot open PKCS#11 token {token_label!r}: {exc!r}") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._session.close()

    # --- keys -----------------------------------------------------------------------------

    def generate(self, kty: str, *, vendor: str) -> Pkcs11PrivateKey:
        """A new key pair made in the token; the private half is sensitive and not extractable."""
        p = self._pkcs11
        a = p.Attribute
        label = f"modelseal-{vendor}-{secrets.token_hex(4)}"
        key_id = secrets.token_bytes(16)
        private_template = {a.SENSITIVE: True, a.EXTRACTABLE: False, a.SIGN: True}
        with self._lock:
            try:
                if kty == "ed25519":
                    params = self._session.create_domain_parameters(
                        p.KeyType.EC_EDWARDS, {a.EC_PARAMS: ED25519_PARAMS}, local=True
                    )
                    params.generate_keypair(
                        store=True, label=label, id=key_id, private_template=private_template
                    )
                elif kty == "rsa":
                    self._session.generate_keypair(
                        p.KeyType.RSA,
                        3072,
                        store=True,
                        label=label,
                        id=key_id,
                        private_template=private_template,
                    )
                else:
                    raise ConflictError(
                        "only ed25519 and rsa keys can live in the token (no SM2 in PKCS#11)"
                    )
            except p.PKCS11Error as exc:
                raise HsmError(f"the token could not generate a {kty} key: {exc!r}") from None
        return self.key({"label": label, "id": key_id.hex(), "kty": kty})

    def _objects(self, ref: dict[str, str], cls: Any) -> Any:
        return self._session.get_key(
            object_class=cls, label=ref["label"], id=bytes.fromhex(ref["id"])
        )

    def key(self, ref: dict[str, str]) -> Pkcs11PrivateKey:
        p = self._pkcs11
        a = p.Attribute
        kty = ref["kty"]
        with self._lock:
            try:
                pub = self._objects(ref, p.ObjectClass.PUBLIC_KEY)
                if kty == "ed25519":
                    point = bytes(pub[a.EC_POINT])
                    # CKA_EC_POINT is a DER OCTET STRING (04 20 || 32 bytes) or the raw 32
                    raw = point[2:] if len(point) == 34 and point[:2] == b"\x04\x20" else point
                    public = PublicKey("ed25519", ed25519.Ed25519PublicKey.from_public_bytes(raw))
                else:
                    n = int.from_bytes(pub[a.MODULUS], "big")
                    e = int.from_bytes(pub[a.PUBLIC_EXPONENT], "big")
                    public = PublicKey("rsa", rsa.RSAPublicNumbers(e, n).public_key())
            except (p.PKCS11Error, KeyError) as exc:
                raise HsmError(f"key {ref.get('label')!r} is not in the token: {exc!r}") from None
        return Pkcs11PrivateKey(
            kty=cast(Any, kty), _key=cast(Any, None), _public=public, _token=self, _ref=dict(ref)
        )

    def sign(self, ref: dict[str, str], kty: str, alg: str, message: bytes) -> bytes:
        p = self._pkcs11
        with self._lock:
            try:
                priv = self._objects(ref, p.ObjectClass.PRIVATE_KEY)
                if kty == "ed25519":
                    return bytes(priv.sign(message, mechanism=p.Mechanism.EDDSA))
                if alg == "PS256":
                    return bytes(
                        priv.sign(
                            message,
                            mechanism=p.Mechanism.SHA256_RSA_PKCS_PSS,
                            mechanism_param=(p.Mechanism.SHA256, p.MGF.SHA256, 32),
                        )
                    )
                return bytes(priv.sign(message, mechanism=p.Mechanism.SHA256_RSA_PKCS))
            except p.PKCS11Error as exc:
                raise HsmError(f"the token refused to sign: {exc!r}") from None


def reference(key: Pkcs11PrivateKey) -> str:
    """What the key table stores instead of a sealed private key."""
    return PREFIX + json.dumps(key._ref, sort_keys=True)


def parse_reference(stored: str) -> dict[str, str]:
    return dict(json.loads(stored[len(PREFIX) :]))


def from_settings(settings: Any) -> Pkcs11Token | None:
    if settings.pkcs11_module is None:
        return None
    if not settings.pkcs11_token or settings.pkcs11_pin_file is None:
        raise HsmError("MODELSEAL_PKCS11_MODULE needs MODELSEAL_PKCS11_TOKEN and _PIN_FILE too")
    return Pkcs11Token(settings.pkcs11_module, settings.pkcs11_token, settings.pkcs11_pin_file)
