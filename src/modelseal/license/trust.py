"""The verifier's trust store: vendor public keys by key id, each pinned to its issuer.

Several keys may be trusted at once: key rotation (licenses signed with the
old key keep verifying while new ones use the new key), or several vendors
whose models run in one process. In the second case a key must not sign in
another vendor's name (issue #8, item 12: with two vendors' keys trusted,
one signed a license claiming the other's ``iss``). So each entry may pin
the issuer it signs for, and:

- a pinned key verifies only licenses whose ``iss`` is its issuer;
- an unpinned key (a bare ``.pub`` file) verifies any ``iss`` *except* one
  that another key of the store is pinned to: a pin claims that vendor's
  name for its keys alone.

Entries come from code (:class:`TrustedKey`), from ``ISSUER=PATH`` strings
(the ``--trust`` option and ``MODELSEAL_TRUST``), or from trust files
(JSON, below), which pin any issuer, including ones with ``:`` or ``=`` in
them. docs/license.md ("Trust stores") is the reference.

A trust file::

    {"modelseal_trust": 1,
     "keys": [{"issuer": "acme-models", "alg": "EdDSA",
               "public_key": "-----BEGIN PUBLIC KEY-----\\n..."}]}

``issuer`` and ``public_key`` are required, ``alg`` optional; anything else
is refused, like every format modelseal reads.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from modelseal._json import StrictJSONError, strict_loads
from modelseal.crypto import PublicKey, load_public_key
from modelseal.errors import KeyFileError
from modelseal.license.errors import UntrustedKeyError, WrongIssuerError

TRUST_FILE_VERSION: Final = 1
MAX_TRUST_FILE: Final = 1 << 20
_TRUST_FIELDS: Final = frozenset({"modelseal_trust", "keys"})
_ENTRY_FIELDS: Final = frozenset({"issuer", "alg", "public_key"})
_ENTRY_REQUIRED: Final = frozenset({"issuer", "public_key"})


@dataclass(frozen=True)
class TrustedKey:
    key: PublicKey
    alg: str | None = None
    issuer: str | None = None

    @property
    def algorithms(self) -> tuple[str, ...]:
        return (self.alg,) if self.alg else tuple(self.key.algorithms)


def _check_issuer(issuer: object, where: str) -> str:
    if not isinstance(issuer, str) or not issuer.strip() or not issuer.isprintable():
        raise KeyFileError(f"{where}: issuer must be a non-empty printable string")
    return issuer


class TrustStore:
    def __init__(self, keys: Iterable[PublicKey | TrustedKey] = ()) -> None:
        self._keys: dict[str, TrustedKey] = {}
        for key in keys:
            self.add(key)

    def add(self, key: PublicKey | TrustedKey) -> None:
        """Trust ``key``; the same key may not be pinned to two issuers (or pinned and not)."""
        entry = key if isinstance(key, TrustedKey) else TrustedKey(key)
        if entry.alg is not None and entry.alg not in entry.key.algorithms:
            raise ValueError(f"{entry.alg} cannot be used with a {entry.key.kty} key")
        if entry.issuer is not None:
            _check_issuer(entry.issuer, "trusted key")
        kid = entry.key.key_id
        known = self._keys.get(kid)
        if known is not None and known.issuer != entry.issuer:
            raise ValueError(
                f"key {kid} is trusted for issuer {known.issuer!r} and again for "
                f"{entry.issuer!r}: one key, one issuer"
            )
        self._keys[kid] = entry

    def lookup(self, kid: str) -> TrustedKey:
        try:
            return self._keys[kid]
        except KeyError:
            raise UntrustedKeyError(f"license signed by unknown key {kid!r}") from None

    def pinned_issuers(self) -> frozenset[str]:
        return frozenset(e.issuer for e in self._keys.values() if e.issuer is not None)

    def check_issuer(self, entry: TrustedKey, iss: str) -> None:
        """Raise unless ``entry``'s key may sign licenses that claim ``iss``."""
        if entry.issuer is not None:
            if iss != entry.issuer:
                raise WrongIssuerError(
                    f"key {entry.key.key_id} signs for {entry.issuer!r}, not for {iss!r}"
                )
        elif iss in self.pinned_issuers():
            raise WrongIssuerError(
                f"issuer {iss!r} is pinned to other keys; key {entry.key.key_id} may not "
                "sign in its name"
            )

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __iter__(self) -> Any:
        return iter(list(self._keys.values()))

    @classmethod
    def load(cls, *entries: str | os.PathLike[str]) -> TrustStore:
        """Trust entries: key files, directories, trust files, each optionally ``ISSUER=PATH``.

        A directory contributes its ``*.pub`` key files and ``*.json`` trust
        files. See :func:`parse_trust_entry` for the ``ISSUER=PATH`` rule.
        """
        store = cls()
        for entry in entries:
            issuer, path = parse_trust_entry(entry)
            for key in _load_path(path, issuer):
                try:
                    store.add(key)
                except ValueError as exc:
                    raise KeyFileError(f"trust entry {os.fspath(entry)!r}: {exc}") from None
        return store

    @classmethod
    def from_env_value(cls, value: str) -> TrustStore:
        """``MODELSEAL_TRUST``: entries separated by ``os.pathsep`` (``:`` on Linux)."""
        entries = [e for e in value.split(os.pathsep) if e.strip()]
        if not entries:
            raise KeyFileError("MODELSEAL_TRUST names no trusted key")
        return cls.load(*entries)


