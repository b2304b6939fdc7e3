"""A fake NVML behind the real nvidia-ml-py module, for machines without an NVIDIA GPU.

`install(gpus)` replaces the pynvml functions colabkit calls with ones that read FakeGpu objects.
Errors are the real pynvml exception classes, raised the way the real binding raises them
(`pynvml.NVMLError(code)` builds the matching subclass), per function and per device, so
NotSupported, GpuIsLost, FunctionNotFound and the rest reach colabkit exactly as on a real driver.
`hangs` makes a call sleep first, as a driver that stops answering does (a GPU falling off the
bus, a wedged kernel module): the call blocks in the caller's thread, then answers. `uninstall()`
ends every sleep and waits for the sleepers to finish their reading against this fake, so a hung
call never outlives its test nor reaches the next test's fake.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import SimpleNamespace

import pynvml

GiB = 1024**3


@dataclass
class FakeGpu:
    name: str = "Tesla T4"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    utilization: int = 37
    memory_used: int = 3 * GiB
    memory_total: int = 15 * GiB
    temperature: int = 61
    power_mw: int = 31_000
    power_limit_mw: int = 70_000
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, bytes)
    mig: list["FakeGpu | None"] | None = None  # MIG slots; None = MIG off; a None slot is empty
    errors: dict[str, int] = field(default_factory=dict)  # pynvml function name -> NVML error code
    lost: bool = False  # every call raises GpuIsLost, as after an Xid 79
    is_mig_instance: bool = False


class FakeNvml:
    """The state behind the patched functions; `calls` counts each function's calls."""

    def __init__(self, gpus: list[FakeGpu], init_error: int | None = None, hangs: dict[str, float] | None = None):
        self.gpus = gpus
        self.init_error = init_error
        self.hangs = dict(hangs or {})  # pynvml function name -> seconds it sleeps before answering
        self.released = threading.Event()  # set by uninstall(): every sleep ends
        self.sleepers: list[threading.Thread] = []
        self.calls: dict[str, int] = {}
        self.initialized = False

    def _check(self, fn: str, gpu: FakeGpu | None = None):
        self.calls[fn] = self.calls.get(fn, 0) + 1
        if fn in self.hangs:
            self.sleepers.append(threading.current_thread())
            self.released.wait(self.hangs[fn])
        if fn != "nvmlInit" and not self.initialized:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        if gpu is not None:
            if gpu.lost:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
            if fn in gpu.errors:
                raise pynvml.NVMLError(gpu.errors[fn])

    # -- the pynvml API --------------------------------------------------------------------
    def nvmlInit(self):
        self._check("nvmlInit")
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.initialized = True

    def nvmlShutdown(self):
        self._check("nvmlShutdown")
        self.initialized = False

    def nvmlDeviceGetCount(self):
        self._check("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        self._check("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[index]
        if gpu.lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return gpu

    def nvmlDeviceGetName(self, handle):
        self._check("nvmlDeviceGetName", handle)
        return handle.name

    def nvmlDeviceGetUUID(self, handle):
        self._check("nvmlDeviceGetUUID", handle)
        return handle.uuid

    def nvmlDeviceGetUtilizationRates(self, handle):
        self._check("nvmlDeviceGetUtilizationRates", handle)
        if handle.is_mig_instance:  # NVML has no utilization for a MIG instance
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return SimpleNamespace(gpu=handle.utilization, memory=handle.utilization // 2)

    def nvmlDeviceGetMemoryInfo(self, handle):
        self._check("nvmlDeviceGetMemoryInfo", handle)
        return SimpleNamespace(total=handle.memory_total, used=handle.memory_used,
                               free=handle.memory_total - handle.memory_used)

    def nvmlDeviceGetTemperature(self, handle, sensor):
        self._check("nvmlDeviceGetTemperature", handle)
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return handle.temperature

    def nvmlDeviceGetPowerUsage(self, handle):
        self._check("nvmlDeviceGetPowerUsage", handle)
        return handle.power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        self._check("nvmlDeviceGetEnforcedPowerLimit", handle)
        return handle.power_limit_mw

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        self._check("nvmlDeviceGetComputeRunningProcesses", handle)
        return [SimpleNamespace(pid=pid, usedGpuMemory=None if handle.is_mig_instance else used)
                for pid, used in handle.processes]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle):
        self._check("nvmlDeviceGetGraphicsRunningProcesses", handle)
        return []

    def nvmlDeviceGetMigMode(self, handle):
        self._check("nvmlDeviceGetMigMode", handle)
        if handle.mig is None:
            return [pynvml.NVML_DEVICE_MIG_DISABLE, pynvml.NVML_DEVICE_MIG_DISABLE]
        return [pynvml.NVML_DEVICE_MIG_ENABLE, pynvml.NVML_DEVICE_MIG_ENABLE]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle):
        self._check("nvmlDeviceGetMaxMigDeviceCount", handle)
        return len(handle.mig or [])

    def nvmlDeviceGetMigDeviceHandleByIndex(self, device, index):
        self._check("nvmlDeviceGetMigDeviceHandleByIndex", device)
        slots = device.mig or []
        if index >= len(slots) or slots[index] is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        instance = slots[index]
        instance.is_mig_instance = True
        return instance


PATCHED = [name for name in vars(FakeNvml) if name.startswith("nvml")]
_originals: dict[str, object] = {}
_installed: list[FakeNvml] = []


def install(gpus: list[FakeGpu], init_error: int | None = None, hangs: dict[str, float] | None = None) -> FakeNvml:
    """Point pynvml's functions at a fake with these GPUs; `uninstall()` puts the real ones back."""
    fake = FakeNvml(gpus, init_error, hangs)
    _installed.append(fake)
    for name in PATCHED:
        _originals.setdefault(name, getattr(pynvml, name))
        setattr(pynvml, name, getattr(fake, name))
    return fake


def uninstall() -> None:
    for fake in _installed:
        fake.released.set()
    for fake in _installed:
        for thread in fake.sleepers:
            if thread is not threading.current_thread():
                thread.join(5)
    _installed.clear()
    for name, original in _originals.items():
        setattr(pynvml, name, original)
    _originals.clear()
