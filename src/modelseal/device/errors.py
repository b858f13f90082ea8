"""Errors of the device package, rooted in :class:`modelseal.errors.ModelsealError`.

They live here rather than in ``modelseal.errors`` so the device package can
grow without touching the shared module; ``modelseal.device`` re-exports them.
"""

from __future__ import annotations

from modelseal.errors import FormatError, ModelsealError, UnsupportedVersionError


class DeviceError(ModelsealError):
    """Base of everything the device package raises on purpose."""


class RequestFormatError(DeviceError, FormatError):
    """An activation request (JSON or file) is malformed.

    A subclass of :class:`~modelseal.errors.FormatError`, so the CLI maps it to
    exit code 3 like every other malformed input.
    """

    exit_code = 3


class UnsupportedRequestVersionError(RequestFormatError, UnsupportedVersionError):
    """An activation request of a version this release does not read."""


class InvalidLabelError(DeviceError):
    """The label given for an activation request is empty, too long or unprintable."""

    exit_code = 2


class NoComponentsError(DeviceError):
    """The device exposes no component at all, so nothing could bind a license to it."""

    exit_code = 15  # docs/cli.md: an environment a license cannot bind to, not a bug


class UnsupportedPlatformError(DeviceError):
    """No fingerprint source exists for this operating system."""

    exit_code = 2


__all__ = [
    "DeviceError",
    "InvalidLabelError",
    "NoComponentsError",
    "RequestFormatError",
    "UnsupportedPlatformError",
    "UnsupportedRequestVersionError",
]
