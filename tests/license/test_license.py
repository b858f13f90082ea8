from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta

import jwt as pyjwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jws as joserfc_jws
from joserfc.jwk import import_key

from modelseal.crypto import ContentKey, PrivateKey, generate_private_key
from modelseal.device import make_request
from modelseal.license import (
    AlgorithmNotAllowedError,
    EnvironmentRefusedError,
    KeyDeliveryError,
    LicenseError,
    LicenseExpiredError,
    LicenseFormatError,
    LicenseNotYetValidError,
    LicenseSignatureError,
    TrustStore,
    UntrustedKeyError,
    WeakBindingError,
    WrongAudienceError,
    WrongDeviceError,
    WrongIssuerError,
    issue_license,
    open_content_key,
    read_unverified,
    verify_license,
)
from modelseal.license.keydelivery import recover_kek
from modelseal.license.verify import _local_secrets
from tests.license.conftest import NOW, make_device


def _issue(key: PrivateKey, device, cek: ContentKey, **kw):  # type: ignore[no-untyped-def]
    request = make_request(device, label="test box", salt=kw.pop("salt", None))
    args = dict(
        signing_key=key,
        issuer="acme-models",
        customer="ACME Hospital",
        audience=["acme/ocr"],
        request=request,
        content_keys=[(cek, "acme/ocr")],
        now=NOW,
        valid_for=timedelta(days=30),
        features=["ocr", "hd"],
        max_calls=1000,
        threshold=5,
    )
    args.update(kw)
    return issue_license(**args)  # type: ignore[arg-type]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("kty", "alg"), [("ed25519", "EdDSA"), ("rsa", "PS256"), ("rsa", "RS256"), ("sm2", "SM2")]
)
def test_issue_verify_and_open_key(vendor_keys, device, cek, kty, alg) -> None:  # type: ignore[no-untyped-def]
    key = vendor_keys[kty]
    issued = _issue(key, device, cek, alg=alg, salt=b"s" * 32)
    header, claims = read_unverified(issued.token)
    assert header == {"alg": alg, "kid": key.key_id, "typ": "modelseal-license+jwt"}
    assert claims["sub"] == "ACME Hospital"
    request_secrets = [c.secret for c in make_request(device, label="x", salt=b"s" * 32).components]
    dumped = json.dumps(claims)
    assert all(secret not in dumped for secret in request_secrets)
    lic = verify_license(
        issued.token,
        TrustStore([key.public_key()]),
        audience="acme/ocr",
        issuer="acme-models",
        now=NOW,
        fingerprint=device,
    )
    assert lic.has_feature("hd") and not lic.has_feature("4k")
    assert open_content_key(lic, device, cek.key_id) == cek


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")  # RFC 9864 renames it Ed25519
@pytest.mark.parametrize(("kty", "alg"), [("ed25519", "EdDSA"), ("rsa", "PS256"), ("rsa", "RS256")])
def test_standard_jose_libraries_verify_our_licenses(vendor_keys, device, cek, kty, alg) -> None:  # type: ignore[no-untyped-def]
    key = vendor_keys[kty]
    token = _issue(key, device, cek, alg=alg).token
    pem = key.public_key().to_pem()
    claims = pyjwt.decode(
        token,
        pem,
        algorithms=[alg],
        audience="acme/ocr",
        issuer="acme-models",
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )
    assert claims["sub"] == "ACME Hospital"
    jwk = import_key(pem.decode(), "OKP" if kty == "ed25519" else "RSA")
    obj = joserfc_jws.deserialize_compact(token, jwk, algorithms=[alg])
    assert json.loads(obj.payload)["jti"] == claims["jti"]


