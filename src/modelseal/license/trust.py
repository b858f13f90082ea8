"""The verifier's trust store: vendor public keys by key id.

Several keys may be trusted at once (key rotation: licenses signed with the
old key keep verifying while new ones use the new key). Each entry may pin
its algorithm and its issuer; otherwise every algorithm of the key's type
is allowed and the issuer is checked only if the caller asks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from modelseal.crypto import PublicKey, load_public_key
from modelseal.license.errors import UntrustedKeyError


@dataclass(frozen=True)
class TrustedKey:
    key: PublicKey
    alg: str | None = None
    issuer: str | None = None

    @property
    def algorithms(self) -> tuple[str, ...]:
        return (self.alg,) if self.alg else tuple(self.key.algorithms)


class TrustStore:
    def __init__(self, keys: Iterable[PublicKey | TrustedKey] = ()) -> None:
        self._keys: dict[str, TrustedKey] = {}
        for key in keys:
            self.add(key)

    def add(self, key: PublicKey | TrustedKey) -> None:
        entry = key if isinstance(key, TrustedKey) else TrustedKey(key)
        if entry.alg is not None and entry.alg not in entry.key.algorithms:
            raise ValueError(f"{entry.alg} cannot be used with a {entry.key.kty} key")
        self._keys[entry.key.key_id] = entry

    def lookup(self, kid: str) -> TrustedKey:
        try:
            return self._keys[kid]
        except KeyError:
            raise UntrustedKeyError(f"license signed by unknown key {kid!r}") from None

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    @classmethod
    def load(cls, *paths: str | os.PathLike[str]) -> TrustStore:
        """Public key files, or directories of ``*.pub`` files."""
        store = cls()
        for path in map(Path, paths):
            files = sorted(path.glob("*.pub")) if path.is_dir() else [path]
            for file in files:
                store.add(load_public_key(file))
        return store
