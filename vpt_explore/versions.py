"""Which versions of its dependencies vpt_explore needs, and what is installed.

``FLOORS`` holds the lower bound of every dependency in ``pyproject.toml`` (runtime, ``[offline]``
and ``[notebooks]``); ``tests/test_versions.py`` keeps the two equal, and ``make test-min`` runs the
library tests with each of them installed at exactly that version (``constraints-min.txt``).

This is the package's bottom layer: it only reads package metadata, and only when asked. The errors
built from its messages live in ``errors`` (``require_version``, ``check_core_versions``).
"""
from __future__ import annotations

import re
from importlib import metadata
from typing import Dict, Optional, Tuple

__all__ = ["FLOORS", "CORE", "installed", "older_than", "too_old"]

# pip name -> lowest supported version (the ">=" of pyproject.toml)
FLOORS: Dict[str, str] = {
    # runtime: checked when vpt_explore is imported
    "torch": "2.3",
    "timm": "1.0.9",
    "numpy": "1.24.2",
    "matplotlib": "3.7",
    "scikit-learn": "1.3",
    "scipy": "1.10",
    "safetensors": "0.4",
    "tqdm": "4.64",
    "pillow": "9.3",
    # [offline] and [notebooks]: checked when a feature first imports them (errors.require_package)
    "onnx": "1.15",
    "onnxruntime": "1.17",
    "scikit-image": "0.21",
    "mlxtend": "0.23",
    "ipywidgets": "7.7.1",
    "umap-learn": "0.5.5",
    "captum": "0.7",
    "jupyterlab": "4.0",
    "ipykernel": "6.29",
    "voila": "0.5",
}
CORE: Tuple[str, ...] = ("torch", "timm", "numpy", "matplotlib", "scikit-learn", "scipy",
                         "safetensors", "tqdm", "pillow")


def installed(package: str) -> Optional[str]:
    """The installed version of the distribution ``package`` (its pip name), or None."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def older_than(found: str, needed: str) -> bool:
    """True when the release numbers of ``found`` are below ``needed``'s.

    Local and pre-release tags are ignored (``2.3.0+cu121`` and a vendor's ``2.3.0a0+git`` build
    both count as 2.3.0), so only a release that is really older is refused.
    """
    return _numeric(found) < _numeric(needed)


def _numeric(version: str) -> Tuple[int, ...]:
    """(2, 3, 0) for "2.3.0+cu121" or "2.3.0a0"; trailing zeros dropped so "2.3" == "2.3.0"."""
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
        if digits.end() < len(piece):      # "0a0", "0rc1": a pre-release of this number
            break
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def too_old(package: str, feature: str, minimum: Optional[str] = None) -> Optional[str]:
    """A one-line message when ``package`` is installed but older than needed, else None.

    Args:
        package: the pip name, e.g. ``"timm"``.
        feature: what needs it, for the message (``"vpt_explore"``, ``"attributions"``).
        minimum: the version needed; None: ``FLOORS[package]``.

    Returns:
        e.g. ``"vpt_explore needs timm>=1.0.9, but timm 1.0.3 is installed: pip install -U
        'timm>=1.0.9'"``; None when the package is recent enough or not installed at all (a missing
        package gets its own error where it is imported).
    """
    needed = minimum or FLOORS[package]
    found = installed(package)
    if found is None or not older_than(found, needed):
        return None
    return (f"{feature} needs {package}>={needed}, but {package} {found} is installed: "
            f"pip install -U '{package}>={needed}'")
