"""Errors with messages that say what to do.

Every user-facing check in the package raises one of these, with a message that names the
field, the value it got and what is allowed, plus a "did you mean" hint for near misses.
``VPTError`` subclasses ``ValueError`` (or ``FileNotFoundError``) so callers can catch either.
"""
from __future__ import annotations

import difflib
from typing import Any, Iterable


class VPTError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(VPTError, ValueError):
    """A configuration field holds a value that is not allowed."""


class DataError(VPTError, ValueError):
    """A dataset, list file, image or label is malformed."""


class PromptFileError(VPTError, ValueError):
    """A prompt or weights file is corrupt, not safetensors, or made for another backbone."""


class TrainingError(VPTError, RuntimeError):
    """Training stopped because something went wrong (NaN loss, bad setup)."""


class MissingFileError(VPTError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class MissingPackageError(VPTError, ImportError):
    """An optional package is needed for this feature."""


def did_you_mean(value: Any, allowed: Iterable[Any]) -> str:
    """Return ' (did you mean 'x'?)' for a close match among ``allowed``, else ''."""
    if not isinstance(value, str):
        return ""
    names = [str(a) for a in allowed]
    close = difflib.get_close_matches(value.lower(), names, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def bad_choice(field: str, value: Any, allowed: Iterable[Any], cls: type = ConfigError) -> Exception:
    """Build the standard error for ``field=value`` not in ``allowed``."""
    allowed = list(allowed)
    listed = ", ".join(repr(a) for a in allowed)
    return cls(f"{field}={value!r} is not allowed; choose one of {listed}{did_you_mean(value, allowed)}")


def require_package(module: str, pip_name: str | None = None, feature: str = "this feature"):
    """Import ``module`` or raise MissingPackageError naming the install command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        pip_name = pip_name or module
        raise MissingPackageError(
            f"{feature} needs the package {pip_name!r}, which is not installed: "
            f"pip install {pip_name}  (or pip install 'vpt_explore[notebooks]')"
        ) from e
