"""Static checks of the course conventions on the notebooks' JSON: fast, no kernel.

* one ``PROFILE`` and one ``PRECOMPUTED`` in every parameters cell, and the sizes read from the
  profile (``vx.use_profile(PROFILE)``), not from ``VPT_FAST`` directly;
* the notebooks that train use the profile's backbone and recipe, show "your run" next to the
  reference and honour ``PRECOMPUTED``;
* no finding stated in Markdown without the paper (and its table or figure) named next to it.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]
TRAINING = ("00", "03", "04", "05", "06", "07", "08", "09", "11")      # notebooks that train models
SHOW_REFERENCE = ("00", "03", "04", "05", "06", "07", "08", "09", "11")  # ... and print the reference
# notebooks that may load a specific offline backbone by name (the lesson needs its classifier head)
NAMED_BACKBONE_OK = ("01", "02")

PROFILE_LINE = re.compile(r"^PROFILE = None\b", re.M)
PRECOMPUTED_LINE = 'PRECOMPUTED = os.environ.get("VPT_PRECOMPUTED") == "1"'
# a sentence that states a finding: "X beats / outperforms / loses / lags ..."
FINDING = re.compile(r"\b(beats?|outperforms?|loses|lags|is (slightly )?better|wins)\b", re.I)
PAPER_LABEL = re.compile(r"\b[Pp]aper\b.{0,60}?\((Table|Tables|Fig|Figs|Sec|App)\.?\s*[\dA-Z]|"
                         r"\((Table|Fig|Figs|Sec)\.?\s*\d", re.S)


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _code(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def _num(path: Path) -> str:
    return path.name[:2]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_parameters_cell_has_profile_and_precomputed(path):
    nb = _read(path)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    src = params[0].source
    assert PROFILE_LINE.search(src), "parameters cell: `PROFILE = None  # ...`"
    assert PRECOMPUTED_LINE in src, f"parameters cell: `{PRECOMPUTED_LINE}`"
    assert 'os.environ.get("VPT_FAST")' not in src, "sizes come from the profile, not from VPT_FAST"
    code = _code(nb)
    assert "P = vx.use_profile(PROFILE)" in code, "resolve the profile once: P = vx.use_profile(PROFILE)"
    assert 'FAST = P.name == "fast"' in code
    assert code.index("P = vx.use_profile(PROFILE)") > code.index(src), "the profile is resolved after the parameters"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_training_notebooks_use_the_profile(path):
    code = _code(_read(path))
    if _num(path) not in NAMED_BACKBONE_OK:
        assert not re.search(r"load_backbone\(\s*[\"']tiny[\"']", code), \
            "use P.load_backbone() (the profile's backbone), not load_backbone('tiny')"
    if _num(path) in TRAINING and _num(path) != "06":
        assert "P.load_backbone()" in code
        assert "P.train_kwargs()" in code, "train with the profile's recipe: vx.TrainConfig(**P.train_kwargs(), ...)"
        hard = re.findall(r"vx\.TrainConfig\(\s*epochs=[^)]*\)", code)
        assert not [h for h in hard if "base_lr" not in h], f"TrainConfig with hard-coded sizes: {hard}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_training_notebooks_show_the_reference(path):
    if _num(path) not in SHOW_REFERENCE:
        pytest.skip("this notebook does not train")
    code = _code(_read(path))
    assert "vx.reference.format_compare(" in code, "print your run next to the reference"
    assert "PRECOMPUTED" in code.replace(PRECOMPUTED_LINE, ""), "the notebook must honour PRECOMPUTED"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_findings_in_markdown_name_the_paper(path):
    """A Markdown paragraph that states a finding names the paper and its table or figure."""
    nb = _read(path)
    bad = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        for para in re.split(r"\n\s*\n|\n(?=\|)|\n(?=\s*[*\d]+[.)]?\s)", cell.source):
            if para.lstrip().startswith(("1.", "2.", "3.", "4.", "5.", "6.")) and "?" in para:
                continue  # an exercise asks, it does not state
            if FINDING.search(para) and not PAPER_LABEL.search(para):
                bad.append(f"cell {i}: {para.strip()[:120]!r}")
    assert not bad, "findings without 'Paper (Table/Fig. ...)' nearby:\n" + "\n".join(bad)


def test_wrap_up_prints_the_directions():
    nb = _read(next(p for p in NOTEBOOKS if _num(p) == "09"))
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "| paper finding (table/fig) | offline reference (printed below) | where to see it |" in md
    code = _code(nb)
    assert "vx.reference.format_directions(path=P.reference)" in code  # the reference of the run's backbone
    for args in ('"vpt-deep", "linear"', '"vpt-deep", "vpt-shallow"', '"vpt-deep", "full"'):
        assert f"gap_sentence({args}" in code, f"the wrap-up prints gap_sentence({args}, ...)"
