import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from colabkit import history as histories
from colabkit import platform as p
from colabkit.telemetry import DiskReading, GpuProcess, GpuReading, Sample
from colabkit.views import chart, render
from colabkit.views.served import PanelServer
from colabkit.views.text import TextView
from colabkit.watcher import Activity, Thresholds, Watcher
from test_watcher import Script, sample

GiB = 1024**3


def bars(html):
    """{aria-label: (aria-valuenow, aria-valuetext, fill class)} for every progressbar in the HTML."""
    found = {}
    for m in re.finditer(r'<div class="ck-bar" role="progressbar" aria-label="([^"]+)"([^>]*)>(<div class="ck-fill ([^"]+)")?', html):
        attrs = dict(re.findall(r'(aria-[a-z]+)="([^"]*)"', m.group(2)))
        found[m.group(1)] = (attrs.get("aria-valuenow"), attrs.get("aria-valuetext"), m.group(4))
    return found


def part(watcher, name):
    return dict(render.parts(watcher))[name]


def test_panel_shows_every_resource_and_na_for_unknown_fields():
    gpu = GpuReading("0", "Tesla T4", None, None, 14 * GiB, 15 * GiB, 70.0, None, None,
                     processes=(GpuProcess(42, "python3", 13 * GiB),))
    now = time.time()
    s = Sample(now, 55.0, 6 * GiB, 12 * GiB, "cgroup v2", 0, 0, (), (gpu,), "ok",
               kernel_cpu_percent=40.0, kernel_ram_used=3 * GiB)
    colab = p.Platform(p.COLAB, p.COLAB_FREE_CAP, "", None, now - 3600 - 30, tier="free")
    watcher = Watcher(sampler=Script([s]), platform=colab)
    watcher.tick()
    html = render.panel_html(watcher)
    for expected in ("Google Colab (free)", "GPU 0 util", "n/a", "93% · 14.0 / 15.0 GiB", "70 °C",
                     "python3 13.0 GiB", "CPU (machine)", "55%", "RAM (cgroup v2)", "50% · 6.0 / 12.0 GiB",
                     "this kernel: CPU 40% of the machine · RAM 3.0 GiB", "VM up 1h 00m", "10h 59m left",
                     'data-seq="1"', "Last 10m 00s: not enough samples yet"):
        assert expected in html, expected
    assert bars(html)["GPU 0 util"] == (None, "not available", None)
    text = render.text_line(s, colab)
    assert "GPU0 n/a mem 14.0 GiB / 15.0 GiB (93%) 70C n/a" in text and "session left 10h 59m" in text
    jupyter = p.Platform(p.JUPYTER, None, "", None, now - 90)
    w2 = Watcher(sampler=Script([s]), platform=jupyter)
    w2.tick()
    assert "kernel up 1m 30s" in part(w2, "head")  # elsewhere the session is the kernel's


def test_banner_lists_active_alerts_and_clears_each_when_its_reading_falls():
    t0 = 1_000_000.0
    steps = [sample(ram=0.5, t=t0), sample(ram=0.95, t=t0 + 1), sample(ram=0.96, gpu=0.97, t=t0 + 2),
             sample(ram=0.4, gpu=0.98, t=t0 + 3), sample(ram=0.4, gpu=0.3, t=t0 + 4)]
    w = Watcher(sampler=Script(steps))
    w.tick()
    assert part(w, "banner").count("ck-alert") == 0 and part(w, "announce") == ""
    w.tick()
    clock = lambda t: time.strftime("%H:%M:%S", time.localtime(t))  # noqa: E731
    banner = part(w, "banner")
    assert f"since {clock(t0 + 1)}" in banner and "RAM 95% full" in banner
    w.tick()
    banner = part(w, "banner")
    # Both alerts at once (the earlier RAM one is not replaced by the GPU one), the RAM one live.
    assert "RAM 96% full" in banner and "RAM 95%" not in banner and "GPU 0 memory 97% full" in banner
    assert f"since {clock(t0 + 1)}" in banner and f"since {clock(t0 + 2)}" in banner
    assert 'role="alert"' in part(w, "announce") and "RAM, GPU 0 memory" in part(w, "announce")
    w.tick()  # RAM falls back to 40%: still listed, cleared and dimmed, saying when
    banner = part(w, "banner")
    assert f'ck-cleared" data-kind="ram"><span class="ck-when">✓ cleared {clock(t0 + 3)}' in banner
    assert "RAM reached 96%, now 40%" in banner and "GPU 0 memory 98% full" in banner
    assert "RAM" not in part(w, "announce")
    w.tick()
    assert part(w, "banner").count("ck-cleared") == 2 and part(w, "announce") == ""
    assert [a.kind for a in w.alerts] == ["ram", "gpu_memory"]  # each said once
    later = sample(ram=0.4, gpu=0.3, t=t0 + 4 + 301)
    w.sampler = Script([later])
    w.tick()
    assert "ck-alert" not in part(w, "banner")  # cleared alerts go after five minutes


