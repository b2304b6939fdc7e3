"""The writer: a long-lived process that commits checkpoints from a shared-memory staging buffer.

A writer thread would hold the GIL for much of each save and slow a GIL-bound training loop by
30-45% while it writes; a separate process that reads the staged bytes from shared memory costs
the loop a few percent. The training process copies its state into the buffer (the only stall)
and sends a small job; the process serialises, hashes, fsyncs and commits through the store.
If the kernel is killed mid-save, the writer still finishes the commit, then exits.
"""

from __future__ import annotations

import mmap
import os
import socket
import subprocess
import sys
import time
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Callable

from .store import CheckpointStore, FileRecord, write_file
from . import tensorfile

TENSORS = "tensors.safetensors"
STATE = "state.json"
OBJECTS = "objects.pkl"


def payload_writer(write_tensors: Callable[[Path], FileRecord], state_json: bytes, objects_pkl: bytes | None):
    """The `write_payload` for CheckpointStore.commit: tensors, state.json, objects.pkl."""

    def write(folder: Path) -> dict[str, FileRecord]:
        files = {TENSORS: write_tensors(folder / TENSORS), STATE: write_file(folder / STATE, state_json)}
        if objects_pkl is not None:
            files[OBJECTS] = write_file(folder / OBJECTS, objects_pkl)
        return files

    return write


def _attach(name: str):
    """Map the trainer's staging buffer. On Linux it is a file in /dev/shm: mapping that file
    leaves its lifetime to the trainer (and its resource tracker, if the trainer dies)."""
    path = Path("/dev/shm", name.lstrip("/"))
    if path.exists():
        with open(path, "r+b") as f:
            return mmap.mmap(f.fileno(), 0)
    shm = shared_memory.SharedMemory(name=name)
    from multiprocessing import resource_tracker

    resource_tracker.unregister(shm._name, "shared_memory")  # noqa: SLF001 (the documented workaround)
    return shm.buf


def serve(conn) -> None:
    """The writer process's loop: one job at a time until the trainer closes the pipe."""
    attached: dict[str, object] = {}
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            break
        started = time.perf_counter()
        try:
            if job["shm"] not in attached:
                attached = {job["shm"]: _attach(job["shm"])}  # a new, larger buffer replaces the old
            data = memoryview(attached[job["shm"]])[: job["size"]]
            try:
                store = CheckpointStore(job["root"], job["keep"])
                write_tensors = lambda path: tensorfile.write(path, job["header"], data)  # noqa: E731
                checkpoint = store.commit(job["step"], payload_writer(write_tensors, job["state"], job["objects"]),
                                          job["meta"])
            finally:
                data.release()
            conn.send({"ok": True, "id": checkpoint.id, "step": checkpoint.step,
                       "seconds": time.perf_counter() - started, "bytes": checkpoint.size})
        except Exception as exc:  # reported to the trainer, raised at its next consistent point
            conn.send({"ok": False, "error": f"{type(exc).__name__}: {exc}", "errno": getattr(exc, "errno", None),
                       "step": job.get("step")})


class WriterProcess:
    """The trainer's side: start the process once, send jobs, collect results.

    A plain `python -m colabkit.checkpoint.writer` over a socketpair, not multiprocessing: its
    spawn re-imports the parent's __main__, which a notebook or a script without a main guard
    can't afford, and fork would copy a kernel with threads and a CUDA context.
    """

    def __init__(self):
        import colabkit

        ours, theirs = socket.socketpair()
        package_parent = str(Path(colabkit.__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "colabkit.checkpoint.writer", str(theirs.fileno())],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env)
        theirs.close()
        self._conn = Connection(ours.detach())
        self.in_flight: dict | None = None

    def alive(self) -> bool:
        return self.process.poll() is None

    def submit(self, job: dict) -> None:
        self._conn.send(job)
        self.in_flight = job

    def poll(self, timeout: float = 0.0) -> dict | None:
        """The result of the job in flight if it is done (None if still writing or none sent)."""
        if self.in_flight is None:
            return None
        if not self._conn.poll(timeout):
            if not self.alive():
                self.in_flight = None
                return {"ok": False, "error": "the writer process died", "step": None}
            return None
        self.in_flight = None
        return self._conn.recv()

    def wait(self) -> dict | None:
        while self.in_flight is not None:
            result = self.poll(0.5)
            if result is not None:
                return result
        return None

    def close(self) -> None:
        self._conn.close()  # the writer finishes its job, reads EOF and exits
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
