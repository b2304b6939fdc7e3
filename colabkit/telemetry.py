"""One reading of the machine: CPU, RAM (container-aware), swap, disks and every NVIDIA GPU.

A reading that can't be had is None ("n/a" on screen), never an exception: the sampler runs in a
background thread beside the user's training and must not break it. NVML (nvidia-ml-py) is
initialised once, on the first reading; without a GPU or a driver every sample says "no NVIDIA GPU".
NVML calls run on a thread of their own (GpuReader): a driver that hangs costs a sample at most
GPU_WAIT seconds, and the sample says the driver is not answering.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

NO_GPU = "no NVIDIA GPU"
GPU_WAIT = 0.5  # seconds a sample waits for NVML; past that it goes on without GPU rows, saying why

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    name: str | None
    used_memory: int | None  # bytes; NVML can't tell per process on MIG or under some drivers


@dataclass(frozen=True)
class GpuReading:
    """One GPU, or one MIG instance of it, in nvidia-smi's units (bytes, %, °C, W)."""

    index: str  # "0", or "0:1" for MIG instance 1 of GPU 0
    name: str | None
    uuid: str | None
    utilization: float | None  # nvidia-smi --query-gpu=utilization.gpu
    memory_used: int | None  # memory.used
    memory_total: int | None  # memory.total
    temperature: float | None  # temperature.gpu
    power_draw: float | None  # power.draw
    power_limit: float | None  # enforced.power.limit
    processes: tuple[GpuProcess, ...] = ()
    mig_instances: tuple["GpuReading", ...] = ()

    @property
    def memory_fraction(self) -> float | None:
        return fraction(self.memory_used, self.memory_total)


@dataclass(frozen=True)
class DiskReading:
    label: str  # "working folder", "storage"
    path: str
    used: int | None
    total: int | None

    @property
    def fraction(self) -> float | None:
        return fraction(self.used, self.total)


@dataclass(frozen=True)
class Sample:
    """Everything colabkit shows at one moment. Fields that couldn't be read are None."""

    time: float
    cpu_percent: float | None
    ram_used: int | None
    ram_total: int | None
    ram_limited_by: str  # "host" or "cgroup v2"/"cgroup v1": whose total ram_total is
    swap_used: int | None
    swap_total: int | None
    disks: tuple[DiskReading, ...] = ()
    gpus: tuple[GpuReading, ...] = ()
    gpu_status: str = NO_GPU  # NO_GPU, or "ok"
    # This kernel's own share, beside the machine's: "CPU 99%" alone is every process's.
    kernel_cpu_percent: float | None = None  # of the whole machine, as cpu_percent is
    kernel_ram_used: int | None = None  # the kernel process's resident memory

    @property
    def ram_fraction(self) -> float | None:
        return fraction(self.ram_used, self.ram_total)


def fraction(used, total) -> float | None:
    """used / total, or None when either is unknown."""
    if used is None or not total:
        return None
    return used / total


