import re

import pynvml
import pytest

from colabkit.telemetry import NO_GPU, CgroupMemory, Nvml, Sampler, _ram
from fake_nvml import GiB, FakeGpu


def cgroup_v2(tmp_path, limit="2147483648", current=1_500_000_000, inactive=500_000_000):
    root = tmp_path / "cg"
    (root / "user.slice").mkdir(parents=True)
    for folder in (root, root / "user.slice"):
        (folder / "memory.max").write_text(f"{limit}\n")
        (folder / "memory.current").write_text(f"{current}\n")
        (folder / "memory.stat").write_text(f"anon 900000000\nfile 600000000\ninactive_file {inactive}\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/user.slice\n")
    return CgroupMemory(str(root), str(proc))


def test_cgroup_v2_limit_and_working_set(tmp_path):
    cg = cgroup_v2(tmp_path)
    assert cg.kind == "cgroup v2"
    assert cg.read() == (1_000_000_000, 2 * GiB)
    assert cgroup_v2(tmp_path / "unlimited", limit="max").read() is None


def test_cgroup_v1(tmp_path):
    v1 = tmp_path / "cg" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(str(4 * GiB))
    (v1 / "memory.usage_in_bytes").write_text(str(3 * GiB))
    (v1 / "memory.stat").write_text(f"cache 10\ntotal_inactive_file {GiB}\n")
    cg = CgroupMemory(str(tmp_path / "cg"), str(tmp_path / "missing"))
    assert cg.kind == "cgroup v1" and cg.read() == (2 * GiB, 4 * GiB)


def test_no_cgroup_files_means_the_host_figures(tmp_path):
    cg = CgroupMemory(str(tmp_path / "none"), str(tmp_path / "none"))
    used, total, source = _ram(cg)
    assert source == "host" and 0 < used < total


def test_ram_total_is_the_container_limit_when_smaller_than_the_host(tmp_path):
    used, total, source = _ram(cgroup_v2(tmp_path, limit=str(GiB), current=800_000_000, inactive=0))
    assert (used, total, source) == (800_000_000, GiB, "cgroup v2")


def test_sample_without_a_gpu_says_so_and_reads_the_rest(tmp_path):
    sample = Sampler(disk_paths=lambda: {"working folder": str(tmp_path), "same disk": str(tmp_path)}).read()
    assert sample.gpus == () and sample.gpu_status == NO_GPU
    assert 0 <= sample.cpu_percent <= 100 and sample.ram_total > 0 and 0 < sample.ram_fraction < 1
    assert sample.swap_total is not None
    assert len(sample.disks) == 1, "the same file system is listed once"
    assert sample.disks[0].total > sample.disks[0].used > 0


def test_missing_disk_is_na(tmp_path):
    sample = Sampler(disk_paths=lambda: {"storage": str(tmp_path / "gone")}).read()
    assert sample.disks[0].used is None and sample.disks[0].fraction is None


@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
                                  pynvml.NVML_ERROR_UNKNOWN])
def test_nvml_that_cannot_start_means_no_gpu(nvml, code):
    fake = nvml.install([FakeGpu()], init_error=code)
    reader = Nvml()
    assert reader.read() == ((), NO_GPU)
    assert reader.read() == ((), NO_GPU)
    assert fake.calls["nvmlInit"] == 1, "NVML is initialised once, not on every sample"


def test_gpu_readings_in_nvidia_smi_units(nvml):
    fake = nvml.install([FakeGpu(processes=[(1, 2 * GiB), (999_999_999, None)]), FakeGpu(name="A100", utilization=0)])
    gpus, status = Nvml().read()
    assert status == "ok" and [g.index for g in gpus] == ["0", "1"]
    t4 = gpus[0]
    assert (t4.name, t4.utilization, t4.temperature) == ("Tesla T4", 37.0, 61.0)
    assert (t4.memory_used, t4.memory_total, t4.memory_fraction) == (3 * GiB, 15 * GiB, 0.2)
    assert (t4.power_draw, t4.power_limit) == (31.0, 70.0)
    assert [(p.pid, p.used_memory) for p in t4.processes] == [(1, 2 * GiB), (999_999_999, None)]
    assert t4.processes[0].name and t4.processes[1].name is None  # a PID from another namespace
    assert gpus[1].name == "A100"
    assert fake.calls["nvmlInit"] == 1


@pytest.mark.parametrize("fn,field", [
    ("nvmlDeviceGetPowerUsage", "power_draw"),
    ("nvmlDeviceGetEnforcedPowerLimit", "power_limit"),
    ("nvmlDeviceGetTemperature", "temperature"),
    ("nvmlDeviceGetUtilizationRates", "utilization"),
    ("nvmlDeviceGetMemoryInfo", "memory_used"),
    ("nvmlDeviceGetName", "name"),
    ("nvmlDeviceGetComputeRunningProcesses", "processes"),
])
@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
                                  pynvml.NVML_ERROR_UNKNOWN, pynvml.NVML_ERROR_NO_PERMISSION])
def test_one_failing_field_is_na_and_the_others_are_read(nvml, fn, field, code):
    nvml.install([FakeGpu(errors={fn: code}, processes=[(1, GiB)])])
    gpu = Nvml().read()[0][0]
    assert getattr(gpu, field) in (None, ())
    assert gpu.memory_total == 15 * GiB or field == "memory_used"
    assert gpu.temperature == 61 or field == "temperature"


def test_a_lost_gpu_is_all_na_beside_a_healthy_one(nvml):
    nvml.install([FakeGpu(lost=True), FakeGpu(name="healthy")])
    lost, healthy = Nvml().read()[0]
    assert lost.index == "0" and lost.name is None and lost.memory_used is None and lost.utilization is None
    assert healthy.name == "healthy" and healthy.memory_used == 3 * GiB


