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
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from playwright.sync_api import Error as PlaywrightError

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
        # TMPDIR: the kernels keep their watch history (history.py) apart from other tests' and runs'.
        (tmp_path / "tmp").mkdir()
        env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"), "TMPDIR": str(tmp_path / "tmp"),
               **extra_env}
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


def open_and_run_all(browser, port, name, init_script=None, frontend="lab", width=1280):
    """Open the notebook in JupyterLab ("lab") or Notebook 7 ("notebook") and Run All."""
    context = browser.new_context(viewport={"width": width, "height": 900})
    if init_script:
        context.add_init_script(path=str(init_script))
    page = context.new_page()
    path = f"/lab/tree/{name}" if frontend == "lab" else f"/notebooks/{name}"
    page.goto(f"http://127.0.0.1:{port}{path}?token={TOKEN}")
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
    if frontend == "lab":
        page.wait_for_function("document.querySelector('#jp-main-statusbar')?.innerText.includes('| Idle')",
                               timeout=60_000)
    else:  # Notebook 7 has no status bar: its kernel indicator in the top bar
        page.wait_for_function("document.querySelector('.jp-NotebookKernelStatus')?.innerText.includes('Idle')"
                               " || document.querySelector('[data-status=\"idle\"]') !== null", timeout=60_000)
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
        seen.append((int(panel.locator(".ck-head").get_attribute("data-seq")), panel.inner_text()))
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
    selector = ".jp-OutputArea-output .colabkit-widget.ck-panel"
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


# -- what a person sees of the panel: alerts now, levels, peaks, widths, themes, the summary ------

FAKE_GPU_CELL = (f"import sys\nsys.path.insert(0, {str(FAKES)!r})\nimport fake_nvml\n"
                 "gpu = fake_nvml.FakeGpu(memory_used=3 * fake_nvml.GiB)  # a 15 GiB T4, 20% used\n"
                 "fake_nvml.install([gpu])")
# Busy while the test reads the panel; sets the fake GPU's memory when the test says so (files
# `high` and `low`), as a training step would.
DRIVEN_CELL = ("import os, time\nopen('started', 'w').close()\nstart = time.time()\n"
               "while not os.path.exists('done') and time.time() - start < 90:\n"
               "    for level, share in (('high', 0.92), ('low', 0.30)):\n"
               "        if os.path.exists(level):\n"
               "            gpu.memory_used = int(share * gpu.memory_total)\n"
               "            os.remove(level)\n"
               "    time.sleep(0.1)\n"
               "open('finished', 'w').close()")
# 90% is the user's GPU level (the default is 95%): 92% must be an alert, in the banner and the bar.
# 1% for RAM: always past it, so the RAM bar must be red with its alert listed, from the start.
WATCH_ARGS = "--interval 0.5s --gpu-alert 90 --ram-alert 1"


def write_driven_notebook(folder, name, watch_line):
    cells = [new_code_cell("%load_ext colabkit"), new_code_cell(FAKE_GPU_CELL), new_code_cell(watch_line),
             new_code_cell(DRIVEN_CELL), new_code_cell("%gpuwatch stop"),
             new_markdown_cell("\n\n".join(f"Further work, paragraph {i}." for i in range(60)))]
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}})
    nbformat.write(nb, folder / name)


def ax_progressbars(page, frame_url_part=None):
    """Each progressbar in Chromium's accessibility tree: {name: its value} (Chromium's tree carries
    aria-valuenow as the value; it leaves aria-valuetext empty, so that is read from the page)."""
    client = page.context.new_cdp_session(page)
    params = {}
    if frame_url_part:
        def frames(tree):
            yield tree["frame"]
            for child in tree.get("childFrames", []):
                yield from frames(child)
        params["frameId"] = next(f["id"] for f in frames(client.send("Page.getFrameTree")["frameTree"])
                                 if frame_url_part in f["url"])
    found = {}
    for node in client.send("Accessibility.getFullAXTree", params)["nodes"]:
        if not node.get("ignored") and node.get("role", {}).get("value") == "progressbar":
            found[node["name"]["value"]] = node.get("value", {}).get("value")
    client.detach()
    return found