class CgroupMemory:
    """The container's memory limit and use, which psutil does not see (jupyter-resource-usage#43)."""

    def __init__(self, root: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup"):
        self.kind, self._limit_file, self._usage_file, self._stat_file, self._inactive_key = (
            self._find(Path(root), Path(proc_cgroup))
        )

    @staticmethod
    def _find(root: Path, proc_cgroup: Path):
        own = "/"
        try:
            for line in proc_cgroup.read_text().splitlines():
                if line.startswith("0::"):
                    own = line[3:] or "/"
        except OSError:
            pass
        # cgroup v2: our own group first, then the root the container sees.
        for folder in (root / own.lstrip("/"), root):
            if (folder / "memory.max").exists():
                return ("cgroup v2", folder / "memory.max", folder / "memory.current",
                        folder / "memory.stat", "inactive_file")
        v1 = root / "memory"
        if (v1 / "memory.limit_in_bytes").exists():
            return ("cgroup v1", v1 / "memory.limit_in_bytes", v1 / "memory.usage_in_bytes",
                    v1 / "memory.stat", "total_inactive_file")
        return (None, None, None, None, None)

    def read(self) -> tuple[int, int] | None:
        """(used, limit) in bytes, used counted as the kernel's OOM killer counts it; None if unlimited."""
        if self.kind is None:
            return None
        try:
            raw_limit = self._limit_file.read_text().strip()
            if raw_limit == "max":
                return None
            limit = int(raw_limit)
            usage = int(self._usage_file.read_text())
            inactive = 0
            for line in self._stat_file.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == self._inactive_key:
                    inactive = int(value)
                    break
        except (OSError, ValueError):
            return None
        # The working set (docker stats, kubectl top): page cache that can be dropped doesn't count.
        return max(usage - inactive, 0), limit


class Nvml:
    """NVML through nvidia-ml-py, initialised once; every failure becomes None or "no NVIDIA GPU"."""

    def __init__(self):
        self._nvml = None
        self._tried = False
        self._process_names: dict[int, str | None] = {}
        self._logged: set[tuple] = set()
        self.calling: str | None = None  # the NVML function being called now: what a hang is named by

    @property
    def absent(self) -> bool:
        """NVML was tried and is not there: no call can reach a driver, so none can hang."""
        return self._tried and self._nvml is None

    def _problem(self, kind: tuple, message: str) -> None:
        """Log an NVML problem once per kind (debug): "no GPU" and "NVML broken" read differently."""
        if kind not in self._logged:
            self._logged.add(kind)
            log.debug("NVML: %s", message, exc_info=True)

    def _init(self):
        try:
            self._start()
        finally:
            self._tried = True  # only now: while nvmlInit hangs, NVML is not known to be absent

    def _start(self):
        try:
            import pynvml
        except ImportError:
            self._problem(("import",), "nvidia-ml-py is not installed: no GPU readings")
            return
        try:
            self.calling = "nvmlInit"
            pynvml.nvmlInit()
            self._nvml = pynvml
        except pynvml.NVMLError as exc:  # LibraryNotFound, DriverNotLoaded: "no GPU here"; others: broken
            absent = exc.value in (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
            self._problem(("init", exc.value), f"{'no NVIDIA driver here' if absent else 'NVML is broken'}: "
                                               f"nvmlInit failed ({exc})")
        except Exception as exc:  # the binding itself does not work
            self._problem(("init", type(exc).__name__), f"NVML is broken: nvmlInit raised {type(exc).__name__}: {exc}")

    def read(self) -> tuple[tuple[GpuReading, ...], str]:
        if not self._tried:
            self._init()
        if self._nvml is None:
            return (), NO_GPU
        count = self._call(self._nvml.nvmlDeviceGetCount)
        if not count:
            return (), NO_GPU
        gpus = []
        for i in range(count):
            handle = self._call(self._nvml.nvmlDeviceGetHandleByIndex, i)
            gpus.append(self._read_device(str(i), handle))
        return tuple(gpus), "ok"

    def _call(self, fn, *args):
        """One NVML field: its value, or None for any NVML error (NotSupported, GpuIsLost, ...)."""
        self.calling = fn.__name__
        try:
            return fn(*args)
        except self._nvml.NVMLError as exc:
            self._problem((fn.__name__, exc.value), f"{fn.__name__} failed ({exc})")
            return None
        except Exception as exc:  # a binding that doesn't match the driver: still only this field is lost
            self._problem((fn.__name__, type(exc).__name__), f"{fn.__name__} raised {type(exc).__name__}: {exc} "
                                                             "(nvidia-ml-py does not match the driver?)")
            return None

    def _field(self, struct, name: str, kind):
        """A field of an NVML struct; None (logged once) when this binding's struct lacks it."""
        if struct is None:
            return None
        try:
            return kind(getattr(struct, name))
        except (AttributeError, TypeError, ValueError) as exc:
            self._problem((type(struct).__name__, name), f"{type(struct).__name__} has no usable .{name} ({exc})")
            return None

    def _read_device(self, index: str, handle, with_mig: bool = True) -> GpuReading:
        nv = self._nvml
        if handle is None:
            return GpuReading(index, None, None, None, None, None, None, None, None)
        memory = self._call(nv.nvmlDeviceGetMemoryInfo, handle)
        utilization = self._call(nv.nvmlDeviceGetUtilizationRates, handle)
        power = self._call(nv.nvmlDeviceGetPowerUsage, handle)
        power_limit = self._call(nv.nvmlDeviceGetEnforcedPowerLimit, handle)
        return GpuReading(
            index=index,
            name=_text(self._call(nv.nvmlDeviceGetName, handle)),
            uuid=_text(self._call(nv.nvmlDeviceGetUUID, handle)),
            utilization=self._field(utilization, "gpu", float),
            memory_used=self._field(memory, "used", int),
            memory_total=self._field(memory, "total", int),
            temperature=_number(self._call(nv.nvmlDeviceGetTemperature, handle, nv.NVML_TEMPERATURE_GPU)),
            power_draw=power / 1000 if power is not None else None,  # NVML reports milliwatts
            power_limit=power_limit / 1000 if power_limit is not None else None,
            processes=self._processes(handle),
            mig_instances=self._mig_instances(index, handle) if with_mig else (),
        )

    def _processes(self, handle) -> tuple[GpuProcess, ...]:
        nv = self._nvml
        found: dict[int, GpuProcess] = {}
        for getter in (nv.nvmlDeviceGetComputeRunningProcesses, nv.nvmlDeviceGetGraphicsRunningProcesses):
            for proc in self._call(getter, handle) or ():
                used = getattr(proc, "usedGpuMemory", None)
                found[proc.pid] = GpuProcess(proc.pid, self._process_name(proc.pid), used)
        return tuple(sorted(found.values(), key=lambda p: -(p.used_memory or 0)))

    def _process_name(self, pid: int) -> str | None:
        if pid not in self._process_names:
            try:
                self._process_names[pid] = psutil.Process(pid).name()
            except (psutil.Error, OSError):
                self._process_names[pid] = None  # another container's PID namespace
        return self._process_names[pid]

    def _mig_instances(self, index: str, handle) -> tuple[GpuReading, ...]:
        nv = self._nvml
        mode = self._call(nv.nvmlDeviceGetMigMode, handle)
        if not mode or mode[0] != nv.NVML_DEVICE_MIG_ENABLE:
            return ()
        instances = []
        for slot in range(self._call(nv.nvmlDeviceGetMaxMigDeviceCount, handle) or 0):
            mig = self._call(nv.nvmlDeviceGetMigDeviceHandleByIndex, handle, slot)
            if mig is not None:  # NotFound: an empty slot
                instances.append(self._read_device(f"{index}:{slot}", mig, with_mig=False))
        return tuple(instances)


class GpuReader:
    """Nvml.read() on a daemon thread of its own, so a driver that hangs (in nvmlInit or any query)
    never holds up a sample, a cell or a stop: Python can't interrupt a thread inside a C call, so
    nothing else may wait on one for long. One read is in flight at a time; a sample waits for it at
    most `wait` seconds and otherwise goes on without GPU rows, its gpu_status saying for how long
    the driver has not answered and in which call."""

    def __init__(self, nvml: Nvml):
        self.nvml = nvml
        self._flight: _Flight | None = None  # the read not yet taken
        self._last: threading.Thread | None = None  # the latest read's thread, for close()
        self._answered_at: float | None = None  # time.time() of the last reading that came in

    def read(self, wait: float) -> tuple[tuple[GpuReading, ...], str]:
        if self.nvml.absent:
            return (), NO_GPU
        if self._flight is None:
            self._flight = _Flight.join_or_start(self.nvml)
            self._last = self._flight.thread
        flight = self._flight
        if not flight.done.wait(wait):
            return (), self._not_answering(flight)
        self._flight = None
        self._answered_at = time.time()
        return flight.result

    def _not_answering(self, flight: "_Flight") -> str:
        call = flight.nvml.calling or "NVML"
        if self._answered_at is None:
            return (f"waiting on the NVIDIA driver: no GPU reading yet ({call} has not returned after "
                    f"{_seconds(time.time() - flight.started)})")
        return (f"GPU readings stopped {_seconds(time.time() - self._answered_at)} ago: the NVIDIA driver is not "
                f"answering ({call} has not returned)")

    def close(self, timeout: float = 0.2) -> str | None:
        """Give the last read `timeout` seconds to end. One still inside the driver is left to its
        daemon thread, which ends when the driver answers (or with the kernel): returns a sentence
        that says so, for the person, else None."""
        thread = self._last
        if thread is None:
            return None
        thread.join(timeout)
        if not thread.is_alive():
            return None
        calling = self._flight.nvml.calling if self._flight is not None else self.nvml.calling
        return (f"a GPU reading is still waiting inside the NVIDIA driver ({calling or 'NVML'} has not "
                "returned): the driver is not answering. Its thread (colabkit-nvml, a daemon) is left to end "
                "when the driver answers, or with the kernel; nothing else waits on it.")


class _Flight:
    """One Nvml.read() on its own daemon thread; `done` is set when it has a result."""

    _current: "_Flight | None" = None  # the process's latest read: NVML is one library per process
    _lock = threading.Lock()

    @classmethod
    def join_or_start(cls, nvml: Nvml) -> "_Flight":
        """The read still inside the driver, whichever watch started it (a new one would only hang
        beside it: while the driver does not answer, each new watch or --once would leave one more
        thread), else a new read."""
        with cls._lock:
            if cls._current is None or cls._current.done.is_set():
                cls._current = cls(nvml)
            return cls._current

    def __init__(self, nvml: Nvml):
        self.nvml = nvml
        self.started = time.time()
        self.done = threading.Event()
        self.result: tuple[tuple[GpuReading, ...], str] = ((), NO_GPU)
        self.thread = threading.Thread(target=self._run, args=(nvml,), name="colabkit-nvml", daemon=True)
        self.thread.start()

    def _run(self, nvml: Nvml) -> None:
        try:
            self.result = nvml.read()
        except Exception:  # Nvml.read catches NVML's errors; anything else is a bug, not a reason to hang
            log.exception("colabkit: the GPU reading failed")
        finally:
            self.done.set()


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"


def _text(value) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


def _number(value) -> float | None:
    return float(value) if value is not None else None


@dataclass
class Sampler:
    """Takes Samples. Holds what is worth keeping between readings: NVML, the cgroup files."""

    # Called at each reading, so storage mounted after the watch started shows up too.
    disk_paths: Callable[[], dict[str, str]] = field(default=lambda: {"working folder": os.getcwd()})
    cgroup: CgroupMemory = field(default_factory=CgroupMemory)
    nvml: Nvml = field(default_factory=Nvml)

    def __post_init__(self):
        self._gpus = GpuReader(self.nvml)
        psutil.cpu_percent(None)  # the first call only sets the baseline for the next
        self._kernel = psutil.Process()
        self._kernel.cpu_percent(None)
        self._cores = psutil.cpu_count() or 1

    def read(self, gpu_wait: float = GPU_WAIT) -> Sample:
        """A reading now; the GPU part waits at most `gpu_wait` seconds for the driver."""
        ram_used, ram_total, limited_by = _ram(self.cgroup)
        try:
            swap = psutil.swap_memory()
            swap_used, swap_total = swap.used, swap.total
        except (OSError, RuntimeError):
            swap_used = swap_total = None
        gpus, gpu_status = self._gpus.read(gpu_wait)
        return Sample(
            time=time.time(),
            cpu_percent=psutil.cpu_percent(None),
            ram_used=ram_used,
            ram_total=ram_total,
            ram_limited_by=limited_by,
            swap_used=swap_used,
            swap_total=swap_total,
            disks=self._disks(),
            gpus=gpus,
            gpu_status=gpu_status,
            **self._kernel_share(),
        )

    def close(self) -> str | None:
        """End the sampler's GPU reading thread; a sentence for the person when one is stuck in the driver."""
        return self._gpus.close()

    def _kernel_share(self) -> dict:
        try:
            with self._kernel.oneshot():
                # psutil counts a process's CPU in cores (up to 100% per core): as a share of the machine.
                cpu = self._kernel.cpu_percent(None) / self._cores
                rss = self._kernel.memory_info().rss
        except (psutil.Error, OSError):
            return {}
        return {"kernel_cpu_percent": cpu, "kernel_ram_used": rss}

    def _disks(self) -> tuple[DiskReading, ...]:
        readings, seen_devices = [], set()
        for label, path in self.disk_paths().items():
            try:
                device = os.stat(path).st_dev
                if device in seen_devices:
                    continue  # the same file system twice would only repeat its numbers
                seen_devices.add(device)
                usage = psutil.disk_usage(path)
                readings.append(DiskReading(label, path, usage.used, usage.total))
            except OSError:
                readings.append(DiskReading(label, path, None, None))
        return tuple(readings)


def _ram(cgroup: CgroupMemory) -> tuple[int | None, int | None, str]:
    host = psutil.virtual_memory()
    limited = cgroup.read()
    if limited is not None and limited[1] < host.total:
        return limited[0], limited[1], cgroup.kind
    # total - available: what is left before the OOM killer acts, as Colab's own RAM meter counts.
    return host.total - host.available, host.total, "host"
