"""Errors of image building and of podman itself (exit code 30, like every deploy failure).

A bad image spec is a format error (exit 3, :class:`ImageSpecError`); podman
missing, a base image that cannot be built, a build that fails are
operational and share the deployment library's code (docs/cli.md).
"""

from __future__ import annotations

from modelseal.errors import FormatError, ModelsealError


class ImageError(ModelsealError):
    """Building or handling a container image failed (exit code 30)."""

    exit_code = 30


class PodmanNotInstalledError(ImageError):
    """No ``podman`` executable here; the message says what to install."""


class PodmanCommandError(ImageError):
    """A podman command failed or timed out; the message ends with podman's own words."""

    def __init__(self, message: str, *, returncode: int | None, stderr: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


class BaseImageError(ImageError):
    """The base image could not be loaded or built (no mirror, no debootstrap, not root)."""


class ImageSpecError(FormatError):
    """The image spec file, or a file it names, is invalid (exit code 3)."""


__all__ = [
    "BaseImageError",
    "ImageError",
    "ImageSpecError",
    "PodmanCommandError",
    "PodmanNotInstalledError",
]
