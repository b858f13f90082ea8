"""Issue #8 item 3: device binding transplanted through a user + mount namespace.

The attack, run for real: ``unshare -Urmu`` (no root needed where
unprivileged user namespaces are allowed), bind-mount copies of another
machine's ``/etc/machine-id``, ``/proc/cpuinfo`` and root-disk serial over
this machine's, set the hostname, and verify a license bound to that other
machine. It opened before; now the view is a container (refused where the
license says ``allow_container: false``) and the overlaid files give no
component at all (refused either way).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from modelseal.crypto import generate_private_key
from modelseal.device import (
    Component,
    Environment,
    LinuxSource,
    StaticSource,
    collect,
    make_request,
)
from modelseal.device._view import HostView
from modelseal.device.linux import cpu_identity
from modelseal.license import issue_license

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

FAKE_MACHINE_ID = "0123456789abcdef0123456789abcdef"
FAKE_SERIAL = "ORIGINAL-DISK-7731"
FAKE_HOST = "original-host"


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-Urmu", "true"], capture_output=True, timeout=10, check=False
    )
    return probe.returncode == 0


needs_unshare = pytest.mark.skipif(
    not _unshare_works(), reason="unshare -Urmu is not available or user namespaces are disabled"
)


def _serial_file() -> Path | None:
    disk = LinuxSource()._root_block_device()
    if disk is None:
        return None
    for name in ("device/serial", "serial", "wwid", "device/wwid"):
        if (disk / name).is_file():
            return (disk / name).resolve()
    return None


def _in_namespace(tmp: Path, command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``command`` where this machine presents the 'original' machine's values."""
    (tmp / "machine-id").write_text(FAKE_MACHINE_ID + "\n")
    cpuinfo = (
        Path("/proc/cpuinfo").read_text().replace("model name", "model name\t: Original 9000\n#")
    )
    (tmp / "cpuinfo").write_text(cpuinfo)
    (tmp / "serial").write_text(FAKE_SERIAL + "\n")
    mounts = [
        f"mount --bind {tmp / 'machine-id'} /etc/machine-id",
        f"mount --bind {tmp / 'cpuinfo'} /proc/cpuinfo",
    ]
    serial = _serial_file()
    if serial is not None:
        mounts.append(f"mount --bind {tmp / 'serial'} {serial}")
    script = " && ".join([*mounts, f"hostname {FAKE_HOST}", 'exec "$@"'])
    return subprocess.run(
        ["unshare", "-Urmu", "sh", "-c", script, "sh", *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )


@needs_unshare
def test_overlaid_components_and_the_user_namespace_are_seen(tmp_path: Path) -> None:
    code = (
        "import json; from modelseal.device import collect; fp = collect(); "
        "print(json.dumps({'env': fp.environment.virtualization, "
        "'details': list(fp.environment.details), "
        "'previews': [[c.kind, c.preview] for c in fp.components]}))"
    )
    r = _in_namespace(tmp_path, [sys.executable, "-c", code])
    assert r.returncode == 0, r.stderr
    import json

    seen = json.loads(r.stdout)
    assert seen["env"] == "container"
    assert "userns:uid_map" in seen["details"]
    assert any(d.startswith("overlay:") and d.endswith("machine-id") for d in seen["details"])
    assert "overlay:/proc/cpuinfo" in seen["details"]
    fake = {
        ("os.machine_id", Component.of("os.machine_id", FAKE_MACHINE_ID).preview),
        ("disk.root_serial", Component.of("disk.root_serial", FAKE_SERIAL).preview),
    }
    assert not fake & {tuple(p) for p in seen["previews"]}
    assert "cpu.id" not in {p[0] for p in seen["previews"]}


@needs_unshare
@pytest.mark.parametrize("allow_container", [False, True])
def test_a_license_bound_to_another_machine_does_not_open_in_a_namespace(
    tmp_path: Path, allow_container: bool
) -> None:
    # The "original" machine: the values the attacker copied, as its own source reads them.
    cpuinfo = (
        Path("/proc/cpuinfo").read_text().replace("model name", "model name\t: Original 9000\n#")
    )
    values = {
        "os.machine_id": FAKE_MACHINE_ID,
        "os.hostname": FAKE_HOST,
        "cpu.id": cpu_identity(cpuinfo),
    }
    if _serial_file() is not None:
        values["disk.root_serial"] = FAKE_SERIAL
    original = collect(
        StaticSource(
            [Component.of(k, v) for k, v in values.items() if v],
            Environment(virtualization="none", details=(), platform="linux"),
        )
    )
    key = generate_private_key("ed25519")
    key.public_key().save(tmp_path / "vendor.pub")
    issued = issue_license(
        signing_key=key,
        issuer="acme",
        customer="c",
        audience=["acme/ocr"],
        request=make_request(original, label="original"),
        valid_for=timedelta(days=1),
        threshold=len(values) - 1,  # tolerant: one component may change
        allow_container=allow_container,
    )
    (tmp_path / "license.jwt").write_text(issued.token)
    verify = [sys.executable, "-m", "modelseal.cli", "license", "verify"]
    r = _in_namespace(
        tmp_path,
        [
            *verify,
            str(tmp_path / "license.jwt"),
            "--trust",
            str(tmp_path / "vendor.pub"),
            "--device",
        ],
    )
    assert r.returncode == 15, (r.stdout, r.stderr)  # wrong device or environment
    assert ("does not allow containers" if not allow_container else "matches weight") in r.stderr


def test_the_host_view_is_clean_here() -> None:
    """On this machine, outside any namespace, nothing is flagged (no false container)."""
    view = HostView()
    assert view.proc_is_real()
    view.user_namespace()
    uid_map = Path("/proc/self/uid_map").read_text().split()
    if uid_map == ["0", "0", "4294967295"]:
        assert view.evidence == []
    assert view.read(Path("/proc/cpuinfo"), 1 << 20) is not None
    env = collect().environment
    assert not [d for d in env.details if d.startswith("overlay:")]


def test_a_fake_tree_is_not_checked_against_the_live_view(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "machine-id").write_text(FAKE_MACHINE_ID)
    comps = LinuxSource(tmp_path, env={}, gpus=list).components()
    assert [c.kind for c in comps] == ["os.machine_id"]


_KUBE_SCRIPT = """
import json, sys
from pathlib import Path
from modelseal.device import LinuxSource
root = Path(sys.argv[1])
def fetch(url, token, ca, timeout):
    return json.dumps({"kind": "Namespace", "metadata": {"name": "kube-system",
        "uid": "5c1b5e58-1f6e-4c1b-9e2a-0d7b7a1c2f3e"}}).encode()
env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
source = LinuxSource(root, env=env, kube_fetch=fetch, gpus=list, check_view=True)
print(json.dumps(sorted({c.kind for c in source.components()})))
"""


@needs_unshare
def test_no_cluster_uid_from_inside_a_user_namespace(tmp_path: Path) -> None:
    """A namespace's owner controls the service-account CA and the API address."""
    if HostView().in_user_namespace():
        pytest.skip("the tests themselves run in a user namespace: no outside to compare with")
    account = tmp_path / "root" / "var/run/secrets/kubernetes.io/serviceaccount"
    account.mkdir(parents=True)
    (account / "token").write_text("token")
    (account / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    argv = [sys.executable, "-c", _KUBE_SCRIPT, str(tmp_path / "root")]
    outside = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert outside.returncode == 0, outside.stderr
    assert "k8s.cluster_uid" in outside.stdout
    inside = _in_namespace(tmp_path, argv)
    assert inside.returncode == 0, inside.stderr
    assert "k8s.cluster_uid" not in inside.stdout