def test_a_countdown_in_the_banner_stays_live():
    start = 1_000_000.0
    cap = p.COLAB_FREE_CAP
    w = Watcher(sampler=Script([sample(t=start + cap - 29 * 60), sample(t=start + cap - 28 * 60 - 30)]),
                platform=p.Platform(p.COLAB, cap, "", None, start, tier="free"))
    w.tick()
    assert "29m 00s left" in part(w, "banner")
    w.tick()
    assert "28m 30s left" in part(w, "banner") and "29m 00s" not in part(w, "banner")
    assert len(w.alerts) == 1


@pytest.mark.parametrize("levels,ram,gpu,expect_ram,expect_gpu", [
    ({}, 0.5, 0.92, "ok", "high"),  # red at 90% with no alert until 95% was the bug: now "high", no alert
    ({"ram": 0.01}, 0.5, 0.2, "alert", "ok"),  # --ram-alert 1: red bar and an alert, together
    ({"gpu_memory": 0.90, "ram": 0.6}, 0.5, 0.92, "high", "alert"),
])
def test_bar_colour_and_banner_agree_at_the_users_levels(levels, ram, gpu, expect_ram, expect_gpu):
    w = Watcher(sampler=Script([sample(ram=ram, gpu=gpu)]), thresholds=Thresholds(**levels))
    w.tick()
    html = render.panel_html(w)
    found = bars(html)
    assert found["RAM"][2] == f"ck-{expect_ram}" and found["GPU 0 memory"][2] == f"ck-{expect_gpu}"
    banner = part(w, "banner")
    assert ("RAM " in banner) == (expect_ram == "alert")
    assert ("GPU 0 memory" in banner) == (expect_gpu == "alert")
    # Said in words too, not by colour alone.
    assert ("ALERT" in found["RAM"][1].upper()) == (expect_ram == "alert")
    assert ("high" in found["GPU 0 memory"][1]) == (expect_gpu == "high")


def test_peak_marker_shows_the_sessions_real_peak():
    w = Watcher(sampler=Script([sample(ram=0.3), sample(ram=0.8), sample(ram=0.4), sample(ram=0.35)]))
    w.tick()
    assert "ck-peak" not in part(w, "ram")  # peak == now: no marker
    for _ in range(3):
        w.tick()
    ram = part(w, "ram")
    assert re.search(r'class="ck-peak" style="left:80\.0%"', ram), ram
    assert "35% ·" in ram and "peak 80%" in ram and bars(ram)["RAM"][0] == "35"


def test_every_bar_is_a_progressbar_with_its_value():
    gpus = (GpuReading("0", "A100", None, 80.0, 20 * GiB, 40 * GiB, 50.0, 100.0, 250.0,
                       mig_instances=(GpuReading("0:1", None, None, None, 4 * GiB, 10 * GiB, None, None, None),)),)
    s = Sample(time.time(), 12.0, 3 * GiB, 12 * GiB, "host", 1 * GiB, 4 * GiB,
               (DiskReading("working folder", "/", 30 * GiB, 100 * GiB),), gpus, "ok")
    w = Watcher(sampler=Script([s]))
    w.tick()
    found = bars(render.panel_html(w))
    assert {k: v[0] for k, v in found.items()} == {
        "GPU 0 util": "80", "GPU 0 memory": "50", "MIG 0:1": "40", "CPU (machine)": "12", "RAM": "25",
        "swap": "25", "disk (working folder)": "30"}
    assert found["GPU 0 memory"][1].startswith("50% · 20.0 / 40.0 GiB")