def css_var(locator, name):
    return locator.evaluate(f"el => getComputedStyle(el).getPropertyValue('{name}').trim()")


def rgb(color):
    """'#7d1913' or 'rgb(125, 25, 19)' as an (r, g, b) tuple."""
    if color.startswith("#"):
        return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))
    return tuple(int(float(v)) for v in color[color.index("(") + 1:color.index(")")].split(",")[:3])


def fill_colour(root, label):
    return rgb(root.get_by_role("progressbar", name=label, exact=True).locator(".ck-fill")
               .evaluate("el => getComputedStyle(el).backgroundColor"))


def wait_for(condition, what, timeout=20):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"never saw: {what}"
        time.sleep(0.2)


def settled(check, timeout=20):
    """Run `check` (which asserts) until it passes: the live panel replaces a part every second, so
    an element read just as it is swapped out has no box or style yet. Its last failure is raised."""
    deadline = time.time() + timeout
    while True:
        try:
            return check()
        except (AssertionError, ValueError, PlaywrightError):
            if time.time() > deadline:
                raise
            time.sleep(0.25)


def check_bars_fit(page, root, panel, width, name):
    """At this window width every bar is there, wide enough to read, inside the panel."""
    page.set_viewport_size({"width": width, "height": 900})
    page.wait_for_timeout(400)
    panel.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"))

    def fits():
        box = panel.bounding_box()
        bars = panel.get_by_role("progressbar")
        labels = [bars.nth(i).get_attribute("aria-label") for i in range(bars.count())]
        assert set(labels) >= {"GPU 0 util", "GPU 0 memory", "CPU (machine)", "RAM"}, labels
        for i, label in enumerate(labels):
            bar = bars.nth(i).bounding_box()
            assert bar is not None and bar["width"] >= 100, (width, label, bar)
            assert box["x"] - 1 <= bar["x"] and bar["x"] + bar["width"] <= box["x"] + box["width"] + 1, (width, label)
        assert panel.evaluate("el => el.scrollWidth <= el.clientWidth + 1"), f"the panel is clipped at {width} px"

    settled(fits)


def check_theme(root, panel, dark):
    """Dark or light as the notebook (or, for the Colab page, the browser) is: the card, the bars'
    tracks and the alert banner, not a bright card in a dark notebook."""
    def darkness(locator):
        return sum(rgb(locator.evaluate("el => getComputedStyle(el).backgroundColor"))) < 3 * 90

    def themed():
        assert darkness(panel) == dark
        assert darkness(root.get_by_role("progressbar", name="RAM", exact=True)) == dark
        assert darkness(root.locator(".ck-alert[data-kind='ram']")) == dark

    settled(themed)


