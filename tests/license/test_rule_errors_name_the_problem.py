"""Rule: a refused license says what is wrong with it (docs/cli.md: the CLI prints
the error's message after ``error:``; the exit code says only which class of
failure it was). A vendor debugging a token must see *which* claim failed
validation and why, *which* header fields are not allowed, the ``typ`` it
carries, the algorithm and key refused and both issuer names, never ``None``
or an empty message.

Found by mutation testing (tests/MUTATION.md, license/verify.py): the field
path of an invalid claim, the list of unexpected header fields and the
received ``typ`` could all be dropped from the messages without a failing
test. Only the facts in a message are pinned here, not its wording.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelseal.crypto import ContentKey, PrivateKey, b64url
from modelseal.license import (
    AlgorithmNotAllowedError,
    LicenseExpiredError,
    LicenseFormatError,
    LicenseNotYetValidError,
    TrustStore,
    WrongIssuerError,
    jws,
    read_unverified,
    verify_license,
)
from tests.license._helpers import issue
from tests.license.conftest import NOW, make_device

TYP = "modelseal-license+jwt"


@pytest.fixture
def key(vendor_keys: dict[str, PrivateKey]) -> PrivateKey:
    return vendor_keys["ed25519"]


def _claims(key: PrivateKey, cek: ContentKey) -> dict[str, Any]:
    return read_unverified(issue(key, make_device(), cek).token)[1]


def _sign(key: PrivateKey, claims: dict[str, Any], **header: Any) -> str:
    headers = {"typ": TYP, "kid": key.key_id, **header}
    return jws.encode(claims, key, alg="EdDSA", headers=headers)


def _message(exc: pytest.ExceptionInfo[Exception]) -> str:
    text = str(exc.value)
    assert text and text != "None"
    return text


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (("nbf",), True, "nbf"),  # a JSON boolean is not a timestamp (strict mode)
        (("limits", "calls"), "5", "limits.calls"),
        (("sub",), 7, "sub"),
    ],
)
def test_an_invalid_claim_is_named_by_its_path_and_its_problem(
    key: PrivateKey, cek: ContentKey, path: tuple[str, ...], value: Any, where: str
) -> None:
    claims = _claims(key, cek)
    node = claims
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    with pytest.raises(LicenseFormatError) as info:
        verify_license(_sign(key, claims), TrustStore([key.public_key()]), now=NOW)
    text = _message(info)
    assert f"({where}: " in text
    # pydantic's own explanation follows the path, not a placeholder
    detail = text.split(f"({where}: ", 1)[1].rstrip(")")
    assert detail and detail != "None" and "valid" in detail.lower()


@pytest.mark.parametrize("extra", [["x5u"], ["jku", "jwk"], ["cty"]])
def test_unexpected_header_fields_are_listed_exactly(
    key: PrivateKey, cek: ContentKey, extra: list[str]
) -> None:
    token = _sign(key, _claims(key, cek), **{name: "https://evil.example/k" for name in extra})
    with pytest.raises(LicenseFormatError) as info:
        verify_license(token, TrustStore([key.public_key()]), now=NOW)
    # exactly the offending fields: typ, kid and alg are allowed and never listed
    assert _message(info).endswith(f"unexpected header fields {sorted(extra)}")


def test_a_wrong_typ_is_quoted(key: PrivateKey, cek: ContentKey) -> None:
    with pytest.raises(LicenseFormatError) as info:
        verify_license(
            _sign(key, _claims(key, cek), typ="JWT"), TrustStore([key.public_key()]), now=NOW
        )
    assert "got 'JWT'" in _message(info)


def test_a_refused_algorithm_names_the_algorithm_and_the_key(
    key: PrivateKey, cek: ContentKey
) -> None:
    # the algorithm is refused before any signature is checked, so none is needed
    header = {"typ": TYP, "kid": key.key_id, "alg": "HS256"}
    body = json.dumps(_claims(key, cek)).encode()
    token = f"{b64url(json.dumps(header).encode())}.{b64url(body)}.{b64url(b'sig')}"
    with pytest.raises(AlgorithmNotAllowedError) as info:
        verify_license(token, TrustStore([key.public_key()]), now=NOW)
    text = _message(info)
    assert "'HS256'" in text and key.key_id in text


def test_a_wrong_issuer_names_both_issuers(key: PrivateKey, cek: ContentKey) -> None:
    with pytest.raises(WrongIssuerError) as info:
        verify_license(
            issue(key, make_device(), cek).token,
            TrustStore([key.public_key()]),
            now=NOW,
            issuer="globex",
        )
    text = _message(info)
    assert "'acme-models'" in text and "'globex'" in text


def test_date_refusals_say_which_end_of_the_window(key: PrivateKey, cek: ContentKey) -> None:
    from datetime import timedelta

    token = issue(key, make_device(), cek).token
    trust = TrustStore([key.public_key()])
    with pytest.raises(LicenseNotYetValidError) as early:
        verify_license(token, trust, now=NOW - timedelta(days=1))
    assert "not valid yet" in _message(early).lower()
    with pytest.raises(LicenseExpiredError) as late:
        verify_license(token, trust, now=NOW + timedelta(days=31))
    assert "expired" in _message(late).lower()


@pytest.mark.parametrize(
    ("token", "says"),
    [
        ("a.b", "three"),  # not three parts
        ("!!!.e30.sig", "base64url"),  # not base64url JSON
    ],
)
def test_unreadable_tokens_say_why(token: str, says: str) -> None:
    with pytest.raises(LicenseFormatError) as info:
        read_unverified(token)
    assert says in _message(info)