def luminance(color):
    def channel(c):
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a, b):
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_palette_keeps_three_to_one(theme):
    colors = render.PALETTE[theme]
    for state in ("ok", "high", "alert", "busy"):
        assert contrast(colors[state], colors["track"]) >= 3, state
    assert contrast(colors["ok"], colors["alert"]) >= 3  # not hue alone: readable without red-green vision
    assert all(contrast(c, "#ffffff" if theme == "light" else "#1b1d21") >= 3 for c in chart.COLORS)
    assert colors["alert"] not in chart.COLORS


def test_chart_has_axes_a_legend_outside_and_the_alert_level():
    t0 = 1_000_000.0
    points = [histories.point_of(sample(ram=0.2 + 0.01 * i, gpu=0.5, t=t0 + 20 * i)) for i in range(60)]
    svg = chart.svg(points, Thresholds(ram=0.8), width=600, title="Last 10m")
    strips = re.findall(r'font-weight="600">([^<]+)</text>', svg)
    assert strips == ["CPU", "GPU 0", "RAM", "disk"]
    assert "alert 80%" in svg and "alert 95%" in svg  # each level drawn, the user's included
    assert "machine 79% (peak 79%)" in svg  # the window's peak in the legend
    labels = re.findall(r'text-anchor="(?:start|middle|end)">(\d\d:\d\d)</text>', svg)
    assert len(labels) == 5 and labels[0] == time.strftime("%H:%M", time.localtime(t0))
    # Legends sit outside their plot: every swatch is above the top edge of its strip's plot.
    plots = [float(y) for y in re.findall(r'<rect x="58" y="([\d.]+)" width="\d+" height="34" fill="none"', svg)]
    swatches = [float(y) for y in re.findall(r'<rect x="[\d.]+" y="([\d.-]+)" width="10" height="3"', svg)]
    assert len(plots) == 4 and len(swatches) == 5  # CPU 1 series, GPU 2, RAM 1, disk 1
    assert all(any(top - 12 <= y and y + 3 <= top for top in plots) for y in swatches)
    assert 'role="img"' in svg and "RAM machine peak 79%" in svg
    assert "not enough samples" in chart.svg(points[:1])


def test_session_history_is_downsampled_by_peaks_and_bounded(monkeypatch):
    monkeypatch.setattr(histories, "SESSION_POINTS", 10)
    h = histories.History(window=5, interval=1)
    for i in range(45):
        h.add(sample(cpu=99.0 if i == 17 else 1.0, t=1000.0 + i))
    session = h.session_points()
    assert len(session) <= 10 and h.span == 8
    assert max(p.get("cpu_percent") for p in session) == 99.0  # the spike survives the squeeze
    assert len(h.window_points()) == 5


def test_history_survives_a_kernel_restart_and_a_stale_file_does_not(tmp_path):
    path = tmp_path / "history.json"
    now = time.time()
    first = Watcher(interval=1, sampler=Script([sample(ram=0.9, t=now - 20), sample(ram=0.3, t=now - 19)]),
                    history_path=path)
    first.tick(); first.tick()
    first.stop()
    assert path.exists()
    again = Watcher(interval=1, sampler=Script([sample(ram=0.2, t=now)]), history_path=path)
    assert len(again.history.session_points()) == 2 and len(again.history.window_points()) == 2
    assert again.session_peaks.ram_used == int(0.9 * 12 * GiB)  # the peak before the restart
    again.tick()
    assert "left:90.0%" in part(again, "ram")
    data = json.loads(path.read_text())
    data["session"] = [[t - 2 * histories.CONTINUE_WITHIN, v] for t, v in data["session"]]
    path.write_text(json.dumps(data))
    assert Watcher(interval=1, sampler=Script([sample()]), history_path=path).history.session_points() == []