def test_every_single_claim_change_is_refused(vendor_keys, device, cek) -> None:  # type: ignore[no-untyped-def]
    key = vendor_keys["ed25519"]
    token = _issue(key, device, cek).token
    h, p, s = token.split(".")
    assert json.loads(base64.urlsafe_b64decode(h + "=="))["typ"] == "modelseal-license+jwt"
    claims = json.loads(base64.urlsafe_b64decode(p + "=="))
    trust = TrustStore([key.public_key()])
    changed = 0
    varied = set()
    for name, value in claims.items():
        variants = []
        if isinstance(value, int):
            variants = [value + 1, value - 1]
        elif isinstance(value, str):
            variants = [value + "x", value[:-1]]
        elif isinstance(value, list):
            variants = [[*value, "extra"], value[:-1]]
        elif isinstance(value, dict):
            first = next(iter(value))
            variants = [{**value, first: None}, {**value, "extra": 1}]
        for v in variants:
            forged = dict(claims, **{name: v})
            body = _b64(json.dumps(forged, separators=(",", ":"), sort_keys=True).encode())
            with pytest.raises((LicenseSignatureError, LicenseFormatError)):
                verify_license(f"{h}.{body}.{s}", trust, now=NOW)
            changed += 1
            varied.add(name)
    forged = dict(claims, extra_claim=True)
    body = _b64(json.dumps(forged, sort_keys=True).encode())
    with pytest.raises(LicenseSignatureError):
        verify_license(f"{h}.{body}.{s}", trust, now=NOW)
    assert varied == set(claims) and changed == 2 * len(claims)  # every claim, two ways


def test_hostile_headers_and_algorithms(vendor_keys, device, cek) -> None:  # type: ignore[no-untyped-def]
    ed, rsa = vendor_keys["ed25519"], vendor_keys["rsa"]
    token = _issue(ed, device, cek).token
    _, p, s = token.split(".")
    trust = TrustStore([ed.public_key(), rsa.public_key()])

    def header(**fields: object) -> str:
        return _b64(json.dumps(fields).encode())

    # alg none, with and without a signature
    for sig in ("", s):
        bad = f"{header(alg='none', kid=ed.key_id, typ='modelseal-license+jwt')}.{p}.{sig}"
        with pytest.raises(AlgorithmNotAllowedError):
            verify_license(bad, trust, now=NOW)
    # HS256 "signed" with the public key as the HMAC secret (the classic confusion)
    for k in (ed, rsa):
        hdr = header(alg="HS256", kid=k.key_id, typ="modelseal-license+jwt")
        mac = hmac.new(k.public_key().to_pem(), f"{hdr}.{p}".encode(), hashlib.sha256).digest()
        with pytest.raises(AlgorithmNotAllowedError):
            verify_license(f"{hdr}.{p}.{_b64(mac)}", trust, now=NOW)
    # a key of the wrong type for alg: RS256 header naming the Ed25519 key, and vice versa
    with pytest.raises(AlgorithmNotAllowedError):
        verify_license(
            f"{header(alg='RS256', kid=ed.key_id, typ='modelseal-license+jwt')}.{p}.{s}",
            trust,
            now=NOW,
        )
    with pytest.raises(AlgorithmNotAllowedError):
        verify_license(
            f"{header(alg='EdDSA', kid=rsa.key_id, typ='modelseal-license+jwt')}.{p}.{s}",
            trust,
            now=NOW,
        )
    # unknown kid
    with pytest.raises(UntrustedKeyError):
        verify_license(token, TrustStore([rsa.public_key()]), now=NOW)
    # wrong or missing typ
    for typ in ("JWT", None):
        fields = {"alg": "EdDSA", "kid": ed.key_id, **({"typ": typ} if typ else {})}
        with pytest.raises(LicenseFormatError):
            verify_license(f"{header(**fields)}.{p}.{s}", trust, now=NOW)
    # key material in the header is never trusted
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}
    with pytest.raises(LicenseFormatError):
        verify_license(
            f"{header(alg='EdDSA', kid=ed.key_id, typ='modelseal-license+jwt', jwk=jwk)}.{p}.{s}",
            trust,
            now=NOW,
        )
    # a valid license from a key we do not trust, with the trusted key's kid
    other = generate_private_key("ed25519")
    forged = _issue(other, device, cek).token.split(".")
    hdr = header(alg="EdDSA", kid=ed.key_id, typ="modelseal-license+jwt")
    with pytest.raises(LicenseSignatureError):
        verify_license(f"{hdr}.{forged[1]}.{forged[2]}", trust, now=NOW)
    for garbage in ("", "a.b", "a.b.c", "....", token + "x"):
        with pytest.raises((LicenseFormatError, LicenseSignatureError, UntrustedKeyError)):
            verify_license(garbage, trust, now=NOW)


