"""Why an envelope was refused: malformed, for another gateway key, or not authentic.

The gateway turns each into a 502 with the message; none of them says more
than which check failed (never key material or plaintext).
"""

from __future__ import annotations

from modelseal.errors import DecryptionError, FormatError, KeyMaterialError


class EnvelopeFormatError(FormatError):
    """The body is not a well-formed modelseal envelope (or of an unknown version)."""


class WrongGatewayKeyError(KeyMaterialError):
    """The envelope's session key is wrapped for another gateway key id."""


class EnvelopeIntegrityError(DecryptionError):
    """Authentication failed: the envelope was altered, its session key does not
    open, or it answers another request (replay)."""


__all__ = ["EnvelopeFormatError", "EnvelopeIntegrityError", "WrongGatewayKeyError"]