def parse_trust_entry(entry: str | os.PathLike[str]) -> tuple[str | None, Path]:
    """``(issuer, path)`` of one trust entry.

    ``ISSUER=PATH`` pins every key found at PATH to ISSUER. The text before
    the first ``=`` is an issuer only if it holds no path separator, so a
    path whose first component contains ``=`` is written ``./a=b.pub``.
    Issuers that contain ``=``, ``/`` or (in ``MODELSEAL_TRUST``) ``:`` go
    in a trust file.
    """
    text = os.fspath(entry)
    head, sep, tail = text.partition("=")
    if sep and head and "/" not in head and os.sep not in head:
        if not tail:
            raise KeyFileError(f"trust entry {text!r} names an issuer but no key file")
        return _check_issuer(head, f"trust entry {text!r}"), Path(tail)
    return None, Path(text)


def _load_path(path: Path, issuer: str | None) -> list[TrustedKey]:
    if path.is_dir():
        files = sorted([*path.glob("*.pub"), *path.glob("*.json")])
        if not files:
            raise KeyFileError(f"trust directory {path} holds no *.pub or *.json file")
    else:
        files = [path]
    out: list[TrustedKey] = []
    for file in files:
        if file.suffix == ".json":
            out.extend(load_trust_file(file, issuer=issuer))
        else:
            out.append(TrustedKey(load_public_key(file), issuer=issuer))
    return out


def load_trust_file(path: str | os.PathLike[str], *, issuer: str | None = None) -> list[TrustedKey]:
    """The pinned keys of a JSON trust file; ``issuer``, if given, must match every entry."""
    where = f"trust file {os.fspath(path)}"
    try:
        with Path(path).open("rb") as f:
            data = f.read(MAX_TRUST_FILE + 1)
    except OSError as exc:
        raise KeyFileError(f"cannot read {where}: {exc.strerror}") from None
    if len(data) > MAX_TRUST_FILE:
        raise KeyFileError(f"{where} is larger than {MAX_TRUST_FILE} bytes")
    try:
        obj = strict_loads(data)
    except StrictJSONError as exc:
        raise KeyFileError(f"{where} is not strict JSON ({exc})") from None
    if not isinstance(obj, dict) or set(obj) != _TRUST_FIELDS:
        raise KeyFileError(f"{where} must be an object with exactly {sorted(_TRUST_FIELDS)}")
    version = obj["modelseal_trust"]
    if isinstance(version, bool) or version != TRUST_FILE_VERSION:
        raise KeyFileError(f"{where}: unsupported version {version!r}")
    keys = obj["keys"]
    if not isinstance(keys, list) or not keys:
        raise KeyFileError(f"{where}: keys must be a non-empty list")
    out: list[TrustedKey] = []
    for index, item in enumerate(keys):
        at = f"{where}, key {index}"
        if not isinstance(item, dict) or not _ENTRY_REQUIRED <= set(item) <= _ENTRY_FIELDS:
            raise KeyFileError(
                f"{at}: needs {sorted(_ENTRY_REQUIRED)} and may add alg, nothing else"
            )
        pinned = _check_issuer(item["issuer"], at)
        if issuer is not None and pinned != issuer:
            raise KeyFileError(f"{at} is pinned to {pinned!r}, but the entry says {issuer!r}")
        pem, alg = item["public_key"], item.get("alg")
        if not isinstance(pem, str) or (alg is not None and not isinstance(alg, str)):
            raise KeyFileError(f"{at}: public_key and alg must be strings")
        key = load_public_key(pem.encode("ascii", errors="replace"))
        if alg is not None and alg not in key.algorithms:
            raise KeyFileError(f"{at}: {alg} cannot be used with a {key.kty} key")
        out.append(TrustedKey(key, alg=alg, issuer=pinned))
    return out


def trust_file_entry(key: PublicKey, issuer: str, alg: str | None = None) -> dict[str, str]:
    """One ``keys`` item of a trust file, for tools that write them."""
    entry = {"issuer": _check_issuer(issuer, "trust entry"), "public_key": key.to_pem().decode()}
    if alg is not None:
        entry["alg"] = alg
    return entry