def test_dates_audience_issuer(vendor_keys, device, cek) -> None:  # type: ignore[no-untyped-def]
    key = vendor_keys["ed25519"]
    trust = TrustStore([key.public_key()])
    token = _issue(key, device, cek, not_before=NOW + timedelta(days=1)).token
    with pytest.raises(LicenseNotYetValidError):
        verify_license(token, trust, now=NOW)
    verify_license(token, trust, now=NOW + timedelta(days=1) - timedelta(seconds=30))  # leeway
    with pytest.raises(LicenseExpiredError):
        verify_license(token, trust, now=NOW + timedelta(days=32))
    with pytest.raises(WrongAudienceError):
        verify_license(token, trust, now=NOW + timedelta(days=2), audience="acme/other")
    with pytest.raises(WrongIssuerError):
        verify_license(token, trust, now=NOW + timedelta(days=2), issuer="evil-corp")
    perpetual = _issue(key, device, cek, plan="perpetual").token
    assert "exp" not in read_unverified(perpetual)[1]
    verify_license(perpetual, trust, now=NOW + timedelta(days=3650))


def test_hardware_changes_within_tolerance_and_beyond(vendor_keys, device, cek) -> None:  # type: ignore[no-untyped-def]
    # total weight 9 (the issuer's table), threshold 5: up to weight 4 may change
    key = vendor_keys["ed25519"]
    lic = verify_license(_issue(key, device, cek).token, TrustStore([key.public_key()]), now=NOW)
    tolerable = [
        {"os.hostname": "renamed"},
        {"os.hostname": "renamed", "os.machine_id": "reinstalled"},
        {"disk.root_serial": "NEWDISK"},  # weight 2
        {"net.mac": "52:54:00:ff:ff:ff", "os.hostname": "renamed", "os.machine_id": "x"},  # 4
    ]
    for changes in tolerable:
        moved = make_device(changes)
        assert open_content_key(lic, moved, cek.key_id) == cek
    too_much = [
        {"disk.root_serial": "NEWDISK", "dmi.product_uuid": "other"},  # weight 5
        {"dmi.product_uuid": "other", "disk.root_serial": "other"},
        {
            k: "other"
            for k in (
                "dmi.product_uuid",
                "disk.root_serial",
                "net.mac",
                "os.hostname",
                "os.machine_id",
            )
        },
    ]
    from modelseal.license import check_device

    for changes in too_much:
        moved = make_device(changes)
        with pytest.raises(WrongDeviceError):
            check_device(lic, moved)
        # the check patched out: the key material still does not open
        assert lic.claims.keys is not None
        with pytest.raises(KeyDeliveryError):
            recover_kek(lic.claims.keys, jti=lic.claims.jti, local=_local_secrets(lic, moved))
        with pytest.raises(KeyDeliveryError):
            open_content_key(lic, moved, cek.key_id)


def test_equal_weights_n_minus_k(vendor_keys, cek) -> None:  # type: ignore[no-untyped-def]
    base = {f"test.c{i}": (f"value-{i}", "strong", 1) for i in range(5)}
    dev = make_device(base=base)
    key = vendor_keys["ed25519"]
    lic = verify_license(
        _issue(key, dev, cek, threshold=3).token, TrustStore([key.public_key()]), now=NOW
    )
    for changed in range(6):
        moved = make_device({f"test.c{i}": "new" for i in range(changed)}, base=base)
        if changed <= 5 - 3:
            assert open_content_key(lic, moved, cek.key_id) == cek
        else:
            with pytest.raises(KeyDeliveryError):
                open_content_key(lic, moved, cek.key_id)


