"""Errors of the control plane, each with the HTTP status the API answers with.

They are ``ModelsealError`` subclasses like every error of ours, so the CLI
maps them to one line and an exit code, and the API to a JSON body
``{"error": {"code": ..., "message": ...}}`` with a 4xx status: a bad
request is never a 5xx.
"""

from __future__ import annotations

from modelseal.errors import ModelsealError


class ControlPlaneError(ModelsealError):
    status_code = 400
    code = "bad_request"
    exit_code = 2

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidRequestError(ControlPlaneError):
    status_code = 422
    code = "invalid_request"


class UnauthorizedError(ControlPlaneError):
    status_code = 401
    code = "unauthorized"
    exit_code = 22


class ForbiddenError(ControlPlaneError):
    status_code = 403
    code = "forbidden"
    exit_code = 22


class TooManyAttemptsError(ControlPlaneError):
    """Login or second-factor attempts over the limit: the account or address waits."""

    status_code = 429
    code = "too_many_attempts"
    exit_code = 22


class NotFoundError(ControlPlaneError):
    """Also what another vendor's objects look like: their existence is not revealed."""

    status_code = 404
    code = "not_found"
    exit_code = 23


class ConflictError(ControlPlaneError):
    status_code = 409
    code = "conflict"
    exit_code = 24


class PayloadTooLargeError(ControlPlaneError):
    status_code = 413
    code = "too_large"


class StaleRequestError(ConflictError):
    """A heartbeat that is not newer than the last one accepted from its device (a replay)."""

    code = "stale_heartbeat"


class AlreadyInitializedError(ConflictError):
    code = "already_initialized"


class ActivationRefusedError(ControlPlaneError):
    """The license cannot be activated on this device (limit, status, wrong salt)."""

    status_code = 403
    exit_code = 25

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class ServerUnavailableError(ControlPlaneError):
    """The client could not reach the server or got an unexpected answer."""

    status_code = 503
    code = "unavailable"
    exit_code = 21
