"""The magics in a real IPython shell, as a user types them."""

import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
from IPython.core.error import UsageError

from colabkit import monitor
from conftest import run


def test_every_magic_has_help(shell):
    for name in ("gpuwatch", "mount", "checkpoint", "to_sagemaker"):
        _, out = run(shell, f"%{name}?")
        help_text = out.stdout
        assert f"%{name}" in help_text and "--" in help_text and "Example" in help_text


def test_once_and_info(shell):
    _, out = run(shell, "%gpuwatch --once")
    assert "GPU: no NVIDIA GPU" in out.stdout and "RAM" in out.stdout and "CPU" in out.stdout
    _, out = run(shell, "%gpuwatch info")
    assert "platform:" in out.stdout and "time left:" in out.stdout


def test_colab_info_with_tier(shell, monkeypatch):
    monkeypatch.setenv("COLAB_RELEASE_TAG", "r")
    _, out = run(shell, "%gpuwatch --info --tier pro")
    assert "Google Colab (pro)" in out.stdout and "24h 00m" in out.stdout


@pytest.mark.parametrize("line,says", [
    ("%gpuwatch --interval 15x", "not a duration"),
    ("%gpuwatch --interval 0.01", "at least 0.1 s"),
    ("%gpuwatch --ram-alert lots", "not a percentage"),
    ("%gpuwatch --tier gold --info", "not a Colab tier"),
    ("%gpuwatch --view fancy", "invalid choice"),
    ("%gpuwatch sideways", "invalid choice"),
])
def test_bad_input_is_one_clear_usage_error(shell, line, says):
    result, out = run(shell, line)
    assert isinstance(result.error_in_exec, UsageError)
    assert says in str(result.error_in_exec)
    assert "Traceback" not in out.stdout + out.stderr


def test_text_watch_starts_replaces_and_stops(shell):
    run(shell, "%gpuwatch --view text --interval 0.1 --every 0")
    first = monitor.active()
    assert first.watcher.running
    run(shell, "%gpuwatch --view text --interval 0.1")
    assert not first.watcher.running and monitor.active().watcher.running
    watchers = [t for t in threading.enumerate() if t.name == "colabkit-watcher"]
    assert len(watchers) == 1
    _, out = run(shell, "%gpuwatch stop")
    assert "stopped" in out.stdout and monitor.active() is None


def test_watch_keeps_sampling_while_another_cell_runs(shell):
    run(shell, "%gpuwatch --view text --interval 0.1 --every 100")
    before = monitor.active().watcher.latest_seq
    run(shell, "import time; time.sleep(0.6)")
    assert monitor.active().watcher.latest_seq >= before + 4


def test_mount_prints_and_returns_the_path(shell, tmp_path):
    result, out = run(shell, "%mount")
    where = tmp_path / "colabkit-storage" / "notebook"  # an InteractiveShell names no notebook
    assert out.stdout.splitlines()[0] == f"colabkit storage: {where}"
    assert result.result == where and "has no name colabkit can read" in out.stderr
    result, out = run(shell, f"%mount --to {tmp_path / 'elsewhere'}")
    assert (tmp_path / "elsewhere").is_dir()
    (tmp_path / "blocker").write_text("")
    result, out = run(shell, f"%mount --to {tmp_path / 'blocker' / 'x'}")
    assert isinstance(result.error_in_exec, UsageError) and "cannot write to" in str(result.error_in_exec)


def test_the_storage_disk_joins_the_panel_once_mounted(shell, tmp_path):
    other_disk = Path(tempfile.mkdtemp(dir="/dev/shm"))  # a file system of its own, so it gets a row
    try:
        assert os.stat(other_disk).st_dev != os.stat(tmp_path).st_dev
        run(shell, "%gpuwatch --view text --interval 0.1 --every 100")
        assert [d.label for d in monitor.active().watcher.latest.disks] == ["working folder"]
        run(shell, f"%mount --to {other_disk}")
        deadline = time.time() + 5
        while "storage" not in [d.label for d in monitor.active().watcher.latest.disks]:
            assert time.time() < deadline, "the storage disk never joined the panel's readings"
            time.sleep(0.05)
        disk = monitor.active().watcher.latest.disks[-1]
        assert disk.path == str(other_disk) and disk.total is not None
    finally:
        run(shell, "%gpuwatch stop")
        shutil.rmtree(other_disk)


