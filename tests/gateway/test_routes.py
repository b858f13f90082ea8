"""The routes file: validation names the field; longest prefix; keys; rate strings."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from modelseal.gateway import (
    Rate,
    RoutesFileError,
    hash_key,
    load_config,
    new_api_key,
    parse_config,
)
from tests.serve._deployment import run_cli

DIGEST = "ab" * 32


def base() -> dict[str, Any]:
    return {
        "version": 1,
        "routes": [
            {
                "id": "demo",
                "name": "Demo",
                "prefix": "/demo",
                "forward_url": "http://127.0.0.1:8080",
            },
            {
                "id": "demo-v2",
                "prefix": "/demo/v2",
                "forward_url": "http://127.0.0.1:8081/base",
                "strip_prefix": False,
                "decrypt": False,
                "timeout_s": 2,
            },
        ],
        "api_keys": [{"name": "alice", "sha256": DIGEST, "routes": ["demo"], "rate_limit": "50/s"}],
    }


def test_a_valid_file_and_longest_prefix_matching() -> None:
    cfg = parse_config(base())
    assert cfg.match("/demo/v2/models/m/infer").id == "demo-v2"  # type: ignore[union-attr]
    assert cfg.match("/demo/x").id == "demo"  # type: ignore[union-attr]
    assert cfg.match("/demo").id == "demo"  # type: ignore[union-attr]
    assert cfg.match("/demox/v2") is None
    assert cfg.match("/other") is None
    demo, v2 = cfg.match("/demo"), cfg.match("/demo/v2")
    assert demo is not None and v2 is not None
    assert demo.upstream_path("/demo/v2/models/m/infer") == "/v2/models/m/infer"
    assert demo.upstream_path("/demo") == "/"
    assert v2.upstream_path("/demo/v2/models") == "/base/demo/v2/models"
    assert (demo.strip_prefix, demo.decrypt, demo.timeout_s) == (True, True, 30.0)
    key = cfg.keys_by_hash[DIGEST]
    assert key.rate_limit == Rate(50, 1)
    assert key.allows("demo") and not key.allows("demo-v2")


def mutate(path: str, value: Any) -> dict[str, Any]:
    doc = base()
    target: Any = doc
    parts = path.split(".")
    for p in parts[:-1]:
        target = target[int(p)] if p.isdigit() else target[p]
    last = parts[-1]
    if value is KeyError:
        del target[last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("version", 2, "version: 2 is not supported"),
        ("version", KeyError, "version: required"),
        ("routes", "x", "routes: must be a list"),
        ("routes.0.prefix", "demo", "routes[0].prefix: must start with /"),
        ("routes.0.prefix", "/demo/", "routes[0].prefix"),
        ("routes.0.prefix", "/a/../b", "routes[0].prefix: must be a plain path"),
        ("routes.0.prefix", "/metrics", "routes[0].prefix: /metrics is the gateway's own"),
        ("routes.1.prefix", "/demo", "routes[1].prefix: '/demo' is also routes[0].prefix"),
        ("routes.1.id", "demo", "routes[1].id: 'demo' is also routes[0].id"),
        ("routes.0.id", "Demo!", "routes[0].id: must match"),
        ("routes.0.id", KeyError, "routes[0].id: required"),
        ("routes.0.forward_url", "https://x", "routes[0].forward_url: must be http://"),
        ("routes.0.forward_url", "http://h:99999", "routes[0].forward_url: has an invalid port"),
        # review finding: urlsplit's ValueError escaped, killing hot reload for good
        ("routes.0.forward_url", "http://[::1", "routes[0].forward_url: is not a valid URL"),
        ("routes.0.timeout_s", 0, "routes[0].timeout_s: must be a number"),
        ("routes.0.decrypt", "yes", "routes[0].decrypt: must be true or false"),
        ("routes.0.colour", "red", "routes[0].colour: unknown field"),
        ("api_keys.0.sha256", "XYZ", "api_keys[0].sha256: must match"),
        ("api_keys.0.routes", ["nope"], "api_keys[0].routes[0]: no route with id 'nope'"),
        ("api_keys.0.routes", [], "api_keys[0].routes: must be a non-empty list"),
        ("api_keys.0.rate_limit", "fast", "api_keys[0].rate_limit: must look like"),
        ("api_keys.0.rate_limit", "0/s", "api_keys[0].rate_limit: must allow"),
        ("api_keys.0", "alice", "api_keys[0]: must be a mapping"),
        # review: every bad file is a RoutesFileError (exit 3), never a bug exit
        ("version", True, "version: True is not supported"),
        ("version", 1.0, "version: 1.0 is not supported"),
        ("routes.0.forward_url", "http://u:pw@h:1", "routes[0].forward_url: must not hold a user"),
        ("routes.0.forward_url", "http://a b:1", "routes[0].forward_url: has an invalid host"),
        ("routes.0.forward_url", "http://h\n:1", "routes[0].forward_url: has an invalid host"),
        ("routes.0.forward_url", "http://h:0", "routes[0].forward_url: has an invalid port"),
        ("routes.0.prefix", "/a\nb", "routes[0].prefix: must be a plain path"),
        ("routes.0.prefix", "/a\\b", "routes[0].prefix: must be a plain path"),
        ("routes.0.prefix", "/a b", "routes[0].prefix: must be a plain path"),
        ("api_keys.0.rate_limit", "9" * 30 + "/s", "api_keys[0].rate_limit: must allow at most"),
    ],
)
def test_errors_name_the_field(path: str, value: Any, message: str) -> None:
    with pytest.raises(RoutesFileError) as info:
        parse_config(mutate(path, value))
    assert message in str(info.value)


def test_duplicate_keys_and_names() -> None:
    doc = base()
    doc["api_keys"].append(dict(doc["api_keys"][0], name="bob"))
    with pytest.raises(RoutesFileError, match=r"api_keys\[1\].sha256: the same key"):
        parse_config(doc)
    doc["api_keys"][1] = dict(doc["api_keys"][0], sha256="cd" * 32)
    with pytest.raises(RoutesFileError, match=r"api_keys\[1\].name: 'alice' is also"):
        parse_config(doc)


def test_load_config_file_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("version: 1\nroutes: [\n")
    with pytest.raises(RoutesFileError, match="not valid YAML at line"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(RoutesFileError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(base()))
    assert len(load_config(tmp_path / "ok.yaml").routes) == 2
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump(base()).encode())
    assert len(load_config(tmp_path / "bom.yaml").routes) == 2


def bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """One routes file per way of being broken, and the message it must give."""
    cases: dict[str, tuple[str | bytes | None, str]] = {
        "yaml": ("version: 1\nroutes: [\n", "not valid YAML at line"),
        "not_utf8": (b"version: 1\nroutes: []\nx: \xff\n", "not UTF-8"),
        "deep": ("[" * 20000 + "]" * 20000, "nested too deeply"),
        "big_int": ("version: 1" + "0" * 5000 + "\nroutes: []\n", "not valid YAML"),
        "empty": ("", "routes file: must be a mapping"),
        "field": (yaml.safe_dump(mutate("routes.0.prefix", "demo")), "routes[0].prefix"),
        "oversized": (None, "is over"),
        "directory": (None, "not a regular file"),
        "fifo": (None, "not a regular file"),
        "missing": (None, "cannot read"),
    }
    out = {}
    for name, (content, message) in cases.items():
        path = tmp_path / f"{name}.yaml"
        if isinstance(content, str):
            path.write_text(content)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        elif name == "oversized":
            with path.open("wb") as fh:
                fh.truncate(17 * 1024 * 1024)  # sparse: costs no disk
        elif name == "directory":
            path.mkdir()
        elif name == "fifo":
            os.mkfifo(path)  # reading one would block the gateway's start for good
        out[name] = (path, message)
    return out


def test_every_broken_file_is_a_routes_file_error(tmp_path: Path) -> None:
    for name, (path, message) in bad_files(tmp_path).items():
        with pytest.raises(RoutesFileError) as info:
            load_config(path)
        assert message in str(info.value), name
        assert RoutesFileError.exit_code == 3


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("50/s", Rate(50, 1)),
        ("600/min", Rate(600, 60)),
        (" 10 / h ", Rate(10, 3600)),
        ("1/second", Rate(1, 1)),
    ],
)
def test_rates(text: str, rate: Rate) -> None:
    assert Rate.parse(text) == rate
    assert Rate.parse(str(rate)) == rate


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=12,
    )
)
def test_any_document_is_valid_or_a_routes_file_error(doc: Any) -> None:
    with contextlib.suppress(RoutesFileError):
        parse_config(doc)


def test_keys_are_random_and_stored_as_sha256() -> None:
    a, ha = new_api_key()
    b, _ = new_api_key()
    assert a != b and a.startswith("msk_") and len(a) > 40
    assert ha == hash_key(a) and len(ha) == 64


def test_keys_create_cli_prints_the_key_once_and_an_entry_that_validates(tmp_path: Path) -> None:
    r = run_cli(
        "gateway",
        "keys",
        "create",
        "--name",
        "alice",
        "--routes",
        "demo",
        "--rate-limit",
        "50/s",
        "--json",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["entry"]["sha256"] == hash_key(out["key"])
    doc = base()
    doc["api_keys"] = [out["entry"]]
    cfg = parse_config(doc)
    assert cfg.key_for(out["key"]).name == "alice"  # type: ignore[union-attr]
    human = run_cli("gateway", "keys", "create", "--name", "bob", "--routes", "demo", cwd=tmp_path)
    assert human.returncode == 0
    assert "msk_" in human.stdout and "sha256:" in human.stdout
    bad = run_cli(
        "gateway",
        "keys",
        "create",
        "--name",
        "bob",
        "--routes",
        "demo",
        "--rate-limit",
        "lots",
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")


def test_a_passphrase_protected_envelope_key(tmp_path: Path) -> None:
    from modelseal.crypto import generate_private_key
    from modelseal.errors import KeyFileError
    from modelseal.gateway.proxy import build_gateway

    key = generate_private_key("sm2")
    key.save(tmp_path / "gw.pem", passphrase="s3cret")
    (tmp_path / "routes.yaml").write_text(yaml.safe_dump(base()))
    gw = build_gateway(
        str(tmp_path / "routes.yaml"), str(tmp_path / "gw.pem"), None, passphrase="s3cret"
    )
    assert gw.opener is not None and gw.opener.key_id == key.key_id
    with pytest.raises(KeyFileError):
        build_gateway(str(tmp_path / "routes.yaml"), str(tmp_path / "gw.pem"), None)
