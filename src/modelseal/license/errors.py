"""License failures, each with the reason code the audit log records.

Callers of a guarded model see one generic message; the audit log and the
CLI's exit code say which check failed (docs/license.md lists them).
"""

from __future__ import annotations

from modelseal.errors import ModelsealError


class LicenseError(ModelsealError):
    """A license was refused. ``reason`` is the audit reason code."""

    reason: str = "invalid"
    exit_code = 10

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class LicenseFormatError(LicenseError):
    """Not a well-formed modelseal license (JWS structure, header or claims)."""

    reason = "malformed"
    exit_code = 10


class UntrustedKeyError(LicenseError):
    """The license names a signing key (``kid``) that the trust store does not hold."""

    reason = "untrusted_key"
    exit_code = 11


class AlgorithmNotAllowedError(LicenseError):
    """The token's ``alg`` is not one the trusted key may be used with."""

    reason = "algorithm_not_allowed"
    exit_code = 11


class LicenseSignatureError(LicenseError):
    """The signature does not verify: the license was edited or forged."""

    reason = "bad_signature"
    exit_code = 12


class LicenseExpiredError(LicenseError):
    reason = "expired"
    exit_code = 13


class LicenseNotYetValidError(LicenseError):
    reason = "not_yet_valid"
    exit_code = 13


class WrongAudienceError(LicenseError):
    """The license does not cover this model / product."""

    reason = "wrong_audience"
    exit_code = 14


class WrongIssuerError(LicenseError):
    reason = "wrong_issuer"
    exit_code = 14


class WrongDeviceError(LicenseError):
    """Fewer fingerprint components match than the license's threshold."""

    reason = "wrong_device"
    exit_code = 15


class EnvironmentRefusedError(LicenseError):
    """The license refuses virtual machines or containers and this is one."""

    reason = "environment_refused"
    exit_code = 15


class FeatureNotLicensedError(LicenseError):
    reason = "feature_missing"
    exit_code = 16


class QuotaExceededError(LicenseError):
    reason = "over_quota"
    exit_code = 16


class ClockRollbackError(LicenseError):
    reason = "clock_rollback"
    exit_code = 17


class StateTamperedError(LicenseError):
    reason = "state_tampered"
    exit_code = 17


class OfflineGraceExceededError(LicenseError):
    reason = "offline_grace_exceeded"
    exit_code = 17


class LicenseRevokedError(LicenseError):
    reason = "revoked"
    exit_code = 18


class KeyDeliveryError(LicenseError):
    """The content key does not open on this device (binding not met, or not licensed)."""

    reason = "key_unavailable"
    exit_code = 15
