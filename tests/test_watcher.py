import threading
import time

from colabkit import platform as p
from colabkit.telemetry import DiskReading, GpuReading, Sample
from colabkit.watcher import Activity, Thresholds, Watcher

GiB = 1024**3


def sample(ram=0.5, gpu=0.2, disk=0.3, cpu=10.0, t=None):
    gpus = (GpuReading("0", "T4", None, 50.0, int(gpu * 15 * GiB), 15 * GiB, 60.0, 30.0, 70.0),)
    return Sample(time=time.time() if t is None else t, cpu_percent=cpu, ram_used=int(ram * 12 * GiB),
                  ram_total=12 * GiB, ram_limited_by="host", swap_used=0, swap_total=0,
                  disks=(DiskReading("working folder", "/content", int(disk * 100 * GiB), 100 * GiB),),
                  gpus=gpus, gpu_status="ok")


class Script:
    """A sampler that plays back a list of samples (the real Sampler is tested on its own)."""

    def __init__(self, samples):
        self.samples = list(samples)

    def read(self):
        return self.samples.pop(0) if len(self.samples) > 1 else self.samples[0]

    def close(self):
        return None


def colab(start):
    return p.Platform(p.COLAB, p.COLAB_FREE_CAP, "Colab FAQ", None, start, tier="free")


def test_each_alert_once_per_crossing_and_again_after_it_clears():
    # Above 90%, hovering just under it (no new alert: within the 5-point margin), back above,
    # then clearly below (re-armed) and above again: two alerts, at 91% and at 92%.
    values = [0.5, 0.91, 0.95, 0.88, 0.93, 0.80, 0.92]
    w = Watcher(sampler=Script(sample(ram=v) for v in values), platform=colab(time.time()))
    seen = []
    w.subscribe(on_alert=seen.append)
    for _ in values:
        w.tick()
    assert [(a.kind, round(a.value, 2)) for a in seen] == [("ram", 0.91), ("ram", 0.92)]
    assert "Colab restarts the runtime when RAM is full" in seen[0].message
    assert "91%" in seen[0].message and "92%" in seen[1].message


def test_gpu_memory_and_disk_thresholds_and_configurable_levels():
    w = Watcher(sampler=Script([sample(gpu=0.96, disk=0.5), sample(gpu=0.97, disk=0.85)]),
                thresholds=Thresholds(disk=0.8))
    w.tick()
    w.tick()
    kinds = [(a.kind, a.key) for a in w.alerts]
    assert kinds == [("gpu_memory", "0"), ("disk", "/content")]
    assert "CUDA out of memory" in w.alerts[0].message


def test_session_deadline_alerts_at_30_and_10_minutes():
    start = 1_000_000.0
    cap = p.COLAB_FREE_CAP
    times = [start + cap - 3600, start + cap - 29 * 60, start + cap - 20 * 60, start + cap - 9 * 60,
             start + cap - 8 * 60]
    w = Watcher(sampler=Script(sample(t=t) for t in times), platform=colab(start))
    for _ in times:
        w.tick()
    assert [(a.kind, a.key) for a in w.alerts] == [("session", "1800"), ("session", "600")]
    assert "29m 00s left" in w.alerts[0].message and "Save a checkpoint" in w.alerts[0].message


def test_a_late_start_says_the_nearest_deadline_once():
    start = 1_000_000.0
    w = Watcher(sampler=Script([sample(t=start + p.COLAB_FREE_CAP - 300)]), platform=colab(start))
    w.tick()
    w.tick()
    assert [(a.kind, a.key) for a in w.alerts] == [("session", "600")]


def test_window_is_a_bounded_ring_and_peaks_are_the_sessions():
    cpus = [10, 95, 20, 30, 15, 5]
    w = Watcher(interval=1, history=4, sampler=Script(sample(cpu=c, t=1000.0 + i) for i, c in enumerate(cpus)))
    for _ in cpus:
        w.tick()
    window = w.history.window_points()
    assert [p.get("cpu_percent") for p in window] == [20, 30, 15, 5] and w.latest.cpu_percent == 5
    # The spike at tick 2 left the window but stays the session's peak, with its time.
    assert w.now().peaks.cpu_percent == 95 and w.session_peaks.times["cpu_percent"] == 1001.0
    assert len(w.history.session_points()) == 6 and w.latest_seq == 6


