"""Build a model service into an OCI image with podman: context, Containerfile, build.

The image holds the sealed model (or a mount point for it), the handler,
and modelseal installed from the project's own wheel, with its runtime
dependencies as wheels built on the host, pinned to the versions installed
here (the versions the tests ran). It holds no license and no key: the
runtime mounts those (``modelseal.image.launch``). It runs as a non-root
user, with tini as PID 1 so SIGTERM stops ``modelseal serve`` at once.

Layers are ordered from what changes least to what changes most (base,
user, dependencies, modelseal, handler, model), so a new model for the same
runtimes rebuilds in seconds from podman's layer cache. The dependency
wheels are bind-mounted into the ``RUN`` that installs them, never copied
into a layer: the image carries the installed packages only.

Measured (bench/RESULTS.md): an ONNX model image is ~420 MB (base 168 MB,
onnxruntime + numpy + onnx and the serve stack the rest).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Final

from modelseal.image.base import BaseImage, default_cache_dir, ensure_base_image
from modelseal.image.errors import ImageError, ImageSpecError
from modelseal.image.podman import Podman
from modelseal.image.spec import RUNTIMES_FOR_FRAMEWORK, ModelImage

#: The model's user: a fixed uid, so a Kubernetes ``runAsUser`` and file
#: modes on mounted Secrets can be written against it.
USER_UID: Final = 10001
MODEL_DIR: Final = "/opt/model"
HANDLERS_DIR: Final = "/opt/modelseal/handlers"
TRUST_DIR: Final = "/opt/modelseal/trust"
STATE_DIR: Final = "/var/lib/modelseal"
BUILD_TIMEOUT_S: Final = 900.0
PIP_TIMEOUT_S: Final = 600.0


@dataclass(frozen=True)
class ImageRecipe:
    """Everything one image is built from (files are host paths)."""

    tag: str
    #: The sealed model built into the image, or ``None`` when mounted at run time.
    model_file: Path | None = None
    #: Where ``modelseal serve`` finds the model inside the container.
    model_mount: str | None = None
    handler: str | None = None
    handler_paths: tuple[Path, ...] = ()
    name: str | None = None
    framework: str | None = None
    runtimes: tuple[str, ...] = ("onnx",)
    trust_file: Path | None = None
    port: int = 8080
    allow_plain: bool = False
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def model_path(self) -> str:
        if self.model_file is not None:
            return f"{MODEL_DIR}/{self.model_file.name}"
        assert self.model_mount is not None
        return self.model_mount


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    image_id: str
    #: The local manifest digest (``sha256:...``); a registry reports its own after a push.
    digest: str
    size_bytes: int
    base: str
    context_sha256: str

    def to_json(self) -> dict[str, object]:
        return {
            "tag": self.tag,
            "image_id": self.image_id,
            "digest": self.digest,
            "size_bytes": self.size_bytes,
            "base": self.base,
            "context_sha256": self.context_sha256,
            "reference": f"{self.tag}@{self.digest}" if self.digest else self.tag,
        }


# --- recipes from a spec or a model file ---------------------------------------------


def runtimes_for(model_file: Path | None, framework: str | None) -> tuple[str, ...]:
    """The extras a model needs, from ``framework`` or the sealed header's hint."""
    hint = framework
    if hint is None and model_file is not None:
        from modelseal.api import inspect

        hint = inspect(model_file).framework
    if hint is None:
        return ("onnx",)
    if hint in ("onnxruntime",):
        return ("onnx",)
    if hint in RUNTIMES_FOR_FRAMEWORK:
        return RUNTIMES_FOR_FRAMEWORK[hint]
    if hint in ("numpy",):
        return ()
    raise ImageSpecError(
        f"a {hint} model needs its framework in the image, which is large: "
        f"say so with --runtime {'torch' if hint.startswith('torch') else hint}"
    )


