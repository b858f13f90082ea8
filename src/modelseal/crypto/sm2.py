"""SM2 (GB/T 32918) signatures with SM3 and public-key encryption.

``cryptography`` has no SM2, so the arithmetic comes from ``gmssl-pyx`` (a
binding of GmSSL): measured here, it writes OpenSSL's DER signatures and
C1C3C2 DER ciphertexts unchanged and interoperates with ``openssl pkeyutl``
both ways, and it checks C3 on decryption. The pure-Python ``gmssl`` is not
used: its nonces come from ``random`` and it skips the C3 check.

No SM2 library writes key files that OpenSSL reads, so the PKCS#8 / SPKI
wrapping (RFC 5915 ECPrivateKey under id-ecPublicKey with the SM2 curve
OID, the form ``openssl genpkey -algorithm SM2`` writes) is done here with
pycryptodome's DER codec. This module is the only one that imports the SM2
backend, so the choice can change without touching callers.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import Final

import gmssl_pyx
from Crypto.Util.asn1 import (
    DerBitString,
    DerInteger,
    DerObjectId,
    DerOctetString,
    DerSequence,
)

from modelseal.errors import DecryptionError, InvalidSignatureError, KeyFileError

#: The default signer id of GB/T 32918 / GM/T 0009, also OpenSSL's ``distid``.
DEFAULT_USER_ID: Final = b"1234567812345678"

OID_EC_PUBLIC_KEY: Final = "1.2.840.10045.2.1"
OID_SM2_CURVE: Final = "1.2.156.10197.1.301"

# Curve order n of sm2p256v1: a private key must lie in [1, n-2].
_N: Final = int("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123", 16)

#: GmSSL refuses plaintexts over 255 bytes; SM2 encryption here wraps keys only.
MAX_PLAINTEXT: Final = 255


def generate() -> tuple[bytes, bytes]:
    """A new key pair as ``(private scalar 32 bytes, public point x||y 64 bytes)``."""
    public, private = gmssl_pyx.sm2_key_generate()
    return bytes(private), bytes(public)


def sign(private: bytes, public: bytes, message: bytes, user_id: bytes = DEFAULT_USER_ID) -> bytes:
    """SM2 signature over SM3(Z_A || message); DER ``SEQUENCE { r, s }``."""
    return bytes(gmssl_pyx.sm2_sign(private, public, message, signer_id=user_id))


#: GmSSL's ``error_print()`` trace: one "file.c:line:function():" line per frame,
#: written with fprintf(stderr) for every signature that fails to verify.
_GMSSL_TRACE: Final = re.compile(rb"^/\S*\.c:\d+:\w+\(\):\s*$")
_STDERR_LOCK: Final = threading.Lock()


def _without_gmssl_trace(captured: bytes) -> bytes:
    """``captured`` minus GmSSL's trace lines (another thread's output is kept)."""
    lines = captured.splitlines(keepends=True)
    return b"".join(line for line in lines if not _GMSSL_TRACE.match(line))


_capture: tuple[int, int] | None = None  # (pid, fd): one capture file per process


def _capture_fd() -> int:
    """This process's capture file: an anonymous memory file where the OS has one.

    Kept open and reused (creating one per verification cost a third of an
    SM2 verification, bench/RESULTS.md); a forked child makes its own, since
    the parent's is shared with it.
    """
    global _capture
    if _capture is None or _capture[0] != os.getpid():
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("modelseal-gmssl", os.MFD_CLOEXEC)
        else:  # pragma: no cover - non-Linux
            with tempfile.TemporaryFile() as f:
                fd = os.dup(f.fileno())
        _capture = (os.getpid(), fd)
    return _capture[1]


@contextlib.contextmanager
def _quiet_gmssl() -> Iterator[None]:
    """Keep GmSSL's C-level error trace off stderr (issue #8, item 15).

    A bad SM2 signature is an ordinary, typed outcome here
    (:class:`InvalidSignatureError`); the CLI prints one ``error:`` line, and
    GmSSL's trace made it three. The library cannot be told to be quiet, so
    file descriptor 2 points at a private file while it runs; whatever
    else was written to it meanwhile (another thread) is copied back to the
    real stderr afterwards, only GmSSL's trace lines are dropped.
    """
    with _STDERR_LOCK:
        try:
            capture = _capture_fd()
            saved = os.dup(2)
        except OSError:
            yield  # no stderr, or no capture file: nothing we can keep quiet
            return
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.lseek(capture, 0, os.SEEK_SET)
        os.ftruncate(capture, 0)
        os.dup2(capture, 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            written = os.lseek(capture, 0, os.SEEK_CUR)
            rest = b""
            if written:
                os.lseek(capture, 0, os.SEEK_SET)
                rest = _without_gmssl_trace(os.read(capture, written))
            if rest:
                with contextlib.suppress(OSError):
                    os.write(2, rest)


def verify(
    public: bytes, message: bytes, signature: bytes, user_id: bytes = DEFAULT_USER_ID
) -> None:
    try:
        with _quiet_gmssl():
            ok = gmssl_pyx.sm2_verify(public, message, signature, signer_id=user_id)
    except gmssl_pyx.GmsslInnerError:
        ok = False
    if not ok:
        raise InvalidSignatureError("SM2 signature does not verify")


def encrypt(public: bytes, plaintext: bytes) -> bytes:
    """GB/T 32918.4 encryption; DER C1C3C2 as OpenSSL writes it."""
    if not 1 <= len(plaintext) <= MAX_PLAINTEXT:
        raise ValueError(f"SM2 encrypts 1..{MAX_PLAINTEXT} bytes (keys, not data)")
    return bytes(gmssl_pyx.sm2_encrypt(public, plaintext))


def decrypt(private: bytes, ciphertext: bytes) -> bytes:
    try:
        return bytes(gmssl_pyx.sm2_decrypt(private, ciphertext))
    except (gmssl_pyx.GmsslInnerError, ValueError, TypeError):
        raise DecryptionError("SM2 ciphertext does not decrypt under this key") from None


# --- key encoding -----------------------------------------------------------------


def _curve_params() -> DerObjectId:
    return DerObjectId(OID_SM2_CURVE)


def encode_spki(public: bytes) -> bytes:
    """SubjectPublicKeyInfo DER for x||y."""
    alg = DerSequence([DerObjectId(OID_EC_PUBLIC_KEY), _curve_params()])
    return bytes(DerSequence([alg, DerBitString(b"\x04" + public)]).encode())


def decode_spki(der: bytes) -> bytes:
    try:
        seq = DerSequence().decode(der, strict=True)
        alg = DerSequence().decode(seq[0], strict=True)
        _expect_sm2_alg(alg)
        point = DerBitString().decode(seq[1], strict=True).value
        return _check_point(point)
    except (ValueError, IndexError, TypeError) as exc:
        raise KeyFileError(f"not an SM2 public key: {exc}") from None


def encode_ec_private_key(private: bytes, public: bytes) -> bytes:
    """RFC 5915 ECPrivateKey, without curve parameters (they sit in PKCS#8)."""
    return bytes(
        DerSequence(
            [
                DerInteger(1),
                DerOctetString(private),
                DerBitString(b"\x04" + public, explicit=1),
            ]
        ).encode()
    )


def decode_ec_private_key(der: bytes) -> tuple[bytes, bytes]:
    try:
        seq = DerSequence().decode(der, strict=True)
        if seq[0] != 1:
            raise ValueError("ECPrivateKey version must be 1")
        private = DerOctetString().decode(seq[1], strict=True).payload
        if len(private) > 32:
            raise ValueError("private scalar too long")
        private = private.rjust(32, b"\x00")
        d = int.from_bytes(private, "big")
        if not 1 <= d <= _N - 2:
            raise ValueError("private scalar out of range")
        public: bytes | None = None
        for idx in range(2, len(seq)):
            item = seq[idx]
            # [1] EXPLICIT BIT STRING holds the public point; [0] the curve.
            if isinstance(item, bytes) and item[:1] == b"\xa1":
                public = _check_point(DerBitString(explicit=1).decode(item, strict=True).value)
        if public is None:
            # GmSSL's binding cannot derive Q from d and we do not write curve
            # arithmetic of our own; OpenSSL and we always store Q.
            raise ValueError("the key file does not carry its public key")
        _check_pair(private, public)
        return private, public
    except (ValueError, IndexError, TypeError) as exc:
        raise KeyFileError(f"not an SM2 private key: {exc}") from None


def _check_pair(private: bytes, public: bytes) -> None:
    """A file whose Q does not belong to its d would sign with a wrong Z_A.

    Signing with (d, Q) and verifying under Q succeeds only if Q = dG.
    """
    probe = b"modelseal sm2 key pair check"
    try:
        verify(public, probe, sign(private, public, probe))
    except (InvalidSignatureError, gmssl_pyx.GmsslInnerError):
        raise ValueError("public key does not match the private key") from None


def _expect_sm2_alg(alg: DerSequence) -> None:
    if DerObjectId().decode(alg[0], strict=True).value != OID_EC_PUBLIC_KEY:
        raise ValueError("algorithm is not id-ecPublicKey")
    if DerObjectId().decode(alg[1], strict=True).value != OID_SM2_CURVE:
        raise ValueError("curve is not SM2")


def _check_point(point: bytes) -> bytes:
    if len(point) != 65 or point[0] != 4:
        raise ValueError("public point must be uncompressed (65 bytes)")
    try:
        return bytes(gmssl_pyx.normalize_sm2_public_key(point))
    except gmssl_pyx.InvalidValueError:
        raise ValueError("public point is not on the SM2 curve") from None