def test_history_as_csv(tmp_path):
    h = histories.History(window=60, interval=1)
    h.add(sample(ram=0.5, t=1_000_000.0))
    h.add(Sample(1_000_001.0, None, 1, 2, "host", 0, 0))
    h.to = tmp_path / "h.csv"
    histories.to_csv(h.session_points(), h.to, h.span)
    rows = h.to.read_text().splitlines()
    header = rows[0].split(",")
    assert header[:4] == ["time", "unix_time", "covers_seconds", "cpu_percent"]
    assert "gpu0_memory_used" in header and "disk_working_folder_used" in header
    first = dict(zip(header, rows[1].split(",")))
    assert first["ram_used"] == str(6 * GiB) and first["unix_time"] == "1000000.000"
    second = dict(zip(header, rows[2].split(",")))
    assert second["cpu_percent"] == "" and second["ram_used"] == "1"


def test_cells_that_used_most_memory():
    class Info:
        def __init__(self, raw):
            self.raw_cell = raw

    class Result:
        def __init__(self, n):
            self.execution_count = n

    activity = Activity()
    w = Watcher(sampler=Script([sample(ram=0.2, gpu=0.1)]), activity=activity)
    w.tick()
    for n, (raw, ram, gpu) in enumerate([("x = 1", 0.2, 0.1), ("big = np.zeros(10**9)", 0.7, 0.1),
                                         ("model.cuda()", 0.7, 0.8)], start=1):
        activity.cell_started(Info(raw))
        activity.cell_finished(Result(n))  # a short cell: ended before any sample
        w.sampler = Script([sample(ram=ram, gpu=gpu)])
        w.tick()  # the first reading after it: what it left behind
    top = activity.top()
    assert [c.source for c in top] == ["model.cuda()", "big = np.zeros(10**9)"]  # x = 1 grew nothing
    assert top[0].gpu_growth == int(0.8 * 15 * GiB) - int(0.1 * 15 * GiB) and top[1].ram_growth > 5 * GiB
    table = part(w, "cells")
    assert "[3] <code>model.cuda()</code>" in table and "(+10.5 GiB)" in table
    # A cell that runs across samples takes its highest reading while it ran, not the last.
    activity.cell_started(Info("train()"))
    for ram in (0.9, 0.3):
        w.sampler = Script([sample(ram=ram, gpu=0.8)])
        w.tick()
    activity.cell_finished(Result(4))
    w.tick()
    [train] = [c for c in activity.top(5) if c.source == "train()"]
    assert train.number == 4 and train.ram_peak == int(0.9 * 12 * GiB) and train.samples == 3


def test_compact_line_fits_a_terminal():
    gpus = tuple(GpuReading(str(i), "T4", None, 50.0, 3 * GiB, 15 * GiB, 60.0, 30.0, 70.0) for i in range(2))
    s = Sample(time.time(), 12.0, 5 * GiB, 12 * GiB, "host", 0, 0,
               (DiskReading("working folder", "/", 30 * GiB, 100 * GiB),), gpus, "ok")
    colab = p.Platform(p.COLAB, p.COLAB_FREE_CAP, "", None, time.time() - 3600, tier="free")
    full = render.compact_line(s, colab, stamp=True)
    short = render.compact_line(s, colab, width=80, stamp=True)
    assert len(full) > 80 >= len(short)
    assert "GPU0 3.0/15.0G 20%" in short and "GPU1" in short and "RAM 5.0/12.0G 42%" in short
    assert "util" not in short  # the least needed went first


def test_summary_of_a_stopped_watch():
    t0 = 1_000_000.0
    w = Watcher(sampler=Script([sample(ram=0.5, t=t0), sample(ram=0.95, t=t0 + 60), sample(ram=0.4, t=t0 + 125)]),
                activity=Activity())
    for _ in range(3):
        w.tick()
    w.stop()
    w.stopped_at = t0 + 125
    html = render.summary_html(w)
    clock = lambda t: time.strftime("%H:%M:%S", time.localtime(t))  # noqa: E731
    assert f"{clock(t0)}–{clock(t0 + 125)} (2m 05s)" in html
    assert f"95% · 11.4 / 12.0 GiB at {clock(t0 + 60)}" in html
    assert "RAM 95% full" in html and f"(cleared {clock(t0 + 125)})" in html and "<svg" in html
    text = render.summary_text(w)
    assert text.startswith("colabkit watch ended") and "peak RAM: 95%" in text


