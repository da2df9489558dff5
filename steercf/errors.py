"""Exceptions raised by steercf. Each names the problem so the user can fix the input."""

from __future__ import annotations


class SteerCFError(Exception):
    """Base class of all steercf errors."""


class UnknownIdError(SteerCFError, KeyError):
    """A user, item, concept or latent id that the model or data set does not know."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


class InputError(SteerCFError, ValueError):
    """Malformed input: wrong shape, NaN, empty history, out-of-range value."""


class ModelFileError(SteerCFError, ValueError):
    """A model file that is missing, corrupt, or of another kind or version."""
