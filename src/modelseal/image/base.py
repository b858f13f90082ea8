"""The base image every model image starts from: Debian bookworm built here, cached.

No container registry is reachable from the machines modelseal is built
on, so ``FROM debian:bookworm`` cannot be pulled. Instead the base is
built once from Debian's own packages: ``debootstrap --variant=minbase``
into a folder (python3, python3-venv for pip, ca-certificates and tini as
PID 1), imported with ``podman import``, and saved with ``podman save``
to a cache file so the next machine run, test session or build loads it
in a few seconds instead of paying the ~50-75 s again.

The apt mirror comes from this machine's own apt sources (a site's mirror
or proxy is what works here), never from a hard-coded host.

The recipe (suite, packages, clean-up) is hashed into the image tag and the
cache file name: change the recipe and a new base is built, while an old
cache file is never loaded as the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from modelseal.image.errors import BaseImageError, PodmanCommandError
from modelseal.image.podman import Podman

SUITE: Final = "bookworm"
#: python3-venv brings ensurepip (pip inside the build); tini is PID 1 so
#: SIGTERM reaches ``modelseal serve`` at once, on podman and on Kubernetes.
PACKAGES: Final = ("python3", "python3-venv", "ca-certificates", "tini")
#: Bump when the clean-up or anything else outside the package list changes.
RECIPE_VERSION: Final = 1
#: What a fresh build may take on a slow mirror; seen: ~50 s here.
DEBOOTSTRAP_TIMEOUT_S: Final = 900.0
#: Removed from the root filesystem before import: caches and docs nobody reads
#: in a container, and ``/etc/machine-id``, which would otherwise be one device
#: component shared by every copy of every image (docs/deploy.md).
_CLEAN: Final = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "var/log",
)


def recipe_hash(suite: str = SUITE, packages: tuple[str, ...] = PACKAGES) -> str:
    text = f"{RECIPE_VERSION}\n{suite}\n{','.join(packages)}\n{','.join(_CLEAN)}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def base_ref(suite: str = SUITE) -> str:
    """``localhost/modelseal/base:bookworm-<recipe hash>``."""
    return f"localhost/modelseal/base:{suite}-{recipe_hash(suite)}"


def default_cache_dir() -> Path:
    """``$MODELSEAL_IMAGE_CACHE``, else ``$XDG_CACHE_HOME/modelseal/images``."""
    env = os.environ.get("MODELSEAL_IMAGE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "modelseal" / "images"


# --- the mirror, from this machine's apt sources ------------------------------------


def _one_line_entries(text: str) -> Iterator[tuple[list[str], list[str], list[str], list[str]]]:
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        kind = words.pop(0)
        if words and words[0].startswith("["):
            # options: "[arch=amd64 signed-by=...]", possibly over several words
            while words and not words[0].endswith("]"):
                words.pop(0)
            if words:
                words.pop(0)
        if len(words) < 2:
            continue
        yield [kind], [words[0]], [words[1]], words[2:]


def _deb822_entries(text: str) -> Iterator[tuple[list[str], list[str], list[str], list[str]]]:
    for stanza in _stanzas(text):
        if stanza.get("enabled", "yes").strip().lower() == "no":
            continue
        yield (
            stanza.get("types", "").split(),
            stanza.get("uris", "").split(),
            stanza.get("suites", "").split(),
            stanza.get("components", "").split(),
        )


def _stanzas(text: str) -> Iterator[dict[str, str]]:
    current: dict[str, str] = {}
    key = None
    for raw in [*text.splitlines(), ""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                yield current
            current, key = {}, None
            continue
        if raw[0] in " \t" and key is not None:
            current[key] += " " + raw.strip()
            continue
        name, sep, value = raw.partition(":")
        if sep:
            key = name.strip().lower()
            current[key] = value.strip()
    return


def apt_mirror(suite: str = SUITE, *, apt_dir: str | os.PathLike[str] = "/etc/apt") -> str:
    """The first ``deb`` source of this machine that serves ``suite`` with ``main``.

    Reads ``sources.list`` and ``sources.list.d/*.list`` (one-line format)
    and ``sources.list.d/*.sources`` (deb822), in apt's order, and skips
    disabled stanzas and files apt itself ignores (other suffixes).
    """
    root = Path(apt_dir)
    files: list[tuple[Path, bool]] = []
    if (root / "sources.list").is_file():
        files.append((root / "sources.list", False))
    folder = root / "sources.list.d"
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.suffix == ".list":
                files.append((path, False))
            elif path.suffix == ".sources":
                files.append((path, True))
    for path, deb822 in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        entries = _deb822_entries(text) if deb822 else _one_line_entries(text)
        for types, uris, suites, components in entries:
            if "deb" in types and suite in suites and "main" in components:
                for uri in uris:
                    if uri.startswith(("http://", "https://", "file:/")):
                        return uri
    raise BaseImageError(
        f"no apt source for Debian {suite} (main) in {root}/sources.list or "
        f"{root}/sources.list.d/: pass --mirror URL (or MODELSEAL_DEBIAN_MIRROR)"
    )


# --- build, load, save ----------------------------------------------------------------


@dataclass(frozen=True)
class BaseImage:
    ref: str
    image_id: str
    #: ``present``: already in podman's store; ``cache``: loaded from the cache
    #: file; ``built``: debootstrapped now (and saved to the cache).
    source: Literal["present", "cache", "built"]
    cache_file: Path


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder at a time per cache folder (parallel test workers, two CLIs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_base_image(
    podman: Podman,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    mirror: str | None = None,
    rebuild: bool = False,
    suite: str = SUITE,
    progress: Callable[[str], None] | None = None,
) -> BaseImage:
    """The base image in podman's store: present, else from the cache file, else built."""
    say = progress or (lambda _line: None)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    ref = base_ref(suite)
    cache_file = cache / f"base-{suite}-{recipe_hash(suite)}.tar"
    with _locked(cache / ".base.lock"):
        if not rebuild and podman.image_exists(ref):
            return BaseImage(ref, podman.image_id(ref), "present", cache_file)
        if not rebuild and cache_file.is_file():
            say(f"base image: loading {cache_file}")
            try:
                podman.run(["load", "-q", "-i", str(cache_file)], timeout=300, what="podman load")
            except PodmanCommandError:
                # A truncated or foreign file: build afresh rather than fail forever.
                cache_file.unlink(missing_ok=True)
            else:
                if podman.image_exists(ref):
                    return BaseImage(ref, podman.image_id(ref), "cache", cache_file)
        say(f"base image: debootstrap {suite} (once per machine, ~1-2 min)")
        _build(podman, ref, cache, suite, mirror)
        tmp = cache / f".{cache_file.name}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        try:
            podman.run(["save", "-q", "-o", str(tmp), ref], timeout=300, what="podman save")
            os.replace(tmp, cache_file)
        finally:
            tmp.unlink(missing_ok=True)
        return BaseImage(ref, podman.image_id(ref), "built", cache_file)


def _build(podman: Podman, ref: str, cache: Path, suite: str, mirror: str | None) -> None:
    if os.geteuid() != 0:
        raise BaseImageError(
            "building the base image needs root (debootstrap and rootful podman); "
            "or load a saved one: podman load -i base.tar"
        )
    debootstrap = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None
    )
    if debootstrap is None:
        raise BaseImageError("debootstrap is not installed: apt-get install -y debootstrap")
    mirror = mirror or os.environ.get("MODELSEAL_DEBIAN_MIRROR") or apt_mirror(suite)
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="base-rootfs-", dir=cache))
    rootfs = work / "rootfs"
    log = cache / "debootstrap.log"
    try:
        with log.open("wb") as out:
            try:
                proc = subprocess.run(
                    [
                        debootstrap,
                        "--variant=minbase",
                        f"--include={','.join(PACKAGES)}",
                        suite,
                        str(rootfs),
                        mirror,
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=DEBOOTSTRAP_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise BaseImageError(
                    f"debootstrap from {mirror} did not finish in {DEBOOTSTRAP_TIMEOUT_S:.0f}s "
                    f"(log: {log})"
                ) from None
        if proc.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()
            raise BaseImageError(
                f"debootstrap {suite} from {mirror} failed (exit {proc.returncode}): "
                f"{tail[-1] if tail else 'no output'} (log: {log})"
            )
        for rel in _CLEAN:
            target = rootfs / rel
            if target.is_dir():
                for child in target.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
        (rootfs / "etc" / "machine-id").unlink(missing_ok=True)
        _import(podman, rootfs, ref)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _import(podman: Podman, rootfs: Path, ref: str) -> None:
    tar = subprocess.Popen(
        ["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-c", "."],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert tar.stdout is not None
    try:
        podman.run(
            ["import", "--change", 'CMD ["/bin/bash"]', "-", ref],
            stdin=tar.stdout,
            timeout=300,
            what="podman import",
        )
    finally:
        tar.stdout.close()
        if tar.wait(timeout=60) != 0:
            raise BaseImageError(f"tar of {rootfs} failed (exit {tar.returncode})")


__all__ = [
    "PACKAGES",
    "SUITE",
    "BaseImage",
    "apt_mirror",
    "base_ref",
    "default_cache_dir",
    "ensure_base_image",
    "recipe_hash",
]