def get(url):
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.status, reply.read().decode()


def test_served_panel_needs_its_token_and_serves_page_parts_and_data():
    w = Watcher(sampler=Script([sample(cpu=12), sample(cpu=88), sample(cpu=20)]))
    w.tick()
    server = PanelServer(w)
    base = f"http://127.0.0.1:{server.port}"
    try:
        for path in ("/", "/parts", "/panel", "/data", "/parts?token=wrong"):
            try:
                get(base + path)
                raise AssertionError(f"{path} answered without the token")
            except urllib.error.HTTPError as err:
                assert err.code == 403
        status, page = get(f"{base}/?token={server.token}")
        assert status == 200 and 'fetch("parts?token=' in page
        assert "prefers-color-scheme: dark" in page and ".ck-panel{" in page  # the style, served with the page
        w.tick(); w.tick()
        parts = json.loads(get(f"{base}/parts?token={server.token}")[1])
        named = dict(parts["parts"])
        assert parts["seq"] == 3 and 'data-seq="3"' in named["head"] and "peak 88%" in named["cpu"]
        data = json.loads(get(f"{base}/data?token={server.token}")[1])
        assert data["seq"] == 3 and data["sample"]["cpu_percent"] == 20
    finally:
        server.close()
    try:
        get(f"{base}/?token={server.token}")
        raise AssertionError("server still answering after close")
    except (urllib.error.URLError, ConnectionError):
        pass


def test_text_view_prints_readings_at_its_pace_and_alerts_at_once():
    w = Watcher(sampler=Script([sample(t=100.0), sample(t=101.0), sample(t=102.0, ram=0.96), sample(t=161.0)]))
    out = io.StringIO()
    w.tick()
    view = TextView(w, every=60, stream=out)
    view.display()
    w.tick(); w.tick(); w.tick()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("[colabkit") and "GPU0 50% mem 3.0 GiB / 15.0 GiB (20%) 60C 30W" in lines[0]  # a log: all
    assert lines[1].startswith("[colabkit] WARNING: RAM 96% full")
    assert "CPU (machine) 10%" in lines[2]
    view.close()
    assert "colabkit watch ended" in out.getvalue()
    written = len(out.getvalue())
    w.tick()
    assert len(out.getvalue()) == written


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_text_view_writes_where_stdout_is_now_and_colours_warnings_on_a_terminal(monkeypatch):
    """Terminal IPython swaps sys.stdout for prompt_toolkit's proxy while the prompt waits: a view that
    kept the stream it started with would print into the line being typed."""
    w = Watcher(sampler=Script([sample(t=100.0), sample(t=200.0, ram=0.97)]))
    w.tick()
    at_start = Tty()
    monkeypatch.setattr(sys, "stdout", at_start)
    view = TextView(w, every=60)
    view.display()
    at_prompt = Tty()
    monkeypatch.setattr(sys, "stdout", at_prompt)
    w.tick()
    view.close()
    assert at_start.getvalue().count("\n") == 1
    written = at_prompt.getvalue()
    assert "\x1b[1;31m[colabkit] WARNING: RAM 97% full" in written and "\x1b[0m" in written
    readings = [line for line in at_start.getvalue().splitlines() if line.startswith("[colabkit ")]
    assert len(readings) == 1 and len(readings[0]) <= 80 and "RAM 6.0/12.0G 50%" in readings[0]  # a terminal: one line


