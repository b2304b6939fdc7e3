import io
import json
import time
import urllib.error
import urllib.request

from colabkit import platform as p
from colabkit.telemetry import GpuProcess, GpuReading, Sample
from colabkit.views import render
from colabkit.views.served import PanelServer
from colabkit.views.text import TextView
from colabkit.watcher import Peaks, Watcher
from test_watcher import Script, sample

GiB = 1024**3


def test_panel_shows_every_resource_and_na_for_unknown_fields():
    gpu = GpuReading("0", "Tesla T4", None, None, 14 * GiB, 15 * GiB, 70.0, None, None,
                     processes=(GpuProcess(42, "python3", 13 * GiB),))
    now = time.time()
    s = Sample(now, 55.0, 6 * GiB, 12 * GiB, "cgroup v2", 0, 0, (), (gpu,), "ok")
    colab = p.Platform(p.COLAB, p.COLAB_FREE_CAP, "", None, now - 3600 - 30, tier="free")
    watcher = Watcher(sampler=Script([s]), platform=colab)
    watcher.tick()
    peaks = Peaks(cpu_percent=90.0)
    html = render.panel_html(watcher, 7, peaks)
    for expected in ("Google Colab (free)", "GPU 0 util", "n/a", "14.0 GiB / 15.0 GiB", "70 °C",
                     "python3 13.0 GiB", "CPU", "55%", "peak 90%", "RAM (cgroup v2)", "10h 59m left",
                     'data-seq="7"', "<svg"):
        assert expected in html, expected
    assert "ck-crit" in html  # 93% GPU memory is drawn red
    text = render.text_line(s, colab, peaks)
    assert "GPU0 n/a mem 14.0 GiB / 15.0 GiB (93%) 70C n/a" in text and "session left 10h 59m" in text


def test_panel_without_gpu_and_with_an_alert():
    s = sample(ram=0.95)
    s = Sample(s.time, s.cpu_percent, s.ram_used, s.ram_total, "host", 0, 0, s.disks, (), "no NVIDIA GPU")
    w = Watcher(sampler=Script([s]))
    w.tick()
    html = render.panel_html(w, 1, Peaks())
    assert "no NVIDIA GPU" in html and "ck-alert" in html and "RAM 95% full" in html


def get(url):
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.status, reply.read().decode()


def test_served_panel_needs_its_token_and_serves_page_panel_and_data():
    w = Watcher(sampler=Script([sample(cpu=12), sample(cpu=88), sample(cpu=20)]))
    w.tick()
    server = PanelServer(w)
    base = f"http://127.0.0.1:{server.port}"
    try:
        for path in ("/", "/panel", "/data", "/panel?token=wrong"):
            try:
                get(base + path)
                raise AssertionError(f"{path} answered without the token")
            except urllib.error.HTTPError as err:
                assert err.code == 403
        status, page = get(f"{base}/?token={server.token}")
        assert status == 200 and "fetch(\"panel?token=" in page
        w.tick(); w.tick()
        status, panel = get(f"{base}/panel?token={server.token}")
        assert 'data-seq="3"' in panel and "peak 88%" in panel
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
    assert lines[0].startswith("[colabkit") and "RAM" in lines[0]
    assert lines[1].startswith("[colabkit] WARNING: RAM 96% full")
    assert "CPU 10%" in lines[2]
    view.close()
    w.tick()
    assert len(out.getvalue().splitlines()) == 3