def test_thread_samples_at_its_interval_and_stops():
    w = Watcher(interval=0.05, sampler=Script([sample()]))
    got = threading.Event()
    count = []
    w.subscribe(on_sample=lambda s: (count.append(s), len(count) >= 5 and got.set()))
    w.start()
    assert got.wait(5)
    assert w.running
    w.stop()
    assert not w.running
    n = len(count)
    time.sleep(0.2)
    assert len(count) == n


class Hung(Script):
    """A sampler whose reading does not return until released (a disk on a hung mount, a driver)."""

    def __init__(self):
        super().__init__([sample()])
        self.released = threading.Event()

    def read(self):
        self.released.wait(30)
        return super().read()


def test_a_reading_that_hangs_holds_up_neither_start_nor_stop_and_the_stop_says_so(capsys):
    from colabkit.views import render
    from colabkit.watcher import FIRST_READING_WAIT, STOP_WAIT

    hung = Hung()
    w = Watcher(interval=0.1, sampler=hung)
    try:
        started = time.monotonic()
        w.start()  # the first reading is the watcher thread's, not the cell's
        assert time.monotonic() - started < FIRST_READING_WAIT + 1
        assert w.latest is None and "waiting for the first reading" in render.parts(w)[0][1]
        started = time.monotonic()
        w.stop()
        assert time.monotonic() - started < STOP_WAIT + 1
        assert ("the watch stopped, but its thread (colabkit-watcher, a daemon) is still inside a reading"
                in capsys.readouterr().err)
        hung.released.set()  # the reading comes at last: the thread ends, with no tick after the stop
        stuck = [t for t in threading.enumerate() if t.name == "colabkit-watcher"]
        for thread in stuck:
            thread.join(5)
            assert not thread.is_alive()
    finally:
        hung.released.set()


def test_a_failing_subscriber_does_not_stop_the_others(caplog):
    w = Watcher(sampler=Script([sample(ram=0.95)]))
    got = []
    w.subscribe(on_sample=lambda s: 1 / 0, on_alert=lambda a: 1 / 0)
    unsubscribe = w.subscribe(on_sample=got.append)
    w.tick()
    assert len(got) == 1 and "subscriber" in caplog.text
    unsubscribe()
    w.tick()
    assert len(got) == 1


def test_idle_limit_counts_from_the_last_cell_and_rearms_when_a_cell_runs():
    start = time.time()
    platform = p.Platform(p.COLAB, p.COLAB_FREE_CAP, "", 90 * 60, start, tier="free")
    activity = Activity()
    activity.last = start
    times = [start + 60, start + 81 * 60, start + 82 * 60]
    w = Watcher(sampler=Script(sample(t=t) for t in times), platform=platform, activity=activity)
    w.tick()
    assert w.idle_for(start + 60) == 60
    w.tick()
    w.tick()
    assert [(a.kind, a.key) for a in w.alerts] == [("idle", "600")]
    assert "No cell has run for 1h 21m" in w.alerts[0].message and "9m 00s" in w.alerts[0].message
    activity.cell_started()
    assert w.idle_for(start + 83 * 60) == 0
    activity.cell_finished()
    activity.last = start + 83 * 60
    w2 = Watcher(sampler=Script([sample(t=start + 84 * 60)]), platform=platform, activity=activity)
    w2.rules._armed = dict(w.rules._armed)
    w2.tick()
    assert w2.alerts == []


def test_no_idle_alert_without_an_idle_limit():
    activity = Activity()
    activity.last = 0.0
    w = Watcher(sampler=Script([sample()]), platform=colab(time.time()), activity=activity)
    w.tick()
    assert w.alerts == [] and w.idle_for(time.time()) is None