def ansi_free(text):
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)")
def test_terminal_ipython_under_tmux_never_writes_into_the_line_being_typed(tmp_path):
    """The real terminal IPython in a real terminal (tmux, 80 columns): readings go above the prompt
    while a line is being typed, each in one 80-column line; the reading stays in the bottom toolbar;
    warnings are red; stopping prints the summary and takes the toolbar away."""
    session = f"colabkit-test-{os.getpid()}"
    env = f"TMPDIR={tmp_path} COLABKIT_NOTEBOOK=tmux-test"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "30", "-c", str(tmp_path),
                    f"env {env} {sys.executable} -m IPython --no-banner --quick"], check=True)

    def screen(escapes=False):
        args = ["tmux", "capture-pane", "-p", "-t", session] + (["-e"] if escapes else [])
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout

    def keys(*typed):
        subprocess.run(["tmux", "send-keys", "-t", session, *typed], check=True)

    def until(condition, what, timeout=30):
        deadline = time.time() + timeout
        while not condition(screen()):
            assert time.time() < deadline, f"never saw {what}:\n{screen()}"
            time.sleep(0.2)

    try:
        until(lambda s: "In [1]:" in s, "the prompt")
        keys("%load_ext colabkit", "Enter")
        until(lambda s: "In [2]:" in s, "the second prompt")
        keys("%gpuwatch --interval 0.2s --every 0.5s", "Enter")
        until(lambda s: "In [3]:" in s, "the prompt after %gpuwatch")
        keys("abc = 1")  # typed, not run: the person is writing the next line
        readings = lambda s: [l for l in s.splitlines() if l.startswith("[colabkit ")]  # noqa: E731
        before = len(readings(screen()))
        toolbar = lambda s: s.rstrip().splitlines()[-1]  # noqa: E731
        # Readings printed while typing, and the prompt drawn again below them with its toolbar.
        until(lambda s: len(readings(s)) >= before + 3 and toolbar(s).startswith("colabkit · "),
              "readings printed while typing, and the reading in the bottom toolbar")
        lines = screen().rstrip().splitlines()
        typed = [l for l in lines if "abc" in l]
        assert [l.rstrip() for l in typed] == ["In [3]: abc = 1"], lines  # the typed line, untouched
        for line in readings("\n".join(lines)):
            assert len(line) <= 80 and "RAM" in line and "CPU" in line, line
        assert "RAM" in lines[-1], lines
        keys("Enter")
        keys("%gpuwatch --ram-alert 1 --interval 0.2s --every 100", "Enter")
        until(lambda s: "WARNING: RAM" in s, "the RAM alert")
        warning = next(l for l in screen(escapes=True).splitlines() if "WARNING: RAM" in l)
        assert re.search(r"\x1b\[(1;31|1m\x1b\[31)m\[colabkit\] WARNING", warning), repr(warning)  # red, bold
        until(lambda s: toolbar(s).startswith("colabkit · ⚠ 1 alert"), "the alert in the toolbar")
        keys("%gpuwatch stop", "Enter")
        until(lambda s: "colabkit: watch stopped." in s, "the stop")
        text = screen()
        assert "colabkit watch ended" in text and "alert " in ansi_free(text)
        until(lambda s: not toolbar(s).startswith("colabkit ·"), "the toolbar going with the watch")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_loop_progress_reads_like_tqdm_and_never_promises_time_after_a_break(monkeypatch):
    from colabkit.checkpoint import progress
    from colabkit.units import format_clock

    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    bar = progress.LoopProgress(total=100, start=0, restored=None)
    clock[0] += 42
    line = bar.line(37, 1.14, {"ok": True, "id": "step-30", "bytes": 10342}, done=False)
    assert line == ("colabkit  37% ▕███████▍            ▏ 37/100 · 0:42 elapsed · ~1:12 left · 1.14 s/it · "
                    "checkpoint step-30 (10.1 KiB)")
    assert "12.5 it/s" in bar.line(37, 0.08, None, done=False)
    assert bar.line(100, 1.1, None, done=True).startswith("colabkit ✓ done: 100/100 in 0:42")
    bar.state = "stopped"
    stopped = bar.line(37, 1.14, None, done=False)
    assert stopped.startswith("colabkit ■ stopped at 37/100 after 0:42") and "left" not in stopped.split("(")[0]
    assert format_clock(0.3, approximate=True) == "< 1 s" and format_clock(3723) == "1:02:03"


