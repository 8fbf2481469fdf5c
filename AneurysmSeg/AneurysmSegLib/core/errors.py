"""Errors that front ends turn into one clear line for the user (no traceback)."""


class AneurysmSegError(Exception):
    """Base class: the message is meant for the user, as is."""


class InputError(AneurysmSegError, ValueError):
    """The input image, seeds or arguments cannot be used (nothing has been written)."""


class ModelError(AneurysmSegError):
    """Weights are missing, corrupted (sha256 mismatch) or incompatible."""


class OutputError(AneurysmSegError):
    """An output location cannot be written."""


class Cancelled(AneurysmSegError):
    """The user cancelled; no partial result exists."""


class InputWarning(UserWarning):
    """An input the tool half-understands: the run goes on, and every front end shows this line."""