def test_mig_instances_are_listed_with_their_own_memory(nvml):
    slices = [FakeGpu(name="MIG 1g.10gb", memory_used=GiB, memory_total=10 * GiB, processes=[(1, None)]),
              None, FakeGpu(name="MIG 3g.40gb", memory_used=0, memory_total=40 * GiB)]
    nvml.install([FakeGpu(name="A100-SXM4-80GB", memory_total=80 * GiB, mig=slices)])
    gpu = Nvml().read()[0][0]
    assert [(m.index, m.name, m.memory_total) for m in gpu.mig_instances] == [
        ("0:0", "MIG 1g.10gb", 10 * GiB), ("0:2", "MIG 3g.40gb", 40 * GiB)]
    assert gpu.mig_instances[0].utilization is None  # NVML has none per MIG instance
    assert gpu.mig_instances[0].processes[0].used_memory is None


def test_no_exception_of_any_kind_reaches_the_sample(nvml):
    fake = nvml.install([FakeGpu()])

    def broken(handle):
        raise RuntimeError("binding does not match the driver")

    fake.nvmlDeviceGetMemoryInfo = broken
    pynvml.nvmlDeviceGetMemoryInfo = broken
    sample = Sampler().read()
    assert sample.gpus[0].memory_used is None and sample.gpus[0].utilization == 37


def test_a_binding_struct_without_gpu_is_na_and_nvml_problems_are_logged_once_per_kind(nvml, caplog, monkeypatch):
    import logging
    from types import SimpleNamespace

    fake = nvml.install([FakeGpu()])
    # An older or mismatched binding: the utilization struct has no .gpu
    monkeypatch.setattr(pynvml, "nvmlDeviceGetUtilizationRates", lambda handle: SimpleNamespace(memory=5))
    caplog.set_level(logging.DEBUG, logger="colabkit.telemetry")
    reader = Nvml()
    for _ in range(3):
        (gpu,), status = reader.read()
        assert status == "ok" and gpu.utilization is None and gpu.memory_total == 15 * GiB
    logged = [r.getMessage() for r in caplog.records]
    assert logged == ["NVML: SimpleNamespace has no usable .gpu ('types.SimpleNamespace' object has no attribute 'gpu')"]
    assert fake.calls["nvmlInit"] == 1


@pytest.mark.parametrize("code, said", [(pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "no NVIDIA driver here"),
                                        (pynvml.NVML_ERROR_UNKNOWN, "NVML is broken")])
def test_no_gpu_and_a_broken_nvml_are_told_apart_in_the_debug_log(nvml, caplog, code, said):
    import logging

    nvml.install([FakeGpu()], init_error=code)
    caplog.set_level(logging.DEBUG, logger="colabkit.telemetry")
    reader = Nvml()
    assert reader.read() == ((), NO_GPU) and reader.read() == ((), NO_GPU)
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 1 and logged[0].startswith(f"NVML: {said}: nvmlInit failed"), logged


HANG = 30.0  # seconds a hung NVML call sleeps: far beyond every limit the tests allow
LIMIT = 2.0  # a generous limit for what must not wait on the driver (it takes GPU_WAIT, 0.5 s)


def _nvml_threads():
    import threading

    return [t for t in threading.enumerate() if t.name == "colabkit-nvml"]


@pytest.mark.parametrize("fn", ["nvmlInit", "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetMemoryInfo"])
def test_a_hung_nvml_call_never_holds_up_a_sample_and_is_said(nvml, fn):
    import time

    nvml.install([FakeGpu()], hangs={fn: HANG})
    sampler = Sampler()
    started = time.monotonic()
    sample = sampler.read()
    assert time.monotonic() - started < LIMIT
    # The rest of the machine is read; the GPU part says the driver is not answering, and in what.
    assert sample.ram_total and sample.disks and sample.gpus == ()
    assert sample.gpu_status.startswith("waiting on the NVIDIA driver: no GPU reading yet") and fn in sample.gpu_status
    again = sampler.read()  # still waiting on the same call, never taken for "no GPU"
    assert again.gpu_status.startswith("waiting on the NVIDIA driver: no GPU reading yet") and fn in again.gpu_status
    started = time.monotonic()
    said = sampler.close()
    assert time.monotonic() - started < LIMIT
    assert f"still waiting inside the NVIDIA driver ({fn} has not returned)" in said and "daemon" in said
    (stuck,) = _nvml_threads()  # left inside the driver, and a daemon: it can't keep the kernel from exiting
    assert stuck.daemon


def test_readings_that_stop_say_since_when_and_come_back_when_the_driver_answers(nvml):
    import time

    fake = nvml.install([FakeGpu()])
    sampler = Sampler()
    assert sampler.read().gpu_status == "ok"
    fake.hangs["nvmlDeviceGetUtilizationRates"] = 1.5  # a driver that answers again after 1.5 s
    first, second = sampler.read(), sampler.read()  # one read in flight: the second waits on the same one
    assert first.gpus == second.gpus == ()
    assert re.fullmatch(r"GPU readings stopped 1\.\d s ago: the NVIDIA driver is not answering "
                        r"\(nvmlDeviceGetUtilizationRates has not returned\)", second.gpu_status), second.gpu_status
    assert fake.calls["nvmlDeviceGetUtilizationRates"] == 2  # the first, and the one still in the driver
    deadline = time.monotonic() + LIMIT
    while (sample := sampler.read()).gpu_status != "ok":
        assert time.monotonic() < deadline, sample.gpu_status
    assert sample.gpus[0].utilization == 37
    assert sampler.close() is None and not _nvml_threads()