@pytest.mark.kernel
def test_resumable_shows_a_bar_then_a_stopped_or_finished_state_in_a_real_kernel(tmp_path):
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[
        new_code_cell("%load_ext colabkit"),
        new_code_cell("import colabkit, numpy as np, time\nw = np.zeros(3)\n%checkpoint every 100 steps w"),
        new_code_cell("for i in colabkit.resumable(range(10)):\n    time.sleep(0.05)\n    if i == 2:\n        break"),
        # A loop left part way is an interruption: going on needs a choice (here: from the live state).
        new_code_cell("%checkpoint keep\nfor i in colabkit.resumable(range(10)):\n    time.sleep(0.05)"),
    ])
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    stopped, finished = ([o for o in cell.outputs if o["output_type"] == "display_data"] for cell in nb.cells[2:])
    assert len(stopped) == 1 and len(finished) == 1  # one output each, updated in place
    html, text = stopped[0]["data"]["text/html"], stopped[0]["data"]["text/plain"]
    assert text.startswith("colabkit ■ stopped at 2/10 after") and " left" not in text  # 0 and 1 ran whole
    assert 'data-state="stopped"' in html and 'role="progressbar"' in html and 'aria-valuenow="2"' in html
    html, text = finished[0]["data"]["text/html"], finished[0]["data"]["text/plain"]
    assert text.startswith("colabkit ✓ done: 10/10 in") and 'aria-valuenow="10"' in html


def test_gpuwatch_save_writes_a_png_and_a_csv_and_plot_shows_the_history(shell, tmp_path):
    from conftest import run

    from colabkit import monitor

    result, _ = run(shell, "%gpuwatch plot")
    assert "no history to show yet" in str(result.error_in_exec)  # nothing recorded: said, not an empty chart
    run(shell, "%gpuwatch --view text --interval 0.1s --every 100")
    wait_for_samples = time.time() + 10
    while monitor.active().watcher.latest_seq < 5:
        assert time.time() < wait_for_samples
        time.sleep(0.05)
    result, out = run(shell, f"%gpuwatch save {tmp_path / 'run.png'}")
    assert result.success, result.error_in_exec
    png, csv = tmp_path / "run.png", tmp_path / "run.csv"
    assert f"wrote {png}, {csv}" in out.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    rows = csv.read_text().splitlines()
    assert rows[0].startswith("time,unix_time,covers_seconds,cpu_percent") and len(rows) >= 6
    result, out = run(shell, "%gpuwatch plot")  # a terminal-like shell: the summary so far, and how to keep it
    assert "colabkit watch so far" in out.stdout and "%gpuwatch save PATH" in out.stdout
    result, _ = run(shell, "%gpuwatch save")
    assert "needs a path" in str(result.error_in_exec)
    result, _ = run(shell, f"%gpuwatch save {tmp_path / 'missing' / 'run.png'}")
    assert "does not exist" in str(result.error_in_exec)
    run(shell, "%gpuwatch stop")
    # Stopped (or after a kernel restart): what the history file kept.
    result, out = run(shell, f"%gpuwatch save {tmp_path / 'after'}")
    assert result.success and (tmp_path / "after.png").exists() and (tmp_path / "after.csv").exists()


def test_without_matplotlib_the_chart_is_saved_as_svg_and_said(shell, tmp_path, monkeypatch):
    from conftest import run

    from colabkit import monitor

    run(shell, "%gpuwatch --view text --interval 0.1s --every 100")
    while monitor.active().watcher.latest_seq < 3:
        time.sleep(0.05)
    import colabkit.views

    # A machine without matplotlib: none of it imported, and importing it fails.
    for name in [n for n in sys.modules if n.split(".")[0] == "matplotlib" or n == "colabkit.views.figure"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.delattr(colabkit.views, "figure", raising=False)
    result, out = run(shell, f"%gpuwatch save {tmp_path / 'run.png'}")
    assert result.success, result.error_in_exec
    svg = tmp_path / "run.svg"
    assert "no PNG: matplotlib is not installed" in out.stderr and str(svg) in out.stderr
    assert not (tmp_path / "run.png").exists() and svg.read_text().startswith('<?xml version="1.0"')
    assert 'xmlns="http://www.w3.org/2000/svg"' in svg.read_text() and (tmp_path / "run.csv").exists()
    run(shell, "%gpuwatch stop")
