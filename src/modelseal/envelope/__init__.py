"""Output envelopes (docs/envelope.md): SM4-GCM bodies under SM2-wrapped session keys.

The model service seals every response for the gateway's SM2 public key
(:class:`EnvelopeSealer`); the gateway opens them (:class:`EnvelopeOpener`),
unwrapping each session key once. Core package: crypto only, no web framework.
"""

from modelseal.envelope.errors import (
    EnvelopeFormatError,
    EnvelopeIntegrityError,
    WrongGatewayKeyError,
)
from modelseal.envelope.format import (
    MEDIA_TYPE,
    REQUEST_ID_HEADER,
    VERSION,
    Envelope,
    check_request_id,
    parse,
)
from modelseal.envelope.opener import EnvelopeOpener, OpenedEnvelope
from modelseal.envelope.sealer import EnvelopeSealer, SessionPolicy

__all__ = [
    "MEDIA_TYPE",
    "REQUEST_ID_HEADER",
    "VERSION",
    "Envelope",
    "EnvelopeFormatError",
    "EnvelopeIntegrityError",
    "EnvelopeOpener",
    "EnvelopeSealer",
    "OpenedEnvelope",
    "SessionPolicy",
    "WrongGatewayKeyError",
    "check_request_id",
    "parse",
]