def check_live_panel(page, root, panel, notebooks, name, dark):
    """What a person sees while the watch runs, checked from the page (root: the page, or the Colab
    panel's frame)."""
    ARTIFACTS.mkdir(exist_ok=True)
    gpu_bar = root.get_by_role("progressbar", name="GPU 0 memory", exact=True)
    gpu_bar.wait_for(timeout=30_000)
    wait_until_busy(notebooks)
    assert gpu_bar.get_attribute("aria-valuenow") == "20"
    # The user's RAM level (1%): the bar is the alert colour and the banner lists the RAM alert.
    palette = settled(lambda: {state: rgb(css_var(panel, f"--ck-{state}")) for state in ("ok", "high", "alert")})
    banner = root.locator(".ck-banner")

    def user_levels():
        assert fill_colour(root, "RAM") == palette["alert"]
        assert banner.locator(".ck-alert[data-kind='ram']:not(.ck-cleared)").count() == 1
        assert fill_colour(root, "GPU 0 memory") == palette["ok"]
        assert banner.locator("[data-kind='gpu_memory']").count() == 0

    settled(user_levels)
    check_theme(root, panel, dark)

    (notebooks / "high").touch()  # 92%: past the user's 90% (under the default 95%)
    gpu_alert = banner.locator(".ck-alert[data-kind='gpu_memory']:not(.ck-cleared)")
    gpu_alert.wait_for(timeout=20_000)
    assert gpu_bar.get_attribute("aria-valuenow") == "92" and fill_colour(root, "GPU 0 memory") == palette["alert"]
    assert "GPU 0 memory 92% full" in gpu_alert.inner_text() and "since" in gpu_alert.inner_text()
    assert "GPU 0 memory" in root.locator("[role=alert]").inner_text()  # announced
    # The accessibility tree carries each bar's value.
    ax = ax_progressbars(page, "token=" if root is not page else None)
    assert ax["GPU 0 memory"] == 92 and ax["GPU 0 util"] == 37 and "CPU (machine)" in ax and "RAM" in ax, ax
    assert gpu_bar.get_attribute("aria-valuetext").startswith("92% · 13.8 / 15.0 GiB, alert")
    page.screenshot(path=str(ARTIFACTS / f"{name}-alert.png"))

    (notebooks / "low").touch()  # back to 30%: the alert clears and says so; the peak stays marked
    root.locator(".ck-alert.ck-cleared[data-kind='gpu_memory']").wait_for(timeout=20_000)
    cleared = root.locator(".ck-alert.ck-cleared[data-kind='gpu_memory']").inner_text()
    assert "cleared" in cleared and "reached 92%, now 30%" in cleared, cleared
    assert banner.locator(".ck-alert[data-kind='ram']:not(.ck-cleared)").count() == 1  # RAM still holds
    assert gpu_bar.get_attribute("aria-valuenow") == "30" and fill_colour(root, "GPU 0 memory") == palette["ok"]
    peak = gpu_bar.locator(".ck-peak")
    bar_box, peak_box = gpu_bar.bounding_box(), peak.bounding_box()
    at = (peak_box["x"] - bar_box["x"]) / bar_box["width"]
    assert abs(at - 0.92) < 0.02, at  # the marker is drawn at the real peak
    assert "peak 92%" in root.locator(".ck-gpu-mem .ck-val").inner_text()
    for width in (800, 1366):
        check_bars_fit(page, root, panel, width, name)
    page.add_style_tag(content=".ck-pinned{visibility:hidden}")  # the corner chip would cover the picture
    panel.screenshot(path=str(ARTIFACTS / f"{name}-panel.png"))
    page.add_style_tag(content=".ck-pinned{visibility:visible}")


def check_summary_after_stop(page, notebooks, summary_in, name):
    (notebooks / "done").touch()  # the busy cell ends; Run All goes on to %gpuwatch stop
    summary = summary_in.locator(".colabkit-summary")
    summary.wait_for(timeout=30_000)
    text = summary.inner_text()
    assert "colabkit watch ended" in text and "GPU 0 memory" in text and "92% · 13.8 / 15.0 GiB" in text
    assert "GPU 0 memory 92% full" in text and "(cleared" in text and "RAM" in text
    assert summary.locator("svg.ck-chart").count() == 1
    page.screenshot(path=str(ARTIFACTS / f"{name}-summary.png"))
    summary.screenshot(path=str(ARTIFACTS / f"{name}-summary-only.png"))


def set_jupyter_theme(page, dark):
    page.click("li.lm-MenuBar-item:has-text('Settings')")
    page.hover("li.lm-Menu-item:has-text('Theme')")
    page.click(f"li.lm-Menu-item:has-text('JupyterLab {'Dark' if dark else 'Light'}')")
    page.wait_for_function(f"document.body.dataset.jpThemeLight === '{str(not dark).lower()}'", timeout=15_000)


