"""The gateway's side: check, unwrap (once per session key) and decrypt envelopes.

SM2 decryption costs ~1 ms; an LRU of unwrapped session keys, keyed by the
wrapped key's exact bytes, makes it happen once per session key. Caching by
the ciphertext of the key is safe: SM2 encryption is randomized, so equal
wrapped bytes can only come from the same wrapping, and every message is
still authenticated under the cached key with its own header as AAD.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from modelseal.crypto import Aead, PrivateKey, aead_key_size, new_aead
from modelseal.envelope.errors import EnvelopeIntegrityError, WrongGatewayKeyError
from modelseal.envelope.format import parse
from modelseal.errors import DecryptionError, UnsupportedAlgorithmError

DEFAULT_CACHE_SIZE: Final = 1024


@dataclass(frozen=True)
class OpenedEnvelope:
    """The response the model service sealed: status, content type and body."""

    status: int
    content_type: str
    body: bytes


class EnvelopeOpener:
    """Open envelopes sealed for ``private_key`` (the gateway's SM2 key)."""

    def __init__(self, private_key: PrivateKey, *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        if private_key.kty != "sm2":
            raise UnsupportedAlgorithmError("the gateway's envelope key must be an SM2 key")
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        self._key = private_key
        self.key_id = private_key.key_id
        self._cache: OrderedDict[tuple[str, bytes], Aead] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        #: SM2 decryptions done (one per session key while it stays cached).
        self.unwraps = 0
        #: Envelopes opened successfully.
        self.opened = 0

    def _session(self, aead: str, wrapped: bytes) -> Aead:
        slot = (aead, wrapped)
        with self._lock:
            cached = self._cache.get(slot)
            if cached is not None:
                self._cache.move_to_end(slot)
                return cached
        try:
            key = self._key.sm2_decrypt(wrapped)
        except DecryptionError:
            raise EnvelopeIntegrityError(
                "the envelope's session key does not open under this gateway's key"
            ) from None
        finally:
            self.unwraps += 1
        if len(key) != aead_key_size(aead):
            raise EnvelopeIntegrityError("the envelope's session key has the wrong length")
        session = new_aead(aead, key)
        with self._lock:
            self._cache[slot] = session
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return session

    def open(self, data: bytes | bytearray | memoryview, *, request_id: str) -> OpenedEnvelope:
        """Authenticate ``data`` as the answer to ``request_id`` and decrypt it.

        Raises :class:`EnvelopeFormatError`, :class:`WrongGatewayKeyError` or
        :class:`EnvelopeIntegrityError`; no plaintext leaves on failure.
        """
        env = parse(data)
        if env.key_id != self.key_id:
            raise WrongGatewayKeyError(
                f"envelope is for gateway key {env.key_id!r}; this gateway holds {self.key_id!r}"
            )
        aad = env.aad(request_id)
        session = self._session(env.aead, env.wrapped_key)
        try:
            body = session.decrypt(env.nonce, env.ciphertext, aad)
        except DecryptionError:
            raise EnvelopeIntegrityError(
                "envelope authentication failed (altered, or the answer to another request)"
            ) from None
        self.opened += 1
        return OpenedEnvelope(env.status, env.content_type, body)

    @property
    def cached_keys(self) -> int:
        return len(self._cache)
