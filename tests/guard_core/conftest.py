"""The vendor key and the sealed OCR model every Guard test licenses."""

from tests.guard_core.test_guard import model, vendor  # noqa: F401
