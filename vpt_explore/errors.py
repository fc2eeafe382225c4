"""Errors with messages that say what to do.

Every user-facing check in the package raises one of these, with a message that names the
field, the value it got and what is allowed, plus a "did you mean" hint for near misses.
``VPTError`` subclasses ``ValueError`` (or ``FileNotFoundError``) so callers can catch either.
"""
from __future__ import annotations

import difflib
from typing import Any, Iterable

from .versions import CORE, FLOORS, too_old


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


class OldPackageError(MissingPackageError):
    """An installed package is older than the version vpt_explore needs (``versions.FLOORS``)."""


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
    """Import ``module`` or raise MissingPackageError naming the install command.

    A package listed in ``versions.FLOORS`` must also be at least that version (OldPackageError).
    """
    import importlib

    pip_name = pip_name or module
    if pip_name in FLOORS:
        require_version(pip_name, feature)
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingPackageError(
            f"{feature} needs the package {pip_name!r}, which is not installed: "
            f"pip install {pip_name}  (or pip install 'vpt_explore[notebooks]')"
        ) from e


def require_version(package: str, feature: str = "vpt_explore", minimum: str | None = None) -> None:
    """Raise OldPackageError when ``package`` (pip name) is installed but older than needed.

    The message names the package, the version found, the version needed and the pip command.
    ``minimum`` defaults to ``versions.FLOORS[package]``; a package that is not installed passes
    (its import fails with its own error where it is used).
    """
    message = too_old(package, feature, minimum)
    if message:
        raise OldPackageError(message)


def check_core_versions() -> None:
    """One OldPackageError for the first runtime dependency (``versions.CORE``) that is too old.

    ``vpt_explore/__init__.py`` calls it before importing torch or timm, so an old install fails at
    ``import vpt_explore`` with one clear line instead of an AttributeError deep inside timm.
    """
    for package in CORE:
        require_version(package, "vpt_explore")