@pytest.mark.parametrize("frontend", ["lab", "notebook"])
def test_panel_in_jupyter_tells_the_truth_fits_and_leaves_a_summary(lab, browser, frontend):
    port, notebooks = lab({})
    write_driven_notebook(notebooks, "watch.ipynb", f"%gpuwatch --view widget {WATCH_ARGS}")
    page = open_and_run_all(browser, port, "watch.ipynb", frontend=frontend, width=1366)
    panel = page.locator(".jp-OutputArea-output .colabkit-widget.ck-panel")
    panel.wait_for(timeout=60_000)
    # Light in JupyterLab, dark in Notebook 7; each switches to the other theme halfway.
    dark = frontend == "notebook"
    set_jupyter_theme(page, dark)
    check_live_panel(page, page, panel, notebooks, f"{frontend}-{'dark' if dark else 'light'}", dark)
    set_jupyter_theme(page, not dark)
    check_theme(page, panel, not dark)
    check_bars_fit(page, page, panel, 800, f"{frontend}-{'light' if dark else 'dark'}")
    # Always in view: working further down, the reading stays on screen and brings the panel back.
    page.locator(".jp-MarkdownCell").last.scroll_into_view_if_needed()
    page.wait_for_timeout(1500)
    assert not panel.is_visible() or panel.bounding_box()["y"] + panel.bounding_box()["height"] < 0 or \
        panel.bounding_box()["y"] > 900
    pinned = page.locator(".ck-pinned")
    assert pinned.is_visible() and "RAM" in pinned.inner_text() and "⚠ 1 alert" in pinned.inner_text()
    box = pinned.bounding_box()
    assert 0 <= box["y"] and box["y"] + box["height"] <= 900
    where = "ck-in-statusbar" if frontend == "lab" else "ck-floating"
    assert where in pinned.get_attribute("class")
    page.screenshot(path=str(ARTIFACTS / f"{frontend}-pinned.png"))
    size = page.viewport_size
    page.screenshot(path=str(ARTIFACTS / f"{frontend}-pinned-bottom.png"),
                    clip={"x": 0, "y": size["height"] - 44, "width": size["width"], "height": 44})
    pinned.click()
    page.wait_for_timeout(800)
    top = panel.bounding_box()["y"]
    assert 0 <= top < 900, top
    check_summary_after_stop(page, notebooks, page.locator(".jp-OutputArea-output"), frontend)
    wait_for(lambda: page.locator(".ck-pinned").count() == 0, "the pinned reading going with its watch", 15)


def test_colab_panel_tells_the_truth_fits_and_leaves_a_summary(lab, browser):
    port, notebooks = lab({"COLAB_RELEASE_TAG": "release-colab-test",
                           "PYTHONPATH": os.pathsep.join([str(FAKES), os.environ.get("PYTHONPATH", "")])})
    write_driven_notebook(notebooks, "colab.ipynb", f"%gpuwatch {WATCH_ARGS}")
    page = open_and_run_all(browser, port, "colab.ipynb", init_script=FAKES / "colab_shim.js", width=1366)
    page.wait_for_selector(".jp-OutputArea-output iframe.colabkit-frame", timeout=60_000)
    frame_element = page.locator("iframe.colabkit-frame")
    assert frame_element.get_attribute("title").startswith("colabkit live panel")
    frame = page.frame_locator("iframe.colabkit-frame")
    panel = frame.locator(".ck-panel")
    check_live_panel(page, frame, panel, notebooks, "colab-light", dark=False)
    # The frame is as tall as its page (two alerts in the banner included): nothing hidden.
    wait_for(lambda: abs(frame_element.bounding_box()["height"] -
                         panel.evaluate("el => document.documentElement.scrollHeight")) <= 2,
             "the frame as tall as its page", 10)
    page.emulate_media(color_scheme="dark")  # the served page follows the browser's scheme
    page.wait_for_timeout(300)
    check_theme(frame, panel, dark=True)
    check_bars_fit(page, frame, panel, 800, "colab-dark")
    page.emulate_media(color_scheme="light")
    check_summary_after_stop(page, notebooks, page.locator(".jp-OutputArea-output"), "colab")
    assert page.locator("iframe.colabkit-frame").count() == 0