def test_environment_and_weak_binding(vendor_keys, cek) -> None:  # type: ignore[no-untyped-def]
    key = vendor_keys["ed25519"]
    vm = make_device(virtualization="vm")
    token = _issue(key, vm, cek, allow_vm=False).token
    with pytest.raises(EnvironmentRefusedError):
        verify_license(token, TrustStore([key.public_key()]), now=NOW, fingerprint=vm)
    weak = {
        "os.hostname": ("h", "weak", 1),
        "os.machine_id": ("m", "weak", 1),
        "net.mac": ("52:54:00:00:00:01", "strong", 2),
    }
    dev = make_device(base=weak)
    issued = _issue(key, dev, cek, threshold=2)
    assert any("weak components" in w for w in issued.warnings)
    with pytest.raises(WeakBindingError):
        _issue(key, dev, cek, threshold=2, strict_binding=True)
    # weak components weigh 2 < 3: strict binding issues it, with no warning at all
    assert list(_issue(key, dev, cek, threshold=3, strict_binding=True).warnings) == []


def test_content_keys_need_a_device(vendor_keys, cek) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LicenseFormatError):
        issue_license(
            signing_key=vendor_keys["ed25519"],
            issuer="i",
            customer="c",
            audience=["m"],
            content_keys=[(cek, "m")],
            now=NOW,
        )


def test_duplicate_claims_are_refused_even_when_signed(vendor_keys) -> None:  # type: ignore[no-untyped-def]
    from modelseal.license import jws

    key = vendor_keys["ed25519"]
    header = _b64(
        json.dumps({"alg": "EdDSA", "kid": key.key_id, "typ": "modelseal-license+jwt"}).encode()
    )
    payload = _b64(b'{"sub": "ACME", "sub": "EVIL"}')
    signature = _b64(key.sign(f"{header}.{payload}".encode()))
    with pytest.raises(LicenseFormatError, match="duplicate"):
        jws.decode(f"{header}.{payload}.{signature}", key.public_key(), alg="EdDSA")


def test_signed_but_loosely_typed_claims_are_refused(vendor_keys, device, cek) -> None:  # type: ignore[no-untyped-def]
    from modelseal.license import jws

    key = vendor_keys["ed25519"]
    claims = read_unverified(_issue(key, device, cek).token)[1]
    trust = TrustStore([key.public_key()])
    for name, value in (("nbf", True), ("limits", {"calls": "5"}), ("iat", 1.5), ("aud", "m")):
        forged = dict(claims, **{name: value})
        token = jws.encode(
            forged, key, alg="EdDSA", headers={"typ": "modelseal-license+jwt", "kid": key.key_id}
        )
        with pytest.raises(LicenseFormatError):
            verify_license(token, trust, now=NOW)


@settings(max_examples=300, deadline=None)
@given(
    header=st.fixed_dictionaries(
        {},
        optional={
            "alg": st.sampled_from(["EdDSA", "RS256", "PS256", "SM2", "none", "HS256", ""]),
            "kid": st.sampled_from(["KID", "other", ""]),
            "typ": st.sampled_from(["modelseal-license+jwt", "JWT", ""]),
            "jku": st.text(max_size=10),
        },
    ),
    payload=st.one_of(st.binary(max_size=64), st.text(max_size=64).map(str.encode)),
    signature=st.binary(max_size=80),
    raw=st.text(max_size=60),
)
def test_property_garbage_tokens_fail_typed(header, payload, signature, raw) -> None:  # type: ignore[no-untyped-def]
    key = generate_private_key("ed25519")
    trust = TrustStore([key.public_key()])
    h = dict(header)
    if "kid" in h and h["kid"] == "KID":
        h["kid"] = key.key_id
    token = f"{_b64(json.dumps(h).encode())}.{_b64(payload)}.{_b64(signature)}"
    # and the same garbage payload under a genuine signature of the trusted key
    good = _b64(
        json.dumps({"alg": "EdDSA", "kid": key.key_id, "typ": "modelseal-license+jwt"}).encode()
    )
    signed = f"{good}.{_b64(payload)}"
    signed += "." + _b64(key.sign(signed.encode()))
    for candidate in (token, raw, signed):
        with pytest.raises(LicenseError):
            verify_license(candidate, trust, now=NOW)
