"""One exception hierarchy for everything modelseal raises.

Callers catch :class:`ModelsealError` to handle all of ours in one line; the
subclasses let a caller (and the CLI's exit codes) tell a corrupt file from a
wrong key from a missing framework. Messages say what went wrong in terms the
user can act on and never echo key material or plaintext.
"""

from __future__ import annotations


class ModelsealError(Exception):
    """Base class of every error modelseal raises on purpose."""

    #: Process exit code the CLI uses for this class of failure (docs/cli.md).
    exit_code: int = 1


# --- input files and formats -------------------------------------------------


class FormatError(ModelsealError):
    """The input is not a well-formed file of the expected format."""

    exit_code = 3


class UnsupportedVersionError(FormatError):
    """The file is of a format version (or algorithm) this release cannot read."""


class TruncatedError(FormatError):
    """The file ends before its header says it should."""


class TrailingDataError(FormatError):
    """Bytes follow the end that the header announces (appended or spliced data)."""


# --- authentication ----------------------------------------------------------


class IntegrityError(ModelsealError):
    """Authenticated data failed its check: the file was modified or damaged.

    Raised before any plaintext from the failing region is handed out, so a
    caller never sees half of a model.
    """

    exit_code = 4


class HeaderIntegrityError(IntegrityError):
    """The public header does not match its authentication code."""


class ChunkIntegrityError(IntegrityError):
    """A payload chunk failed authentication (flipped, reordered, spliced or cut)."""

    def __init__(self, message: str, *, chunk_index: int | None = None) -> None:
        super().__init__(message)
        self.chunk_index = chunk_index


class InvalidSignatureError(IntegrityError):
    """A signature does not verify under the given public key."""


class DecryptionError(IntegrityError):
    """A ciphertext (e.g. SM2 or a wrapped key) failed to decrypt or authenticate."""


# --- keys --------------------------------------------------------------------


class KeyMaterialError(ModelsealError):
    """Base for problems with a key rather than with the data it protects."""

    exit_code = 5


class WrongKeyError(KeyMaterialError):
    """The key given is not the key this file was sealed with."""


class KeyFileError(KeyMaterialError):
    """A key file cannot be read: malformed, wrong type, or wrong passphrase."""


class UnsupportedAlgorithmError(ModelsealError):
    """An algorithm name that modelseal does not offer (or not for this key)."""

    exit_code = 2


# --- arguments and outputs ---------------------------------------------------


class InvalidArgumentError(ModelsealError, ValueError):
    """A value given by the caller is out of range or contradicts another.

    Also a ``ValueError``, so code written against the plain Python contract
    (``except ValueError``) keeps working.
    """

    exit_code = 2


class OutputExistsError(InvalidArgumentError):
    """Refused to write: the output exists (no ``--force`` / ``overwrite=True``),
    or it is one of the inputs (never allowed, forced or not)."""


class OutputError(ModelsealError):
    """An output could not be written: missing folder, no permission, disk full.

    Nothing half-written stays behind: outputs are written to a temporary
    file and published only when complete.
    """

    exit_code = 8


# --- loading into frameworks -------------------------------------------------


class LoaderError(ModelsealError):
    """The plaintext decrypted fine but the framework could not load it."""

    exit_code = 6


class MissingDependencyError(LoaderError):
    """The framework named (or hinted) is not installed in this environment."""

    exit_code = 7


class CodeExecutionRefusedError(LoaderError):
    """The model is code (a TorchScript archive) and the caller did not ask to run code.

    A sealed file proves who sealed it, not that it is harmless: code runs
    only with an explicit ``framework="torchscript"``.
    """


class DeviceUnavailableError(LoaderError):
    """The device asked for (``device="cuda"``...) is not usable here.

    Never answered with a quiet CPU load: the caller asked for the GPU.
    """


__all__ = [
    "ChunkIntegrityError",
    "CodeExecutionRefusedError",
    "DecryptionError",
    "DeviceUnavailableError",
    "FormatError",
    "HeaderIntegrityError",
    "IntegrityError",
    "InvalidArgumentError",
    "InvalidSignatureError",
    "KeyFileError",
    "KeyMaterialError",
    "LoaderError",
    "MissingDependencyError",
    "ModelsealError",
    "OutputError",
    "OutputExistsError",
    "TrailingDataError",
    "TruncatedError",
    "UnsupportedAlgorithmError",
    "UnsupportedVersionError",
    "WrongKeyError",
]