def _fds():
    return len(os.listdir("/proc/self/fd"))


def test_unload_stops_every_thread_and_server(shell):
    run(shell, "%gpuwatch --view colab --interval 0.1")
    server = monitor.active().view.server
    assert any(t.name == "colabkit-panel-server" for t in threading.enumerate())
    shell.run_line_magic("unload_ext", "colabkit")
    assert not [t for t in threading.enumerate() if t.name.startswith("colabkit")]
    assert server._server.socket.fileno() == -1
    assert "gpuwatch" not in shell.magics_manager.magics["line"]
    shell.run_line_magic("load_ext", "colabkit")


def test_a_hundred_start_stop_cycles_leave_nothing_behind(shell):
    run(shell, "%gpuwatch --view colab --interval 0.1")  # warm up lazily created things (NVML, caches)
    run(shell, "%gpuwatch stop")
    threads, fds = threading.active_count(), _fds()
    for i in range(100):
        view = ("colab", "text", "widget")[i % 3]
        result, _ = run(shell, f"%gpuwatch --view {view} --interval 0.1 --every 100")
        assert result.success
        if i % 2:
            run(shell, "%gpuwatch stop")
    run(shell, "%gpuwatch stop")
    assert threading.active_count() == threads, [t.name for t in threading.enumerate()]
    assert _fds() == fds


def test_idle_countdown_follows_the_cells_the_user_runs(shell):
    run(shell, "%gpuwatch --view text --interval 0.1 --every 100 --idle 90m")
    activity = monitor.active().watcher.activity
    run(shell, "import time; time.sleep(0.3)")
    finished = activity.last
    assert not activity.running and time.time() - finished < 0.5
    run(shell, "pass")
    assert activity.last > finished
    run(shell, "%gpuwatch stop")
    run(shell, "pass")
    assert "cell_finished" not in str(shell.events.callbacks["post_run_cell"])


