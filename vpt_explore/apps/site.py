"""The course as a static web site: every notebook executed, exported to HTML, one index page.

    python -m vpt_explore site                    # default offline profile (about 40 min, 2 CPU cores)
    python -m vpt_explore site --fast --out /tmp/s  # CI-sized runs (VPT_FAST=1), minutes
    python -m vpt_explore site --only 01 06       # some notebooks

Notebooks are executed in memory (nbclient, one kernel each, cwd ``notebooks/``, the hub offline)
and never written back, so the copies in git stay stripped; the outputs live only in the site.
"""
from __future__ import annotations

import argparse
import html
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from ..errors import ConfigError, require_package

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
FAST_CELL_TIMEOUT = 300
DEFAULT_CELL_TIMEOUT = 3600


@dataclass(frozen=True)
class Page:
    """One executed notebook of the site."""
    source: Path
    html_name: str
    title: str
    seconds: float


def course_notebooks(folder: Path = NOTEBOOK_DIR, only: Sequence[str] = ()) -> List[Path]:
    """The course notebooks ``NN_*.ipynb`` in order; ``only`` keeps those whose number is listed."""
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if only:
        unknown = sorted(set(only) - {p.name[:2] for p in found})
        if unknown:
            raise ConfigError(f"only={list(only)}: no notebook numbered {unknown} in {folder}; "
                              f"choose from {[p.name[:2] for p in found]}")
        found = [p for p in found if p.name[:2] in only]
    return found


def notebook_title(nb) -> str:
    """The first Markdown ``# heading`` of a notebook, else its file name."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            match = re.search(r"^#\s+(.+)$", cell.source, re.M)
            if match:
                return match.group(1).replace("`", "").strip()  # Markdown code marks
    return nb.metadata.get("title", "notebook")


def execute(path: Path, fast: bool, timeout: Optional[int] = None) -> Tuple[object, float]:
    """Run a notebook top to bottom in a fresh kernel; return (executed notebook, seconds).

    Raises:
        nbclient.exceptions.CellExecutionError: naming the cell and the error, when a cell fails.
    """
    nbformat = require_package("nbformat", feature="the course site")
    nbclient = require_package("nbclient", feature="the course site")
    nb = nbformat.read(path, as_version=4)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    if fast:
        env["VPT_FAST"] = "1"
    limit = timeout or (FAST_CELL_TIMEOUT if fast else DEFAULT_CELL_TIMEOUT)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=limit, startup_timeout=120,
                                     store_widget_state=True,
                                     resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute(env=env)
    return nb, time.perf_counter() - start


def to_html(nb) -> str:
    """One executed notebook as a standalone HTML page (figures embedded)."""
    nbconvert = require_package("nbconvert", feature="the course site")
    body, _resources = nbconvert.HTMLExporter(template_name="lab").from_notebook_node(nb)
    return body


def index_html(pages: Sequence[Page], fast: bool) -> str:
    """The site's front page: the notebooks in order, how each was run and how long it took."""
    from ..versions import installed

    mode = "fast mode (VPT_FAST=1, CI sizes)" if fast else "the default offline profile"
    rows = "\n".join(
        f'<tr><td><a href="{html.escape(p.html_name)}">{html.escape(p.title)}</a></td>'
        f"<td><code>{html.escape(p.source.name)}</code></td><td>{p.seconds:.0f} s</td></tr>"
        for p in pages)
    stack = ", ".join(f"{n} {installed(n) or '-'}" for n in ("vpt_explore", "torch", "timm", "ipywidgets"))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>vpt_explore: the course</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}}
td,th{{padding:.3em .8em;text-align:left}}tr:nth-child(even){{background:#f4f4f4}}</style></head>
<body><h1>Visual Prompt Tuning: the course</h1>
<p>Every notebook executed top to bottom in {mode}, offline, on {time.strftime('%Y-%m-%d')}
({html.escape(stack)}).</p>
<table><tr><th>notebook</th><th>file</th><th>run time</th></tr>
{rows}
</table></body></html>
"""


def build_site(out: Path, notebooks: Sequence[Path], fast: bool = False,
               timeout: Optional[int] = None, log=print) -> Path:
    """Execute ``notebooks``, write one HTML page each and ``index.html`` into ``out``.

    Args:
        out: the site folder (created; existing pages are overwritten).
        notebooks: ``.ipynb`` files, e.g. ``course_notebooks()``.
        fast: run with ``VPT_FAST=1`` (CI sizes) instead of the default profile.
        timeout: seconds per cell; None: 300 in fast mode, 3600 otherwise.
        log: called with one line per notebook.

    Returns:
        The path of ``index.html``.
    """
    if not notebooks:
        raise ConfigError("build_site got no notebooks (the course lives in notebooks/ of a source "
                          "checkout; pass --notebooks DIR)")
    out.mkdir(parents=True, exist_ok=True)
    pages = []
    for path in notebooks:
        nb, seconds = execute(path, fast, timeout)
        page = Page(path, path.stem + ".html", notebook_title(nb), seconds)
        (out / page.html_name).write_text(to_html(nb), encoding="utf-8")
        log(f"{path.name}: {seconds:.0f} s -> {out / page.html_name}")
        pages.append(page)
    index = out / "index.html"
    index.write_text(index_html(pages, fast), encoding="utf-8")
    return index


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m vpt_explore site [--out DIR] [--fast] [--only NN ...] [--timeout S]``."""
    parser = argparse.ArgumentParser(prog="python -m vpt_explore site",
                                     description="Execute the course notebooks and build a static HTML site.")
    parser.add_argument("--out", type=Path, default=Path("site"), help="site folder (default: site)")
    parser.add_argument("--fast", action="store_true", help="CI sizes (VPT_FAST=1) instead of the default profile")
    parser.add_argument("--only", nargs="+", default=(), metavar="NN", help="notebook numbers, e.g. 01 06")
    parser.add_argument("--timeout", type=int, default=None, help="seconds per cell")
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOK_DIR, help="folder of NN_*.ipynb")
    args = parser.parse_args(argv)
    index = build_site(args.out, course_notebooks(args.notebooks, args.only), args.fast, args.timeout)
    print(f"site: {index}")
    return 0
