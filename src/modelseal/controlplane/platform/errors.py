"""Errors the Platform area adds: a backend that failed is the server's problem (5xx),
not the caller's, and says so without leaking the backend's internals."""

from __future__ import annotations

from modelseal.controlplane.errors import ControlPlaneError


class UnsupportedMediaError(ControlPlaneError):
    """A document whose bytes are not an accepted format (the message lists them)."""

    status_code = 415
    code = "unsupported_media_type"
    exit_code = 3


class DocumentTooLargeError(ControlPlaneError):
    status_code = 413
    code = "too_large"
    exit_code = 2


class BackendFailedError(ControlPlaneError):
    """The deployment backend refused or failed; the deployment was not changed."""

    status_code = 502
    code = "backend_failed"
    exit_code = 30


class BackendUnavailableError(BackendFailedError):
    status_code = 503
    code = "backend_unavailable"