def test_terminal_ipython_gets_plain_text(tmp_path):
    """The real terminal IPython (TerminalInteractiveShell): %gpuwatch picks the text view."""
    import subprocess
    import sys

    script = tmp_path / "watch.ipy"
    script.write_text("%load_ext colabkit\n%gpuwatch --interval 0.2s --every 0.4s\n"
                      "import time; time.sleep(1.5)\n%gpuwatch stop\n")
    out = subprocess.run([sys.executable, "-m", "IPython", "--quick", "--no-banner", str(script)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    lines = [line for line in out.stdout.splitlines() if line.startswith("[colabkit ")]
    assert len(lines) >= 3, out.stdout + out.stderr
    assert all("CPU" in line and "RAM" in line for line in lines)
    assert "colabkit: watch stopped." in out.stdout


HANG = 30.0  # seconds a hung NVML call sleeps: far beyond every limit below
LIMIT = 2.0  # a generous limit for a cell that must not wait on the driver (it waits 0.5 s at most)


def timed(shell, line):
    started = time.monotonic()
    result, out = run(shell, line)
    return time.monotonic() - started, result, out


def served_parts(watch) -> dict:
    """The panel's parts as the Colab page polls them, over HTTP."""
    import http.client
    import json

    server = watch.view.server
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.request("GET", f"/parts?token={server.token}")
        return dict(json.loads(connection.getresponse().read())["parts"])
    finally:
        connection.close()


@pytest.mark.parametrize("fn", ["nvmlInit", "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetMemoryInfo"])
def test_a_hung_nvml_call_never_blocks_a_cell(shell, nvml, fn):
    from fake_nvml import FakeGpu

    nvml.install([FakeGpu()], hangs={fn: HANG})
    took, result, _ = timed(shell, "%gpuwatch --view colab --interval 0.2")
    assert result.success and took < LIMIT
    gpu = served_parts(monitor.active())["gpu-none"]  # the panel has the rest, and says what it waits on
    assert "waiting on the NVIDIA driver: no GPU reading yet" in gpu and fn in gpu
    took, result, _ = timed(shell, "%gpuwatch --view colab --interval 0.2")  # a re-run replaces the watch
    assert result.success and took < LIMIT
    took, result, out = timed(shell, "%gpuwatch stop")
    assert result.success and took < LIMIT
    assert "colabkit: watch stopped." in out.stdout
    assert f"the watch stopped, but a GPU reading is still waiting inside the NVIDIA driver ({fn}" in out.stderr
    took, result, out = timed(shell, "%gpuwatch --once")
    assert result.success and took < monitor.ONCE_GPU_WAIT + LIMIT
    assert "RAM" in out.stdout and "CPU" in out.stdout  # what is known, and that the GPU's reading did not come
    assert "GPU: waiting on the NVIDIA driver" in out.stdout and "the GPU reading did not come in time" in out.stdout
    run(shell, "%gpuwatch --view colab --interval 0.2")
    started = time.monotonic()
    shell.run_line_magic("unload_ext", "colabkit")
    assert time.monotonic() - started < LIMIT
    stuck = [t for t in threading.enumerate() if t.name.startswith("colabkit")]
    assert stuck and all(t.name == "colabkit-nvml" and t.daemon for t in stuck)  # only the driver's, said above
    assert len(stuck) == 1  # three watches and a --once waited on one read, never piled up threads in the driver
    shell.run_line_magic("load_ext", "colabkit")


def test_readings_stuck_in_the_driver_are_reported_in_the_panel(shell, nvml):
    from fake_nvml import FakeGpu

    fake = nvml.install([FakeGpu()])
    run(shell, "%gpuwatch --view colab --interval 0.2")
    watch = monitor.active()
    assert "gpu0-mem" in served_parts(watch)
    fake.hangs["nvmlDeviceGetMemoryInfo"] = HANG  # the driver stops answering mid-session
    deadline = time.monotonic() + 5
    while "gpu-none" not in (parts := served_parts(watch)):
        assert time.monotonic() < deadline, "the panel never said the GPU readings stopped"
        time.sleep(0.1)
    assert re.search(r"GPU readings stopped [0-9.]+ s ago: the NVIDIA driver is not answering "
                     r"\(nvmlDeviceGetMemoryInfo has not returned\)", parts["gpu-none"]), parts["gpu-none"]
    assert "GPU driver not answering" in parts["compact"]  # the pinned one-line reading says it too
    took, result, _ = timed(shell, "%gpuwatch stop")
    assert result.success and took < LIMIT


@pytest.mark.parametrize("line,says", [
    ("%to_sagemaker ml.g5.xlargee --local", "not a SageMaker training instance type. Did you mean ml.g5.xlarge"),
    ("%to_sagemaker ml.g5.xlarge", "No AWS credentials were found.*--dry-run or --local"),
    ("%to_sagemaker ml.g5.xlarge --local --dry-run", "Choose one of --local"),
    ("%to_sagemaker ml.g5.xlarge --instances 0 --dry-run", "--instances must be 1 or more"),
    ("%to_sagemaker ml.g5.xlarge --max-run 5x --dry-run", "not a duration"),
    ("%to_sagemaker ml.trn1.2xlarge --dry-run", "Neuron"),
])
def test_to_sagemaker_bad_input(shell, line, says):
    import re

    result, out = run(shell, line)
    assert isinstance(result.error_in_exec, UsageError) and re.search(says, str(result.error_in_exec))
