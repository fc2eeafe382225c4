"""make site: the course executed and browsable. The builder finds the notebooks in order, takes
titles from their first heading, and (marker ``notebooks``) builds a site from fast-mode runs
without touching the stripped copies in git."""
from __future__ import annotations

import hashlib

import nbformat
import pytest

import vpt_explore as vx
from vpt_explore.apps import site


def test_course_notebooks_in_order_and_only():
    all_ = site.course_notebooks()
    assert [p.name[:2] for p in all_] == sorted(p.name[:2] for p in all_) and len(all_) >= 9
    assert [p.name[:2] for p in site.course_notebooks(only=["06", "01"])] == ["01", "06"]
    with pytest.raises(vx.ConfigError, match="no notebook numbered"):
        site.course_notebooks(only=["42"])


def test_title_is_the_first_heading():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("[badge](x)\n\n# 07 · Title `here`\ntext")])
    assert site.notebook_title(nb) == "07 · Title here"


def test_no_notebooks_is_a_clear_error(tmp_path):
    with pytest.raises(vx.ConfigError, match="--notebooks"):
        site.build_site(tmp_path, [])


@pytest.mark.notebooks
@pytest.mark.slow
def test_site_builds_from_fast_runs(tmp_path):
    pytest.importorskip("nbclient")
    pytest.importorskip("nbconvert")
    chosen = site.course_notebooks(only=["01", "06"])
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in chosen}
    index = site.build_site(tmp_path, chosen, fast=True, log=lambda line: None)
    text = index.read_text()
    for p in chosen:
        page = tmp_path / f"{p.stem}.html"
        assert f'href="{page.name}"' in text and page.stat().st_size > 10_000
        assert "jp-OutputArea" in page.read_text()                 # outputs are in the page
        assert hashlib.sha256(p.read_bytes()).hexdigest() == before[p], "the git copy stays stripped"
    assert "<img" in (tmp_path / f"{chosen[0].stem}.html").read_text()  # figures embedded
    assert "fast mode" in text
