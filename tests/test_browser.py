"""What a person sees: JupyterLab in headless Chromium (Debian's, driven by Playwright), the test's own server.

Each test starts a fresh JupyterLab on 127.0.0.1 (a reused server would reuse the kernel and its
threads), runs a notebook with Run All, and reads the live panel several times while a busy cell
runs. Screenshots land in artifacts/.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
FAKES = Path(__file__).resolve().parent / "fakes"
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "colabkit-test-token"
# Busy until the test has read the panel (it then creates the file `done`), at most 60 s. The
# files `started` and `finished` say when it ran: the server's execution_state lags behind.
BUSY_CELL = ("import os, time\nopen('started', 'w').close()\nstart = time.time()\n"
             "while not os.path.exists('done') and time.time() - start < 60:\n"
             "    time.sleep(0.25)  # busy: the kernel runs this cell\n"
             "open('finished', 'w').close()")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}?token={TOKEN}", timeout=5) as reply:
        return json.loads(reply.read())


@pytest.fixture
def lab(tmp_path):
    """Start JupyterLab with extra kernel environment; returns a function(env) -> (port, notebook dir)."""
    started = []

    def start(extra_env):
        notebooks = tmp_path / "notebooks"
        notebooks.mkdir()
        settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True)
        # The news pop-up would cover the screenshot.
        (settings / "notification.jupyterlab-settings").write_text(json.dumps(
            {"fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True}))
        port = free_port()
        env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"), **extra_env}
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip", "127.0.0.1",
             "--port", str(port), "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}",
             f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}", f"--ServerApp.root_dir={notebooks}"],
            env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lab.log", "wb"))
        started.append(proc)
        deadline = time.time() + 60
        while True:
            try:
                api(port, "/api/status")
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text())
                time.sleep(0.3)
        return port, notebooks

    yield start
    for proc in started:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)  # it shuts its kernels down first
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


def open_and_run_all(browser, port, name, init_script=None):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    if init_script:
        context.add_init_script(path=str(init_script))
    page = context.new_page()
    page.goto(f"http://127.0.0.1:{port}/lab/tree/{name}?token={TOKEN}")
    # The status bar can say Idle before the kernel is attached: wait for the server to see the
    # notebook's kernel idle with a connection, then for the status bar.
    deadline = time.time() + 90
    while time.time() < deadline:
        sessions = [s for s in api(port, "/api/sessions") if s["path"].endswith(name)]
        if sessions and sessions[0]["kernel"]["execution_state"] == "idle" and sessions[0]["kernel"]["connections"] >= 1:
            break
        time.sleep(0.3)
    else:
        raise AssertionError("the notebook's kernel never became idle")
    page.wait_for_function("document.querySelector('#jp-main-statusbar')?.innerText.includes('| Idle')",
                           timeout=60_000)
    page.click("li.lm-MenuBar-item:has-text('Run')")
    page.click("li.lm-Menu-item[data-command='runmenu:run-all']")
    return page


def write_notebook(folder, name, watch_line):
    nb = new_notebook(cells=[new_code_cell("%load_ext colabkit"), new_code_cell(watch_line),
                             new_code_cell(BUSY_CELL)],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, folder / name)


def read_panel_changes(panel_locator, page, reads=4, gap=1.2):
    """Read the panel's sample number and its numbers `reads` times, `gap` seconds apart."""
    seen = []
    for _ in range(reads):
        panel = panel_locator()
        seen.append((int(panel.get_attribute("data-seq")), panel.inner_text()))
        page.wait_for_timeout(gap * 1000)
    return seen


def busy_cell_running(notebooks):
    return (notebooks / "started").exists() and not (notebooks / "finished").exists()


def wait_until_busy(notebooks, timeout=30):
    """The panel can show before the busy cell starts: wait for it to start."""
    deadline = time.time() + timeout
    while not busy_cell_running(notebooks):
        assert time.time() < deadline, "the busy cell never started"
        time.sleep(0.1)


def test_jupyterlab_widget_panel_updates_while_a_cell_is_busy(lab, browser):
    port, notebooks = lab({})
    write_notebook(notebooks, "watch.ipynb", "%gpuwatch --view widget --interval 0.5s")
    page = open_and_run_all(browser, port, "watch.ipynb")
    selector = ".jp-OutputArea-output .colabkit-widget .ck-panel"
    page.wait_for_selector(selector, timeout=60_000)
    wait_until_busy(notebooks)
    seen = read_panel_changes(lambda: page.locator(selector).first, page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "jupyterlab-widget-panel.png"))
    assert busy_cell_running(notebooks), "the busy cell ended before the panel was read"
    (notebooks / "done").touch()
    seqs = [s for s, _ in seen]
    assert len(set(seqs)) >= 3 and seqs == sorted(seqs), seqs  # changed at least twice
    texts = [t for _, t in seen]
    assert len(set(texts)) >= 3
    assert "no NVIDIA GPU" in texts[-1] and "CPU" in texts[-1] and "RAM" in texts[-1] and "disk" in texts[-1]


def test_colab_served_panel_updates_while_a_cell_is_busy(lab, browser):
    # The kernel believes it runs on Colab; the page gets Colab's proxyPort from the shim.
    port, notebooks = lab({"COLAB_RELEASE_TAG": "release-colab-test",
                           "PYTHONPATH": os.pathsep.join([str(FAKES), os.environ.get("PYTHONPATH", "")])})
    write_notebook(notebooks, "colab.ipynb", "%gpuwatch --interval 0.5s")
    page = open_and_run_all(browser, port, "colab.ipynb", init_script=FAKES / "colab_shim.js")
    page.wait_for_selector(".jp-OutputArea-output iframe.colabkit-frame", timeout=60_000)
    frame = page.frame_locator("iframe.colabkit-frame")
    frame.locator(".ck-panel").wait_for(timeout=30_000)
    wait_until_busy(notebooks)
    seen = read_panel_changes(lambda: frame.locator(".ck-panel"), page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "colab-served-panel.png"))
    assert busy_cell_running(notebooks), "the busy cell ended before the panel was read"
    (notebooks / "done").touch()
    seqs = [s for s, _ in seen]
    assert len(set(seqs)) >= 3 and seqs == sorted(seqs), seqs
    assert "Google Colab (free)" in seen[-1][1] and "left" in seen[-1][1]


def test_the_demo_runs_all_in_jupyterlab_from_its_saved_notebook(lab, browser):
    """The export reads the saved .ipynb (JupyterLab sets JPY_SESSION_NAME, nbclient does not) and
    finds its own cell there by the raw text the person typed, not IPython's transformed code."""
    port, notebooks = lab({})
    demo = nbformat.read(ROOT / "demo.ipynb", as_version=4)
    nbformat.write(demo, notebooks / "demo.ipynb")
    page = open_and_run_all(browser, port, "demo.ipynb")
    cells = page.locator(".jp-Notebook .jp-CodeCell")
    last = cells.nth(cells.count() - 1)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']")
    # Run All stops at the first error: wait for the last cell's end, or for an error.
    last.locator(".jp-OutputArea-output").filter(has_text="(exit code").or_(errors).first.wait_for(timeout=150_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "jupyterlab-demo.png"), full_page=True)
    assert errors.count() == 0, errors.first.inner_text()
    texts = [cells.nth(i).locator(".jp-OutputArea").inner_text() for i in range(cells.count())]
    dry = next(t for t in texts if "dry run: nothing was sent" in t)
    assert f"from {notebooks / 'demo.ipynb'}" in dry  # the saved notebook, not the input history
    job = texts[-1]
    assert "the job starts from step-10" in job and "completed in" in job and "(exit code 0)" in job
