"""The Training Lab in a real browser: JupyterLab + headless Chromium.

Starts ``jupyter lab`` on 127.0.0.1 with a random token on a copy of notebook 06 (fast mode,
offline), runs all cells from the Run menu, moves the layers / length / location controls, clicks
Train and checks that the curves and the results table update. Every wait is bounded; the server
and the browser are always shut down.
"""
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "06_training_lab.ipynb"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
OVERRIDES = {  # no virtualised cells (all widgets stay in the DOM), no news / update checks (offline)
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension:notification": {"checkForUpdates": False, "fetchNews": "false"},
}

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium, or make browser-deps)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed "
                               "(pip install playwright; its own browser download is not needed)")
pytest.importorskip("jupyterlab", reason="jupyterlab is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base: str, token: str, path: str, timeout: float = 5.0):
    req = urllib.request.Request(f"{base}{path}", headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def poll(cond, timeout: float, what: str, every: float = 0.25):
    """Call ``cond`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            value = cond()
        except Exception:  # noqa: BLE001 - server or page not ready yet
            value = None
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def stop_group(proc: subprocess.Popen) -> None:
    """End a server started with ``start_new_session=True`` and everything it started (kernels)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture
def lab_server(tmp_path):
    """A JupyterLab server on a free port, in a temporary root holding a copy of notebook 06."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    app_settings = tmp_path / "share" / "jupyter" / "lab" / "settings"
    app_settings.mkdir(parents=True)
    (app_settings / "overrides.json").write_text(json.dumps(OVERRIDES))
    env = dict(os.environ, VPT_FAST="1", HF_HUB_OFFLINE="1", MPLBACKEND="Agg",
               OMP_NUM_THREADS="1",  # small CPU batches; shared CI cores
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "user-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), IPYTHONDIR=str(tmp_path / "ipython"))
    port, token = free_port(), secrets.token_hex(16)
    base = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "jupyter.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--ServerApp.token={token}",
         f"--ServerApp.root_dir={root}", f"--LabApp.app_settings_dir={app_settings}"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        poll(lambda: proc.poll() is None and api(base, token, "/api/status"), 60, "the Jupyter server")
        yield {"base": base, "token": token, "log": tmp_path / "jupyter.log"}
    finally:
        try:  # the server stops its kernels; then make sure the whole process group is gone
            req = urllib.request.Request(f"{base}/api/shutdown", method="POST",
                                         headers={"Authorization": f"token {token}"})
            urllib.request.urlopen(req, timeout=5)
            proc.wait(timeout=15)
        except Exception:  # noqa: BLE001
            pass
        stop_group(proc)
        log.close()


def kernel_idle(server) -> bool:
    kernels = api(server["base"], server["token"], "/api/kernels")
    return bool(kernels) and all(k["execution_state"] == "idle" for k in kernels)


def control(page, kind: str, label: str):
    """The ipywidgets control of class ``widget-<kind>`` whose description is ``label``."""
    name = page.locator(".widget-label", has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))
    return page.locator(f".widget-{kind}", has=name).first


def test_training_lab_in_jupyterlab(lab_server, tmp_path):
    server = lab_server
    shot = tmp_path / "training_lab.png"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = None
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.set_default_timeout(30_000)
            page.goto(f"{server['base']}/lab/tree/{NOTEBOOK.name}?token={server['token']}",
                      wait_until="domcontentloaded", timeout=60_000)
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
            poll(lambda: kernel_idle(server), 60, "the kernel to start")  # first start can be slow

            # Run > Run All Cells
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
            rows = page.locator("table.vx-results tbody tr")
            poll(lambda: rows.count() >= 2, 150, "the fast-mode runs in the notebook (2 table rows)", 0.5)
            poll(lambda: kernel_idle(server) and page.locator(".jp-InputPrompt", has_text="[*]").count() == 0,
                 60, "all cells to finish")
            assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                                has_text="Traceback").count() == 0
            before = rows.count()
            curves = page.locator(".widget-output img")
            old_src = curves.first.get_attribute("src")

            # the fast-mode cell left method=linear: pick VPT-deep, then the prompt design
            control(page, "dropdown", "method").locator("select").select_option("vpt-deep")
            page.locator(".widget-toggle-buttons button", has_text=re.compile(r"^\s*last-k\s*$")).click()
            control(page, "dropdown", "location").locator("select").select_option("prepend-pixel")
            length = control(page, "slider", "length p")
            start = int(length.locator(".widget-readout").inner_text().strip())
            handle = length.locator(".noUi-handle")
            handle.focus()
            for _ in range(2):
                handle.press("ArrowRight")
            poll(lambda: int(length.locator(".widget-readout").inner_text().strip()) == start + 2, 10,
                 "the length slider to move")
            train = page.locator("button.jupyter-button", has_text=re.compile(r"^\s*Train\s*$"))
            poll(lambda: train.is_enabled(), 10, "Train to be enabled")
            train.click()

            poll(lambda: rows.count() == before + 1, 120, "a new row in the results table", 0.5)
            new_row = rows.nth(before).inner_text()
            assert "vpt-deep" in new_row and "location=prepend-pixel" in new_row, new_row
            assert f"p={start + 2}" in new_row and "L3,4,5" in new_row and "completed" in new_row, new_row
            poll(lambda: curves.count() >= 1 and curves.first.get_attribute("src") != old_src, 30,
                 "the training curves to be redrawn")
            status = page.locator(".widget-label", has_text=re.compile(r"^(completed|stopped|error)"))
            poll(lambda: status.count() >= 1 and train.is_enabled(), 30, "the run to finish")
            assert status.first.inner_text().startswith("completed")
            assert page.locator(".widget-html", has_text="\u2717").count() == 0  # no red error
            panel = page.locator(".jp-OutputArea-output .widget-vbox").first
            panel.evaluate("e => e.scrollIntoView({block: 'start'})")
            page.screenshot(path=str(shot))
        except BaseException:
            if page is not None:
                page.screenshot(path=str(shot))
            print(server["log"].read_text()[-4000:])
            raise
        finally:
            browser.close()
    assert shot.exists() and shot.stat().st_size > 10_000
