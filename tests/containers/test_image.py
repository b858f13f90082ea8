"""Image building and the podman backend without running podman: sources, context, arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelseal.deploy import load_bundle, manifests
from modelseal.deploy.backends import BackendError, BackendUnavailableError, get_backend
from modelseal.deploy.backends.podman import PodmanBackend, listening_ports
from modelseal.image import launch
from modelseal.image.base import BaseImageError, apt_mirror, base_ref
from modelseal.image.build import (
    USER_UID,
    ImageRecipe,
    containerfile,
    render_context,
    requirements,
    runtimes_for,
)
from modelseal.image.errors import ImageSpecError, PodmanNotInstalledError
from modelseal.image.podman import CONTAINERS_CONF, Podman
from modelseal.image.spec import parse_image_spec
from tests.containers.conftest import need_podman

REPO = Path(__file__).resolve().parents[2]

# --- the apt mirror --------------------------------------------------------------------


def test_the_mirror_comes_from_deb822_sources_skipping_disabled_ones(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "a-disabled.sources").write_text(
        "Types: deb\nURIs: http://disabled.example/debian\nSuites: bookworm\n"
        "Components: main\nEnabled: no\n"
    )
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main contrib\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    (tmp_path / "sources.list.d" / "x.sources.disabled-by-farm").write_text(
        "Types: deb\nURIs: http://ignored.example/debian\nSuites: bookworm\nComponents: main\n"
    )
    assert apt_mirror(apt_dir=tmp_path) == "http://mirror.example/debian"
    with pytest.raises(BaseImageError, match="no apt source for Debian trixie"):
        apt_mirror("trixie", apt_dir=tmp_path)


def test_the_mirror_comes_from_one_line_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://one.example/debian "
        "bookworm main non-free\n"
    )
    assert apt_mirror(apt_dir=tmp_path) == "http://one.example/debian"
    with pytest.raises(BaseImageError):
        apt_mirror(apt_dir=tmp_path / "missing")


def test_the_base_tag_changes_with_the_recipe() -> None:
    assert base_ref().startswith("localhost/modelseal/base:bookworm-")
    assert base_ref("trixie") != base_ref()


# --- the image spec --------------------------------------------------------------------


def _spec(**body: Any) -> str:
    data = {"apiVersion": "modelseal/v1", "kind": "ModelImage", "metadata": {"name": "demo"}}
    return yaml.safe_dump({**data, "spec": body})


def test_the_image_spec_is_strict_and_names_each_field() -> None:
    ok = parse_image_spec(_spec(tag="localhost/a/b:1", model={"file": "m.mseal"}))
    assert ok.spec.port == 8080 and ok.spec.allow_plain is False
    bad = {
        "spec.model: Value error, needs exactly one of file or mountPath": _spec(
            model={"file": "m.mseal", "mountPath": "/models/m.mseal"}
        ),
        "spec.tag": _spec(tag="Not A Tag", model={"file": "m"}),
        "spec.handler": _spec(model={"file": "m"}, handler="no colon"),
        "spec.runtimes[0]": _spec(model={"file": "m"}, runtimes=["tensorflow"]),
        "spec.colour": _spec(model={"file": "m"}, colour="red"),
        "spec.port": _spec(model={"file": "m"}, port="8080"),
        "spec.model.mountPath": _spec(model={"mountPath": "relative/path"}),
    }
    for needle, text in bad.items():
        with pytest.raises(ImageSpecError) as info:
            parse_image_spec(text, source="image.yaml")
        assert needle.split(":")[0] in str(info.value), (needle, str(info.value))
        assert str(info.value).startswith("image.yaml: ")
    for text in ("a: 1\na: 2\n", "[1, 2]", "---\na: 1\n---\nb: 2\n", ": :"):
        with pytest.raises(ImageSpecError):
            parse_image_spec(text)


def test_runtimes_come_from_the_model_and_torch_only_on_request(tmp_path: Path) -> None:
    assert runtimes_for(None, "onnx") == ("onnx",)
    assert runtimes_for(None, "safetensors") == ("safetensors",)
    with pytest.raises(ImageSpecError, match="--runtime torch"):
        runtimes_for(None, "torchscript")
    reqs = " ".join(requirements(REPO, ("onnx",)))
    assert "onnxruntime" in reqs and "uvicorn" in reqs and "cryptography" in reqs
    assert "torch" not in reqs and "fastapi" not in reqs
    with pytest.raises(ImageSpecError):
        requirements(REPO, ("tensorflow",))


# --- the Containerfile and the build context ---------------------------------------------


def test_the_containerfile_runs_serve_as_a_user_under_tini_and_holds_no_license() -> None:
    recipe = ImageRecipe(
        tag="localhost/acme/demo:1",
        model_file=Path("/src/demo.mseal"),
        handler="handlers.clf:Classifier",
        trust_file=Path("/src/vendor.pub"),
    )
    text = containerfile(recipe, "localhost/modelseal/base:bookworm-x", "modelseal-0.1.0.whl")
    assert text.splitlines()[1] == "FROM localhost/modelseal/base:bookworm-x"
    assert f"USER {USER_UID}:{USER_UID}" in text
    assert '"/usr/bin/tini", "-g", "--"' in text and '"modelseal.image.launch"' in text
    assert "COPY model/ /opt/model/" in text
    assert 'ENV MODELSEAL_MODEL="/opt/model/demo.mseal"' in text
    assert 'ENV MODELSEAL_IMAGE_TRUST="/opt/modelseal/trust/vendor.pub"' in text
    assert 'ENV MODELSEAL_IMAGE_HANDLER="handlers.clf:Classifier"' in text
    assert "license" not in text.replace("no license", "").lower()
    assert "--mount=type=bind,source=deps" in text  # wheels never land in a layer
    mounted = containerfile(
        ImageRecipe(tag="a:1", model_mount="/models/demo.mseal"), "base", "m.whl"
    )
    assert "COPY model/" not in mounted and 'MODELSEAL_MODEL="/models/demo.mseal"' in mounted


def test_the_context_holds_the_model_and_public_key_only(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "m.mseal").write_bytes(b"sealed")
    (tmp_path / "in" / "vendor.pub").write_text("-----BEGIN PUBLIC KEY-----\n")
    handlers = tmp_path / "in" / "handlers"
    (handlers / "__pycache__").mkdir(parents=True)
    (handlers / "clf.py").write_text("class C: ...\n")
    (handlers / "__pycache__" / "clf.cpython-311.pyc").write_bytes(b"x")
    deps = tmp_path / "deps"
    deps.mkdir()
    (deps / "numpy-2-cp311.whl").write_bytes(b"w")
    (deps / "requirements.txt").write_text("numpy\n")
    wheel = tmp_path / "modelseal-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"w")
    recipe = ImageRecipe(
        tag="a:1",
        model_file=tmp_path / "in" / "m.mseal",
        trust_file=tmp_path / "in" / "vendor.pub",
        handler_paths=(handlers,),
    )
    context = tmp_path / "ctx"
    digest = render_context(recipe, context, base="b", deps=deps, wheel=wheel)
    files = sorted(str(p.relative_to(context)) for p in context.rglob("*") if p.is_file())
    assert files == [
        "Containerfile",
        "app/modelseal-0.1.0-py3-none-any.whl",
        "deps/numpy-2-cp311.whl",
        "deps/requirements.txt",
        "handlers/handlers/clf.py",
        "model/m.mseal",
        "trust/vendor.pub",
    ]
    assert all(oct(p.stat().st_mode)[-3:] in ("644", "755") for p in context.rglob("*"))
    again = render_context(recipe, tmp_path / "ctx2", base="b", deps=deps, wheel=wheel)
    assert again == digest
    # A rebuilt modelseal wheel changes its RUN line: buildah keys the layer
    # cache on the text, and would otherwise keep the old modelseal installed.
    wheel.write_bytes(b"changed")
    changed = render_context(recipe, tmp_path / "ctx3", base="b", deps=deps, wheel=wheel)
    assert changed != digest
    old, new = ((c / "Containerfile").read_text() for c in (context, tmp_path / "ctx3"))
    run = next(line for line in old.splitlines() if "source=app" in line)
    assert "WHEEL_SHA256=" in run and run not in new
    deps_run = next(line for line in old.splitlines() if "source=deps" in line)
    assert "WHEELS_SHA256=" in deps_run and deps_run in new


# --- the launcher ------------------------------------------------------------------------


def test_the_launcher_uses_the_manifests_paths() -> None:
    assert f"{manifests.LICENSE_DIR}/{manifests.LICENSE_KEY}" == launch.LICENSE_FILE
    assert f"{manifests.KEYS_DIR}/{manifests.ENVELOPE_KEY}" == launch.ENVELOPE_KEY_FILE


def test_the_launcher_refuses_what_is_missing_in_one_line(tmp_path: Path) -> None:
    model = tmp_path / "m.mseal"
    model.write_bytes(b"x")
    lic = tmp_path / "license.jwt"
    lic.write_text("x")
    trust = tmp_path / "vendor.pub"
    trust.write_text("x")
    env = {"MODELSEAL_MODEL": str(model)}
    with pytest.raises(launch.LaunchError, match="no model at"):
        launch.serve_argv({}, [])
    with pytest.raises(launch.LaunchError, match="no license at /etc/modelseal/license"):
        launch.serve_argv(env, [])
    env["MODELSEAL_LICENSE"] = str(lic)
    with pytest.raises(launch.LaunchError, match="no vendor key"):
        launch.serve_argv(env, [])
    env["MODELSEAL_IMAGE_TRUST"] = str(trust)
    with pytest.raises(launch.LaunchError, match="answers only in envelopes"):
        launch.serve_argv(env, [])
    env["MODELSEAL_ENVELOPE_KEY"] = str(tmp_path / "missing.pub")
    with pytest.raises(launch.LaunchError, match="no gateway envelope key at"):
        launch.serve_argv(env, [])
    env["MODELSEAL_ENVELOPE_KEY"] = str(trust)
    env["MODELSEAL_IMAGE_NAME"] = "clf"
    argv = launch.serve_argv(env, ["--workers", "2"])
    assert argv == [
        "serve",
        str(model),
        "--license",
        str(lic),
        "--trust",
        str(trust),
        "--envelope-key",
        str(trust),
        "--name",
        "clf",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
        "--workers",
        "2",
    ]
    del env["MODELSEAL_ENVELOPE_KEY"]
    env["MODELSEAL_IMAGE_ALLOW_PLAIN"] = "1"
    assert "--envelope-key" not in launch.serve_argv(env, [])


def test_the_launcher_prints_one_line_and_exits_3(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "modelseal.image.launch"],
        env={"PYTHONPATH": str(REPO / "src"), "MODELSEAL_MODEL": str(tmp_path / "none")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 3
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: no model at")


# --- the backend's podman arguments, with a recording podman -------------------------------


class _Recorder(Podman):
    """Answers like podman for an image that exists; records every command."""

    def __init__(self, tmp: Path, *, image: bool = True) -> None:
        self.executable = "/bin/false"
        self.state_dir = tmp
        self.containers_conf = tmp / "containers.conf"
        self.calls: list[list[str]] = []
        self.image = image
        self.containers: list[dict[str, Any]] = []

    def run(self, args: Any, **kw: Any) -> subprocess.CompletedProcess[str]:
        args = list(args)
        self.calls.append(args)
        out, code = "", 0
        if args[:2] == ["image", "inspect"]:
            info = {
                "Id": "abc",
                "Config": {"User": "10001:10001", "Labels": {"io.modelseal.base": "b"}},
            }
            out, code = (json.dumps([info]), 0) if self.image else ("", 125)
        elif args[0] == "ps":
            out = json.dumps(self.containers)
        elif args[0] == "run":
            labels = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--label")
            self.containers = [{"Id": "c1", "Labels": labels, "State": "running"}]
        elif args[:2] == ["container", "inspect"]:
            out = json.dumps([{"State": {"Status": "running"}, "RestartCount": 0}])
        return subprocess.CompletedProcess(args, code, out, "")


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    from modelseal.crypto import generate_private_key
    from modelseal.license import issue_license

    key = generate_private_key("ed25519")
    token = issue_license(signing_key=key, issuer="acme", customer="c", audience=["m"]).token
    (tmp_path / "license.jwt").write_text(token)
    generate_private_key("sm2").public_key().save(tmp_path / "gw.pub")
    key.public_key().save(tmp_path / "vendor.pub")
    spec = {
        "apiVersion": "modelseal/v1",
        "kind": "ModelDeployment",
        "metadata": {"name": "demo", "namespace": "models"},
        "spec": {
            "model": {"name": "demo", "version": "1"},
            "image": "localhost/acme/demo:1",
            "extraPorts": [{"name": "metrics", "containerPort": 9100}],
            "env": {"LOG_LEVEL": "info"},
            "resources": {
                "requests": {"memory": "256Mi"},
                "limits": {"cpu": "1500m", "memory": "1Gi"},
            },
            "license": {"file": "license.jwt"},
            "envelopeKey": {"file": "gw.pub"},
            "trust": {"file": "vendor.pub"},
        },
    }
    (tmp_path / "deploy.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path


def test_apply_mounts_the_license_read_only_and_publishes_on_loopback(
    spec_dir: Path, tmp_path: Path
) -> None:
    recorder = _Recorder(tmp_path / "podman")
    backend = PodmanBackend(state_dir=tmp_path / "state", podman=recorder)
    backend.apply(load_bundle(spec_dir / "deploy.yaml"), [30100, 30101])
    run = next(c for c in recorder.calls if c[0] == "run")
    text = " ".join(run)
    folder = tmp_path / "state" / "deployments" / "models" / "demo"
    assert f"{folder}/license.jwt:/etc/modelseal/license/license.jwt:ro" in text
    assert f"{folder}/envelope-key.pub:/etc/modelseal/keys/envelope-key.pub:ro" in text
    assert f"{folder}/trust.pub:/etc/modelseal/keys/trust.pub:ro" in text
    assert "--publish 127.0.0.1:30100:8080/tcp" in text
    assert "--publish 127.0.0.1:30101:9100/tcp" in text
    assert "--pull=never" in run and "--cap-drop=all" in run
    assert "--memory=1073741824" in run and "--memory-reservation=268435456" in run
    assert "--cpus=1.5" in run and "--restart=on-failure:5" in run
    assert "--env LOG_LEVEL=info" in text
    assert "--env MODELSEAL_LICENSE=/etc/modelseal/license/license.jwt" in text
    assert "--init" not in run  # the image has tini
    assert run[-1] == "localhost/acme/demo:1"
    assert (folder / "license.jwt").read_text() == (spec_dir / "license.jwt").read_text()
    assert oct(folder.stat().st_mode)[-3:] == "700"
    hostname = run[run.index("--hostname") + 1]
    assert hostname == backend.hostname("models", "demo")
    assert hostname != backend.hostname("models", "demo2")
    assert hostname != PodmanBackend(state_dir=tmp_path / "other", podman=recorder).hostname(
        "models", "demo"
    )


def test_apply_refuses_what_podman_cannot_run(spec_dir: Path, tmp_path: Path) -> None:
    bundle = load_bundle(spec_dir / "deploy.yaml")
    backend = PodmanBackend(state_dir=tmp_path / "s", podman=_Recorder(tmp_path / "p"))
    with pytest.raises(BackendError, match="2 port"):
        backend.apply(bundle, [30100])
    missing = PodmanBackend(state_dir=tmp_path / "s", podman=_Recorder(tmp_path, image=False))
    with pytest.raises(BackendError, match="never pulled"):
        missing.apply(bundle, [30100, 30101])
    many = bundle.deployment.model_copy(
        update={"spec": bundle.deployment.spec.model_copy(update={"replicas": 3})}
    )
    with pytest.raises(BackendError, match="one replica"):
        backend.apply(type(bundle)(many, bundle.license, bundle.envelope_key), [1, 2])
    dry = backend.apply(bundle, [30100, 30101], dry_run=True)
    assert dry.phase == "Pending" and "dry run" in dry.message
    assert not (tmp_path / "s" / "deployments").exists()


def test_without_podman_the_backend_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PodmanNotInstalledError, match="apt-get install"):
        Podman(state_dir=tmp_path)
    with pytest.raises(BackendUnavailableError, match="podman is not installed"):
        get_backend("podman", state_dir=tmp_path)


def test_podman_gets_our_containers_conf(tmp_path: Path) -> None:
    need_podman()
    podman = Podman(state_dir=tmp_path)
    assert podman.env["CONTAINERS_CONF"] == str(tmp_path / "containers.conf")
    text = (tmp_path / "containers.conf").read_text()
    assert text == CONTAINERS_CONF and 'runtime = "runc"' in text
    assert '"nofile=20000:20000"' in text


def test_listening_ports_are_read_from_proc_net(tmp_path: Path) -> None:
    header = "  sl  local_address rem_address   st\n"
    (tmp_path / "tcp").write_text(
        header
        + "   0: 0100007F:1F90 00000000:0000 0A 0 0\n"  # 8080 LISTEN
        + "   1: 0100007F:7530 0100007F:C350 01 0 0\n"  # 30000 ESTABLISHED: not a listener
    )
    (tmp_path / "udp6").write_text(header + "   0: 00000000000000000000000000000000:2382 0 07 0\n")
    assert listening_ports(tmp_path) == {8080, 9090}


# --- the command line ------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """In-process (a subprocess costs seconds on a loaded machine), shaped like one."""
    from typer.testing import CliRunner

    from modelseal.cli import _common, app

    _common.json_mode = False
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, ["image", *args], env={"COLUMNS": "200"})
    finally:
        os.chdir(old)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def test_image_build_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "image.yaml").write_text(_spec(tag="localhost/a/b:1", model={"file": "nope"}))
    (tmp_path / "bad.yaml").write_text("kind: Foo\n")
    cases = [
        (("build", "model.mseal"), 2, "--tag NAME:VERSION is required"),
        (("build", "model.mseal", "--tag", "a:1"), 3, "no such file: model.mseal"),
        (("build", "bad.yaml"), 3, "bad.yaml: apiVersion: is required"),
        (("build", "image.yaml"), 3, "spec.model.file: no such file"),
        (("build", "image.yaml", "--name", "x"), 2, "--name: with a spec, say it in the spec"),
        (("request", "a:1", "--deployment", "nons", "--out", "-"), 2, "NAMESPACE/NAME"),
    ]
    for args, code, message in cases:
        proc = _cli(*args, cwd=tmp_path)
        assert proc.returncode == code, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and message in proc.stderr, (args, proc.stderr)
