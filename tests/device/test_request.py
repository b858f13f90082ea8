"""Activation requests: derivation, determinism, JSON round trip, strict parsing."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelseal.crypto import b64url
from modelseal.device import (
    ActivationRequest,
    Component,
    DeviceFingerprint,
    Environment,
    InvalidLabelError,
    NoComponentsError,
    RequestComponent,
    RequestFormatError,
    StaticSource,
    UnsupportedRequestVersionError,
    collect,
    component_digest,
    component_secret,
    make_request,
)
from modelseal.errors import FormatError, UnsupportedVersionError

SALT = bytes(range(32))
NONCE = bytes(range(16))
NOW = datetime(2026, 11, 23, 12, 30, 45, 123456, tzinfo=UTC)
UUID = "4c4c4544-0042-3510-8052-b4c04f4e3232"
ENV = Environment("vm", ("dmi:kvm", "cpuinfo:hypervisor"), "linux")


@pytest.fixture
def fp() -> DeviceFingerprint:
    return collect(
        StaticSource(
            [
                Component.of("dmi.product_uuid", UUID),
                Component.of("net.mac", "00:1b:21:00:00:01"),
                Component.of("net.mac", "00:1b:21:00:00:02"),
                Component.of("os.hostname", "gpu-node-07"),
            ],
            ENV,
        )
    )


@pytest.fixture
def request_obj(fp: DeviceFingerprint) -> ActivationRequest:
    return make_request(fp, label="lab-gpu-01", salt=SALT, now=NOW, nonce=NONCE)


# --- derivation --------------------------------------------------------------


def test_fixed_vectors() -> None:
    # Cross-checked with hashlib.scrypt + hmac (see the next test for the construction)
    assert component_digest(SALT, "dmi.product_uuid", UUID) == (
        "sO1BzxNvdzvLii2anRWCw32dBYAjc7Yzt1OSErughB8"
    )
    assert component_secret(SALT, "dmi.product_uuid", UUID) == (
        "vxCFIPIzzUcAUHkR1wLXDEGVBjLDyCA_F1d6cx_CyeE"
    )


def test_digest_is_the_documented_hmac() -> None:
    # hashlib's scrypt (CPython's OpenSSL binding) as an independent oracle
    stretched = hashlib.scrypt(
        b"net.mac\x0000:1b:21:00:00:01", salt=SALT, n=1 << 14, r=8, p=1, dklen=32
    )
    expected = b64url(hmac.new(stretched, b"modelseal/device/v2/match", hashlib.sha256).digest())
    assert component_digest(SALT, "net.mac", "00:1b:21:00:00:01") == expected


def test_digest_and_secret_differ_and_depend_on_everything() -> None:
    d = component_digest(SALT, "os.hostname", "a")
    s = component_secret(SALT, "os.hostname", "a")
    assert d != s
    assert len(d) == len(s) == 43
    assert component_digest(SALT, "os.hostname", "b") != d
    assert component_digest(SALT, "os.machine_id", "a") != d
    assert component_digest(bytes(32), "os.hostname", "a") != d
    # The NUL separator keeps (kind, value) splits apart.
    assert component_digest(SALT, "a.b", "c") != component_digest(SALT, "a.bc", "")


def test_request_is_deterministic_given_salt_nonce_and_time(fp: DeviceFingerprint) -> None:
    one = make_request(fp, label="x", salt=SALT, now=NOW, nonce=NONCE)
    two = make_request(fp, label="x", salt=SALT, now=NOW, nonce=NONCE)
    assert one == two
    assert one.to_bytes() == two.to_bytes()
    # Same salt, random nonce: the component hashes still match.
    three = make_request(fp, label="x", salt=SALT)
    assert three.components == one.components
    assert three.nonce != one.nonce


def test_fresh_salt_makes_requests_unlinkable(fp: DeviceFingerprint) -> None:
    one, two = make_request(fp, label="x"), make_request(fp, label="x")
    assert one.salt != two.salt
    assert not {c.digest for c in one.components} & {c.digest for c in two.components}


def test_request_fields(request_obj: ActivationRequest) -> None:
    r = request_obj
    assert r.version == 2
    assert r.created_at == "2026-11-23T12:30:45Z"
    assert r.created == datetime(2026, 11, 23, 12, 30, 45, tzinfo=UTC)
    assert r.salt_bytes == SALT
    assert r.nonce == b64url(NONCE)
    assert r.environment == ENV
    kinds = [c.kind for c in r.components]
    assert kinds == ["dmi.product_uuid", "net.mac", "net.mac", "os.hostname"]
    macs = [c for c in r.components if c.kind == "net.mac"]
    assert macs[0].digest < macs[1].digest
    uuid = r.components[0]
    assert (uuid.strength, uuid.weight) == ("strong", 3)
    assert uuid.digest == component_digest(SALT, "dmi.product_uuid", UUID)
    assert uuid.secret == component_secret(SALT, "dmi.product_uuid", UUID)


def test_created_at_converts_to_utc(fp: DeviceFingerprint) -> None:
    plus2 = datetime(2026, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=2)))
    assert make_request(fp, label="x", now=plus2).created_at == "2026-01-01T00:00:00Z"
    with pytest.raises(ValueError, match="timezone"):
        make_request(fp, label="x", now=datetime(2026, 1, 1))


def test_no_raw_values_and_no_secrets_in_repr(request_obj: ActivationRequest) -> None:
    text = repr(request_obj)
    for c in request_obj.components:
        assert c.secret not in text
        assert c.secret not in repr(c)
    blob = request_obj.to_bytes().decode()
    for raw in (UUID, "00:1b:21:00:00:01", "gpu-node-07"):
        assert raw not in blob
        assert raw not in text


@pytest.mark.parametrize("label", ["", "   ", "a\nb", "x" * 201, "tab\there"])
def test_bad_label(fp: DeviceFingerprint, label: str) -> None:
    with pytest.raises(InvalidLabelError):
        make_request(fp, label=label)


def test_no_components() -> None:
    empty = collect(StaticSource([], ENV))
    with pytest.raises(NoComponentsError):
        make_request(empty, label="x")


def test_bad_salt_or_nonce(fp: DeviceFingerprint) -> None:
    with pytest.raises(ValueError, match="salt"):
        make_request(fp, label="x", salt=b"short")
    with pytest.raises(ValueError, match="nonce"):
        make_request(fp, label="x", nonce=b"short")


def test_unicode_label_round_trips(fp: DeviceFingerprint) -> None:
    r = make_request(fp, label="医院 GPU 节点 ①", salt=SALT, now=NOW, nonce=NONCE)
    assert ActivationRequest.from_bytes(r.to_bytes()) == r


# --- JSON --------------------------------------------------------------------


def test_json_round_trip(request_obj: ActivationRequest) -> None:
    obj = request_obj.to_json()
    assert set(obj) == {
        "version",
        "label",
        "nonce",
        "created_at",
        "salt",
        "environment",
        "components",
    }
    assert ActivationRequest.from_json(json.loads(json.dumps(obj))) == request_obj
    assert ActivationRequest.from_bytes(request_obj.to_bytes()) == request_obj


def test_save_load(tmp_path: Path, request_obj: ActivationRequest) -> None:
    path = tmp_path / "request.json"
    request_obj.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ActivationRequest.load(path) == request_obj
    request_obj.save(str(path))  # overwrite keeps working
    assert ActivationRequest.load(str(path)) == request_obj


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ActivationRequest.load(tmp_path / "nope.json")


def test_from_json_sorts_components(request_obj: ActivationRequest) -> None:
    obj = request_obj.to_json()
    obj["components"].reverse()
    assert ActivationRequest.from_json(obj) == request_obj


def test_constructor_refuses_unsorted_components(request_obj: ActivationRequest) -> None:
    with pytest.raises(RequestFormatError, match="sorted"):
        ActivationRequest(
            **{**request_obj.__dict__, "components": tuple(reversed(request_obj.components))}
        )


def _mutate(obj: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    target: Any = obj
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return obj


_DELETE = object()
TWO_B64 = b64url(bytes(32))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("label",), _DELETE),
        (("extra",), 1),
        (("label",), 5),
        (("label",), ""),
        (("label",), "a\x00b"),
        (("nonce",), b64url(bytes(15))),
        (("nonce",), b64url(bytes(16)) + "=="),
        (("nonce",), "AAAAAAAAAAAAAAAAAAAAAB"),  # non-canonical trailing bits
        (("salt",), b64url(bytes(31))),
        (("salt",), "+" * 43),
        (("salt",), None),
        (("created_at",), "2026-11-23 12:30:45"),
        (("created_at",), "2026-11-23T12:30:45+01:00"),
        (("created_at",), "2026-13-40T12:30:45Z"),
        (("created_at",), 1700000000),
        (("environment",), "vm"),
        (("environment", "virtualization"), "hypervisor"),
        (("environment", "platform"), "freebsd"),
        (("environment", "details"), "kvm"),
        (("environment", "details"), [1]),
        (("environment", "details"), [""]),
        (("environment", "extra"), True),
        (("components",), []),
        (("components",), {}),
        (("components", 0), "x"),
        (("components", 0, "kind"), "Bad Kind"),
        (("components", 0, "kind"), 3),
        (("components", 0, "strength"), "medium"),
        (("components", 0, "strength"), ["strong"]),
        (("components", 0, "weight"), 0),
        (("components", 0, "weight"), True),
        (("components", 0, "weight"), 1.5),
        (("components", 0, "weight"), 101),
        (("components", 0, "digest"), "short"),
        (("components", 0, "secret"), _DELETE),
        (("components", 0, "extra"), "x"),
        (("components", 1, "digest"), None),
        (("version",), True),
        (("version",), "1"),
        (("version",), 1.0),
    ],
)
def test_strict_rejection(
    request_obj: ActivationRequest, path: tuple[Any, ...], value: Any
) -> None:
    bad = _mutate(request_obj.to_json(), path, value)
    with pytest.raises(RequestFormatError) as info:
        ActivationRequest.from_json(bad)
    assert isinstance(info.value, FormatError)
    assert info.value.exit_code == 3


def test_duplicate_component_rejected(request_obj: ActivationRequest) -> None:
    obj = request_obj.to_json()
    obj["components"].append(obj["components"][0])
    with pytest.raises(RequestFormatError, match="duplicate"):
        ActivationRequest.from_json(obj)
    # The same digest under another kind is a duplicate too.
    obj = request_obj.to_json()
    obj["components"][1]["digest"] = obj["components"][0]["digest"]
    with pytest.raises(RequestFormatError, match="duplicate"):
        ActivationRequest.from_json(obj)


@pytest.mark.parametrize("version", [0, 1, 3, 99])
def test_unsupported_version(request_obj: ActivationRequest, version: int) -> None:
    obj = request_obj.to_json()
    obj["version"] = version
    with pytest.raises(UnsupportedRequestVersionError) as info:
        ActivationRequest.from_json(obj)
    assert isinstance(info.value, UnsupportedVersionError)
    assert isinstance(info.value, RequestFormatError)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b"null",
        b"\xff\xfe{}",
        b'{"version": NaN}',
        b'{"version": 1, "version": 1}',
        b"[" * 100_000,
        b" " * (1 << 20 + 1),
    ],
)
def test_from_bytes_rejects(data: bytes) -> None:
    with pytest.raises(RequestFormatError):
        ActivationRequest.from_bytes(data)


def test_duplicate_json_key_is_refused(request_obj: ActivationRequest) -> None:
    text = request_obj.to_bytes().decode()
    text = text.replace('"label": "lab-gpu-01"', '"label": "lab-gpu-01", "label": "other"')
    with pytest.raises(RequestFormatError, match="duplicate key"):
        ActivationRequest.from_bytes(text.encode())


def test_request_component_repr_hides_secret() -> None:
    c = RequestComponent("net.mac", "strong", 2, TWO_B64, b64url(b"\x01" * 32))
    assert b64url(b"\x01" * 32) not in repr(c)
    assert TWO_B64 in repr(c)


# --- property-based ----------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=60),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(obj, dict):
        for key, value in obj.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            found += _paths(value, (*prefix, index))
    return found


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_single_mutation_parses_or_raises_format_error(
    request_obj: ActivationRequest, data: st.DataObject
) -> None:
    obj = request_obj.to_json()
    path = data.draw(st.sampled_from(_paths(obj)))
    value = data.draw(json_values | st.just(_DELETE))
    mutated = _mutate(obj, path, value)
    try:
        parsed = ActivationRequest.from_json(mutated)
    except RequestFormatError:
        return
    # Whatever survives validation re-serializes to something that parses the same.
    assert ActivationRequest.from_json(parsed.to_json()) == parsed


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    with pytest.raises(RequestFormatError):
        ActivationRequest.from_bytes(data)


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(
        st.text(min_size=1, max_size=80).filter(lambda v: "\0" not in v),
        min_size=1,
        max_size=6,
        unique=True,
    ),
    label=st.text(min_size=1, max_size=200).filter(lambda s: s.strip() and s.isprintable()),
    salt=st.binary(min_size=32, max_size=32),
)
def test_round_trip_property(values: list[str], label: str, salt: bytes) -> None:
    fp = collect(StaticSource([Component.of("dmi.board_serial", v) for v in values], ENV))
    r = make_request(fp, label=label, salt=salt, now=NOW)
    assert ActivationRequest.from_bytes(r.to_bytes()) == r
    assert len({c.digest for c in r.components}) == len(values)
