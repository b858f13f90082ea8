"""The model service's side: encrypt each response body under a rotating session key.

The patent wraps a fresh SM4 key with SM2 for every response; an SM2
encryption costs ~1 ms here and the gateway's unwrap as much again, so a
session key serves many responses and rotates on whichever comes first of
an age and a message budget. Each message still gets a fresh random nonce
(96 bits: at the default budget of 65,536 messages per key a collision has
probability below 2^-64), and each message's AAD binds it to the gateway's
request id, so sharing a key across responses gives an attacker no replay.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from modelseal.crypto import NONCE_SIZE, SM4_GCM, Aead, PublicKey, aead_key_size, new_aead
from modelseal.envelope.format import AEAD_CODES, Envelope, check_request_id, encode_header
from modelseal.errors import UnsupportedAlgorithmError

DEFAULT_MAX_AGE_S: Final = 600.0
DEFAULT_MAX_MESSAGES: Final = 65_536


@dataclass(frozen=True)
class SessionPolicy:
    """When a session key retires: ``max_age_s`` seconds or ``max_messages`` uses."""

    max_age_s: float = DEFAULT_MAX_AGE_S
    max_messages: int = DEFAULT_MAX_MESSAGES

    def __post_init__(self) -> None:
        if not self.max_age_s > 0 or self.max_messages < 1:
            raise ValueError("a session key needs a positive age and message budget")
        # Random nonces: stay far below the 2^32 messages of SP 800-38D 8.3.
        if self.max_messages > 2**24:
            raise ValueError("max_messages above 2^24 would weaken random nonces")


@dataclass
class _Session:
    aead: Aead
    wrapped: bytes
    born: float
    used: int = 0


class EnvelopeSealer:
    """Seal response bodies for one gateway public key (SM2)."""

    def __init__(
        self,
        gateway_key: PublicKey,
        *,
        aead: str = SM4_GCM,
        policy: SessionPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if gateway_key.kty != "sm2":
            raise UnsupportedAlgorithmError("the gateway's envelope key must be an SM2 key")
        if aead not in AEAD_CODES:
            raise UnsupportedAlgorithmError(f"envelopes use sm4-gcm or aes-256-gcm, not {aead!r}")
        self._key = gateway_key
        self.key_id = gateway_key.key_id
        self.aead = aead
        self.policy = policy or SessionPolicy()
        self._clock = clock
        self._lock = threading.Lock()
        self._session: _Session | None = None
        #: How many session keys this sealer has wrapped (one SM2 encryption each).
        self.rotations = 0
        #: How many envelopes it has sealed.
        self.sealed = 0

    def _current(self) -> _Session:
        now = self._clock()
        s = self._session
        if s is None or s.used >= self.policy.max_messages or now - s.born >= self.policy.max_age_s:
            key = os.urandom(aead_key_size(self.aead))
            s = _Session(new_aead(self.aead, key), self._key.sm2_encrypt(key), now)
            self._session = s
            self.rotations += 1
        s.used += 1
        self.sealed += 1
        return s

    def seal(
        self,
        body: bytes | bytearray | memoryview,
        *,
        request_id: str,
        status: int = 200,
        content_type: str = "application/json",
    ) -> bytes:
        """The envelope for one response ``body`` answering request ``request_id``."""
        rid = check_request_id(request_id)
        with self._lock:
            session = self._current()
        nonce = os.urandom(NONCE_SIZE)
        header = encode_header(
            aead=self.aead,
            status=status,
            key_id=self.key_id,
            content_type=content_type,
            wrapped_key=session.wrapped,
            nonce=nonce,
        )
        aad = header + bytes([len(rid)]) + rid
        return header + session.aead.encrypt(nonce, body, aad)


def seal_with_session_key(
    gateway_key: PublicKey,
    session_key: bytes,
    body: bytes,
    *,
    request_id: str,
    aead: str = SM4_GCM,
    status: int = 200,
    content_type: str = "application/json",
    nonce: bytes | None = None,
) -> tuple[bytes, Envelope]:
    """One envelope under a given session key: for test vectors and interop checks only."""
    from modelseal.envelope.format import parse

    wrapped = gateway_key.sm2_encrypt(session_key)
    nonce = nonce if nonce is not None else os.urandom(NONCE_SIZE)
    header = encode_header(
        aead=aead,
        status=status,
        key_id=gateway_key.key_id,
        content_type=content_type,
        wrapped_key=wrapped,
        nonce=nonce,
    )
    rid = check_request_id(request_id)
    data = header + new_aead(aead, session_key).encrypt(
        nonce, body, header + bytes([len(rid)]) + rid
    )
    return data, parse(data)
