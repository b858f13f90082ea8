"""Runtime enforcement of licenses: Guard, state, audit log, unlock codes."""

from modelseal.guard.core import (
    ANY_PRODUCT,
    Guard,
    GuardStorageError,
    HeartbeatClient,
    HeartbeatReply,
    HeartbeatReport,
    NotLicensedError,
    default_state_dir,
)
from modelseal.guard.integrations import (
    LicenseASGIMiddleware,
    LicenseWSGIMiddleware,
    fastapi_dependency,
    require_license,
)

__all__ = [
    "ANY_PRODUCT",
    "Guard",
    "GuardStorageError",
    "HeartbeatClient",
    "HeartbeatReply",
    "HeartbeatReport",
    "LicenseASGIMiddleware",
    "LicenseWSGIMiddleware",
    "NotLicensedError",
    "default_state_dir",
    "fastapi_dependency",
    "require_license",
]