def recipe_from_spec(spec: ModelImage, base_dir: Path, *, tag: str | None = None) -> ImageRecipe:
    body = spec.spec
    final_tag = tag or body.tag
    if final_tag is None:
        raise ImageSpecError("spec.tag: no tag in the spec; give one or pass --tag NAME:VERSION")

    def resolve(name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else base_dir / path

    model_file = resolve(body.model.file) if body.model.file is not None else None
    if model_file is not None and not model_file.is_file():
        raise ImageSpecError(f"spec.model.file: no such file: {model_file}")
    trust = resolve(body.trust.file) if body.trust is not None else None
    if trust is not None and not trust.is_file():
        raise ImageSpecError(f"spec.trust.file: no such file: {trust}")
    handler_paths = tuple(resolve(p) for p in body.handler_paths)
    for i, p in enumerate(handler_paths):
        if not p.exists():
            raise ImageSpecError(f"spec.handlerPaths[{i}]: no such file or folder: {p}")
    runtimes = (
        tuple(body.runtimes)
        if body.runtimes is not None
        else runtimes_for(model_file, body.framework)
    )
    return ImageRecipe(
        tag=final_tag,
        model_file=model_file,
        model_mount=body.model.mount_path,
        handler=body.handler,
        handler_paths=handler_paths,
        name=body.name,
        framework=body.framework,
        runtimes=runtimes,
        trust_file=trust,
        port=body.port,
        allow_plain=body.allow_plain,
    )


# --- wheels ------------------------------------------------------------------------


def project_dir() -> Path:
    """The source tree this modelseal runs from; a wheel install has none."""
    import modelseal

    root = Path(modelseal.__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        try:
            name = tomllib.loads(pyproject.read_text()).get("project", {}).get("name")
        except (OSError, tomllib.TOMLDecodeError):
            name = None
        if name == "modelseal":
            return root
    raise ImageError(
        "modelseal is not running from its source tree, so its wheel cannot be built: "
        "run from a checkout (pip install -e .) or pass the project folder"
    )


def requirements(project: Path, runtimes: Sequence[str]) -> list[str]:
    """Core dependencies, the ``serve`` extra and one extra per runtime, from pyproject."""
    data = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    extras: dict[str, list[str]] = data.get("optional-dependencies", {})
    out = list(data.get("dependencies", []))
    for extra in ("serve", *runtimes):
        if extra not in extras:
            raise ImageSpecError(f"runtime {extra!r} is not an extra of modelseal")
        out += extras[extra]
    return list(dict.fromkeys(out))


def _constraints() -> str:
    """The versions installed here, as pip constraints: the image runs what was tested."""
    lines: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() != "modelseal":
            lines.setdefault(name.lower(), f"{name}=={dist.version}")
    return "\n".join(sorted(lines.values())) + "\n"


def _pip(args: list[str], what: str) -> None:
    # A fixed SOURCE_DATE_EPOCH makes modelseal's wheel byte-identical for
    # identical sources, so an unchanged modelseal keeps its cached layer.
    env = {**os.environ, "SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH", "315532800")}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ImageError(f"{what}: pip did not finish in {PIP_TIMEOUT_S:.0f}s") from None
    if proc.returncode != 0:
        lines = [
            ln
            for ln in proc.stderr.strip().splitlines()
            if ln.strip() and not ln.startswith("WARNING")
        ]
        raise ImageError(
            f"{what} failed: {lines[-1] if lines else 'pip exit ' + str(proc.returncode)}"
        )


def dependency_wheels(reqs: Sequence[str], cache_dir: Path) -> Path:
    """Wheels for ``reqs`` pinned to this environment, cached by their hash."""
    constraints = _constraints()
    key = hashlib.sha256(("\n".join(reqs) + "\n--\n" + constraints).encode()).hexdigest()[:16]
    target = cache_dir / "wheels" / key
    if (target / "requirements.txt").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:
        (tmp / "constraints.txt").write_text(constraints)
        _pip(
            ["wheel", "-q", "-w", str(tmp), "-c", str(tmp / "constraints.txt"), *reqs],
            "building the dependency wheels",
        )
        (tmp / "requirements.txt").write_text("\n".join(reqs) + "\n")
        try:
            os.replace(tmp, target)
        except OSError:
            # Another build cached the same set first; its copy is as good.
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def project_wheel(project: Path, out_dir: Path) -> Path:
    """``pip wheel --no-deps`` of the project itself into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _pip(
        ["wheel", "-q", "--no-deps", "-w", str(out_dir), str(project)], "building modelseal's wheel"
    )
    wheels = sorted(out_dir.glob("modelseal-*.whl"))
    if not wheels:
        raise ImageError("building modelseal's wheel produced no wheel")
    return wheels[-1]


# --- the build context ---------------------------------------------------------------

_LABEL_KEY = re.compile(r"^[a-z0-9.\-/]+$")


def containerfile(
    recipe: ImageRecipe,
    base: str,
    wheel_name: str,
    *,
    deps_sha256: str = "",
    wheel_sha256: str = "",
) -> str:
    """The Containerfile text (pure: the tests read it without building).

    The bind-mounted wheels' digests are part of their ``RUN`` lines:
    buildah's layer cache keys a ``RUN`` on its text, not on what is mounted,
    so without them a rebuilt modelseal wheel would silently reuse the
    layer with the old one installed.
    """
    env = {
        "PATH": "/opt/modelseal/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONPATH": HANDLERS_DIR,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "HOME": "/home/modelseal",
        "MODELSEAL_STATE_DIR": STATE_DIR,
        "MODELSEAL_MODEL": recipe.model_path,
        "MODELSEAL_PORT": str(recipe.port),
    }
    if recipe.handler:
        env["MODELSEAL_IMAGE_HANDLER"] = recipe.handler
    if recipe.framework:
        env["MODELSEAL_IMAGE_FRAMEWORK"] = recipe.framework
    if recipe.name:
        env["MODELSEAL_IMAGE_NAME"] = recipe.name
    if recipe.trust_file is not None:
        env["MODELSEAL_IMAGE_TRUST"] = f"{TRUST_DIR}/{recipe.trust_file.name}"
    if recipe.allow_plain:
        env["MODELSEAL_IMAGE_ALLOW_PLAIN"] = "1"
    labels = {
        "org.opencontainers.image.title": recipe.tag.rsplit(":", 1)[0],
        "io.modelseal.model-path": recipe.model_path,
        "io.modelseal.runtimes": ",".join(recipe.runtimes),
        "io.modelseal.port": str(recipe.port),
        "io.modelseal.base": base,
        **recipe.labels,
    }
    for key in labels:
        if not _LABEL_KEY.match(key):
            raise ImageSpecError(f"label {key!r}: use lower-case letters, digits, '.', '-', '/'")
    q = json.dumps  # a JSON string is a valid, fully quoted Containerfile value
    lines = [
        "# Rendered by modelseal image build; no license or key is ever part of it.",
        f"FROM {base}",
        f"RUN useradd --system --uid {USER_UID} --user-group --create-home "
        "--home-dir /home/modelseal --shell /usr/sbin/nologin modelseal "
        f"&& install -d -o {USER_UID} -g {USER_UID} -m 0700 {STATE_DIR}",
        # Wheels are bind-mounted, not copied: no layer carries them.
        "RUN --mount=type=bind,source=deps,target=/tmp/deps "
        f"WHEELS_SHA256={deps_sha256 or 'unset'} python3 -m venv /opt/modelseal "
        "&& /opt/modelseal/bin/pip install --no-index --no-cache-dir --disable-pip-version-check "
        "-q --find-links /tmp/deps -r /tmp/deps/requirements.txt",
        "RUN --mount=type=bind,source=app,target=/tmp/app "
        f"WHEEL_SHA256={wheel_sha256 or 'unset'} "
        "/opt/modelseal/bin/pip install --no-index --no-deps --no-cache-dir "
        f"--disable-pip-version-check -q /tmp/app/{wheel_name}",
        f"COPY handlers/ {HANDLERS_DIR}/",
        f"COPY trust/ {TRUST_DIR}/",
    ]
    if recipe.model_file is not None:
        lines.append(f"COPY model/ {MODEL_DIR}/")
    lines += [f"ENV {k}={q(v)}" for k, v in env.items()]
    lines += [f"LABEL {k}={q(v)}" for k, v in labels.items()]
    lines += [
        f"USER {USER_UID}:{USER_UID}",
        "WORKDIR /home/modelseal",
        f"EXPOSE {recipe.port}",
        "STOPSIGNAL SIGTERM",
        # tini as PID 1: a Python PID 1 would not die of SIGTERM before its
        # handler is installed (model loading), and zombies would pile up.
        'ENTRYPOINT ["/usr/bin/tini", "-g", "--", "/opt/modelseal/bin/python", '
        '"-m", "modelseal.image.launch"]',
        "CMD []",
    ]
    return "\n".join(lines) + "\n"


def _copy_into(src: Path, dest_dir: Path) -> None:
    target = dest_dir / src.name
    if src.is_dir():
        shutil.copytree(
            src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True
        )
    else:
        shutil.copy2(src, target)


def _tree_sha256(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def render_context(
    recipe: ImageRecipe, context: Path, *, base: str, deps: Path, wheel: Path
) -> str:
    """Write the build context into ``context``; returns its SHA-256."""
    for sub in ("deps", "app", "handlers", "trust", "model"):
        (context / sub).mkdir(parents=True, exist_ok=True)
    for whl in deps.iterdir():
        # Hard links when the cache shares the file system: 76 MB not copied per build.
        if _same_fs(whl, context):
            os.link(whl, context / "deps" / whl.name)
        else:
            shutil.copy2(whl, context / "deps" / whl.name)
    shutil.copy2(wheel, context / "app" / wheel.name)
    for path in recipe.handler_paths:
        _copy_into(path, context / "handlers")
    if recipe.trust_file is not None:
        shutil.copy2(recipe.trust_file, context / "trust" / recipe.trust_file.name)
    if recipe.model_file is not None:
        shutil.copyfile(recipe.model_file, context / "model" / recipe.model_file.name)
    for path in context.rglob("*"):
        # Readable by the model's user whatever the host's umask was.
        path.chmod(0o755 if path.is_dir() else 0o644)
    text = containerfile(
        recipe,
        base,
        wheel.name,
        deps_sha256=_tree_sha256(context / "deps"),
        wheel_sha256=_tree_sha256(context / "app"),
    )
    (context / "Containerfile").write_text(text)
    return _tree_sha256(context)


def _same_fs(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_dev == b.stat().st_dev
    except OSError:
        return False


def build_image(
    recipe: ImageRecipe,
    *,
    podman: Podman | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    project: Path | None = None,
    base: BaseImage | None = None,
    mirror: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> BuiltImage:
    """Build ``recipe`` into ``recipe.tag``; returns its id and digest.

    ``progress`` gets one line per phase and per build step (``STEP 3/27: ...``).
    """
    say = progress or (lambda _line: None)
    podman = podman or Podman()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    base = base or ensure_base_image(podman, cache_dir=cache, mirror=mirror, progress=progress)
    project = project or project_dir()
    say("dependency wheels (pinned to this environment's versions)")
    deps = dependency_wheels(requirements(project, recipe.runtimes), cache)
    with tempfile.TemporaryDirectory(prefix="modelseal-image-") as tmp:
        say("modelseal's wheel")
        wheel = project_wheel(project, Path(tmp) / "wheel")
        context = Path(tmp) / "context"
        context_sha = render_context(recipe, context, base=base.ref, deps=deps, wheel=wheel)
        podman.run(
            [
                "build",
                "--pull=never",
                "--layers",
                "--format",
                "oci",
                "-f",
                str(context / "Containerfile"),
                "-t",
                recipe.tag,
                "--label",
                f"io.modelseal.context-sha256={context_sha}",
                str(context),
            ],
            timeout=BUILD_TIMEOUT_S,
            what=f"podman build of {recipe.tag}",
            on_line=lambda line: say(line) if line.startswith("STEP ") else None,
        )
    info = json.loads(
        podman.run(["image", "inspect", recipe.tag], what="podman image inspect").stdout
    )[0]
    return BuiltImage(
        tag=recipe.tag,
        image_id=str(info.get("Id", "")),
        digest=str(info.get("Digest", "")),
        size_bytes=int(info.get("Size", 0)),
        base=base.ref,
        context_sha256=context_sha,
    )


__all__ = [
    "USER_UID",
    "BuiltImage",
    "ImageRecipe",
    "build_image",
    "containerfile",
    "dependency_wheels",
    "project_dir",
    "project_wheel",
    "recipe_from_spec",
    "render_context",
    "requirements",
    "runtimes_for",
]
