"""`make present`: the lab as a Voila app renders without training and gives its kernel back.

Starts voila with the flags of the Makefile's ``present`` recipe (read from the Makefile, so the test
follows it) on notebook 06 in the offline default profile, opens it in headless Chromium, waits for
the panel, checks that no run happened before the page rendered, then leaves the page and waits for
the kernel to be culled. Every wait is bounded; voila and the browser are always shut down.
"""
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.apps.test_browser import CHROMIUM, CHROMIUM_ARGS, free_port, poll, stop_group, sync_api

pytestmark = pytest.mark.browser
pytest.importorskip("voila", reason="voila is not installed")
psutil = pytest.importorskip("psutil")
ROOT = Path(__file__).resolve().parents[2]


def present_flags() -> list:
    """The voila options of `make present`, with $(VOILA_CULL_S) filled in from the Makefile."""
    make = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^present:.*\n((?:\t.*\n)+)", make, re.M).group(1).replace("\\\n", " ")
    cull = re.search(r"^VOILA_CULL_S\s*\?=\s*(\d+)", make, re.M).group(1)
    words = shlex.split(recipe.replace("$(VOILA_CULL_S)", cull))
    return [w for w in words if w.startswith("--")]


def kernels(proc) -> list:
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    alive = []
    for k in kids:
        try:
            if k.status() != psutil.STATUS_ZOMBIE and "ipykernel" in " ".join(k.cmdline()):
                alive.append(k)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_present_renders_the_panel_without_training_and_frees_its_kernel(tmp_path):
    flags = present_flags()
    cull = next(int(f.split("=")[1]) for f in flags if "cull_idle_timeout" in f)
    interval = next(int(f.split("=")[1]) for f in flags if "cull_interval" in f)
    port = free_port()
    env = dict(os.environ, VPT_PROFILE="cpu", HF_HUB_OFFLINE="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1",
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), IPYTHONDIR=str(tmp_path / "ipython"))
    env.pop("VPT_FAST", None)
    log = open(tmp_path / "voila.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "voila", str(ROOT / "notebooks" / "06_training_lab.ipynb"),
                             "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1", *flags],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        poll(lambda: proc.poll() is None and socket.create_connection(("127.0.0.1", port), 0.5).close() is None,
             60, "the voila server")
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                t0 = time.time()
                page.goto(f"http://127.0.0.1:{port}/", timeout=180_000)
                page.locator("button", has_text="Train").first.wait_for(timeout=180_000)
                print(f"panel rendered in {time.time() - t0:.1f} s")
                assert page.locator("table.vx-results tbody tr").count() == 0  # nothing trained first
                assert len(kernels(proc)) == 1
                page.goto("about:blank")  # the lecturer closes the page
            finally:
                browser.close()
        poll(lambda: not kernels(proc), cull + 2 * interval + 30, "the kernel to be freed after the page closed",
             every=1.0)
        assert "Culling 'idle' kernel" in (tmp_path / "voila.log").read_text()
    finally:
        stop_group(proc)
        log.close()
