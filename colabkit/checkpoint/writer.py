"""The writer: a long-lived process that commits checkpoints from a shared staging buffer.

A writer thread would hold the GIL for much of each save and slow a GIL-bound training loop by
30-45% while it writes; a separate process that reads the staged bytes from shared memory costs
the loop a few percent. The training process copies the tensors that changed into the buffer (the
only stall) and sends a small job; the process hashes them, writes those the store's pool lacks,
fsyncs and commits through the store.
If the kernel is killed mid-save, the writer still finishes the commit, then exits.
"""

from __future__ import annotations

import dataclasses
import itertools
import mmap
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing import reduction
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Callable

from . import codec, stream
from .changes import kept_hashes as _kept
from .mirror import Mirror
from .pool import Pool
from .store import CheckpointStore


PREFAULT_PIECE = 8 << 20  # prefault() checks whether to stop after this many bytes (2-3 ms)
CLOSE_WAIT = 60.0  # seconds a closing writer may take to finish (its Drive copy) before it is stopped
CLOSE_NOTICE = 2.0  # seconds of that wait after which the person is told what it waits for


class StagingBuffer:
    """Memory the trainer copies its state into, shared with the writer by file descriptor.

    An anonymous memfd: no name in /dev/shm to leak, no resource tracker, and the kernel frees it
    when the last holder lets go, so a writer whose trainer was killed can still finish its commit.
    """

    _serials = itertools.count(1)

    def __init__(self, size: int):
        self.serial = next(self._serials)  # how the writer tells a new buffer from the one it mapped
        self.size = max(size, 1)
        self.fd = os.memfd_create("colabkit-staging", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, self.size)
        self.map = mmap.mmap(self.fd, self.size)

    @property
    def buf(self) -> memoryview:
        return memoryview(self.map)

    def prefault(self, stop: threading.Event, lock: threading.Lock) -> bool:
        """Touch every page, so the first copy into the buffer doesn't fault each one in (a fresh
        256 MiB buffer makes a copy 9x slower). Meant for a background thread: NumPy writes one
        byte per page without the GIL, a piece at a time under `lock`, and stops for good once
        `stop` is set (whoever sets it and then takes `lock` knows no page is touched after). It
        writes zeros: only for a buffer no one has staged into. True when every page was touched."""
        import numpy as np

        for begin in range(0, self.size, PREFAULT_PIECE):
            with lock:
                if stop.is_set():
                    return False
                piece = np.frombuffer(self.map, dtype=np.uint8, count=min(PREFAULT_PIECE, self.size - begin),
                                      offset=begin)
                piece[::mmap.PAGESIZE] = 0
                del piece  # no view outlives the lock: the buffer can be closed once `stop` is seen
        return True

    def close(self) -> None:
        try:
            self.map.close()
        except BufferError:  # a view is still held (an exception's traceback): unmapped when it goes
            pass
        os.close(self.fd)


def serve(conn) -> None:
    """The writer process's loop: one job at a time until the trainer closes its end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # an interrupted cell must not abort a commit
    os.nice(10)  # background work: on a 2-core Colab VM the training loop comes first
    buffer_id, mapped = None, None
    mirrors: dict[tuple[str, str], Mirror] = {}
    pools: dict[str, Pool] = {}  # a store's pool index, kept between saves
    fragments: dict[str, str] = {}  # the last job's reused encodings (state.Layouts), by placeholder
    index = codec.TensorIndex()  # the tensor index's rows as the last job described them
    unswept = None  # why the last collect after a save failed
    while True:
        try:
            job = conn.recv()
            if isinstance(job, tuple):  # a chunk the trainer sent before it heard its stream had failed
                continue
            if job["buffer"] != buffer_id:  # a new (larger) staging buffer: its fd follows the job
                fd = reduction.recv_handle(conn)
                mapped = mmap.mmap(fd, job["buffer_size"])
                os.close(fd)
                buffer_id = job["buffer"]
        except (EOFError, OSError):
            break
        started = time.perf_counter()
        payload: codec.Payload = job["payload"]
        store = None
        try:
            # A fragment the trainer sent before comes as None: the same text as the last job's. Taken
            # first, whatever becomes of the job, so the writer always holds what the trainer last sent.
            fragments = {key: fragments[key] if text is None else text for key, text in payload.fragments.items()}
            payload = dataclasses.replace(payload, fragments=fragments)
            streamed = job.get("stream")  # a state larger than the staging budget: a ring of chunks
            data = memoryview(mapped)[: mapped.size() if streamed else payload.data_size]
            written = []
            pool = pools.setdefault(job["root"], Pool(job["root"]))

            def write(folder):
                if streamed:
                    chunks = stream.received(conn, data, streamed["slot"], payload.data_size)
                    written.append(codec.write_payload(folder, pool, payload, streamed=stream.tensor_pieces(
                        payload.places, payload.sizes, chunks), index=index))
                else:
                    written.append(codec.write_payload(folder, pool, payload, data, index=index))
                return written[0]

            try:
                store = CheckpointStore(job["root"], job["keep"])
                copying = mirrors.get((job["root"], job.get("mirror")))
                checkpoint = store.commit(payload.step, write, payload.meta, collect=False,
                                          spare=copying.reading() if copying is not None else ())
            finally:
                data.release()
            result = {"ok": True, "id": checkpoint.id, "step": checkpoint.step,
                      "seconds": time.perf_counter() - started, "bytes": checkpoint.size,
                      "hashes": _kept(checkpoint, written[0])}
            try:
                higher = [kept.id for kept in store.list() if kept.step > payload.step]
            except OSError:  # the commit is done: what is above it is only for saying
                higher = []
            if not checkpoint.path.is_dir():  # retention kept `keep` higher steps: this one went at once
                result["outranked"] = higher
            elif higher:  # kept, but a restore loads the highest step, not this one
                result["above"] = higher
        except Exception as exc:  # reported to the trainer, raised at its next consistent point
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "errno": getattr(exc, "errno", None),
                      "step": payload.step, "abandoned": isinstance(exc, stream.Abandoned)}
        warnings = [unswept] if result["ok"] and unswept else []
        unswept = None
        if result["ok"] and job.get("mirror") and "outranked" not in result:
            try:  # the checkpoint is committed here whatever becomes of its copy
                key = (job["root"], job["mirror"])
                if key not in mirrors:
                    mirrors[key] = Mirror(Path(job["root"]), Path(job["mirror"]), job["keep"])
                mirrors[key].push(checkpoint.path)
            except Exception as exc:
                mirrors.pop(key, None)  # a new Mirror for the next checkpoint (this one's thread may have ended)
                warnings.append(f"{checkpoint.id} is saved in {job['root']}, but its copy to {job['mirror']} could "
                                f"not be started ({type(exc).__name__}: {exc}); the next checkpoint tries again.")
        if warnings:
            result["warning"] = " ".join(warnings)
        try:
            conn.send(result)
        except OSError:  # the trainer is gone (its kernel was killed): the commit is done, so stop
            break
        if store is not None:  # after the answer: the trainer need not wait for packs to be deleted
            try:
                store.collect()
                pools[job["root"]].forget_deleted()
            except OSError as exc:  # the space is not freed; said with the next save's result
                unswept = (f"could not delete the packs no kept checkpoint needs in {job['root']}/"
                           f"{codec.POOL} ({type(exc).__name__}: {exc}), so they still take disk space; it tries "
                           "again after the next save.")
    if unswept is not None:  # the collect after the last save failed: once more before going (close waits)
        try:
            store.collect()
        except OSError:
            pass  # said with that save's result already; the next session's first save collects
    for mirror in mirrors.values():  # the last checkpoint reaches Drive before the writer goes
        mirror.close()


def lost(step: int, exit_code: int | None) -> dict:
    """The result of a save whose writer died before it answered, and how it died: killed (the
    OOM killer, a user's kill) or by an error of its own, whose traceback is in the kernel's log."""
    if exit_code == -signal.SIGKILL:
        how = "killed by SIGKILL: the system's out-of-memory killer, or a kill -9"
    elif exit_code is not None and exit_code < 0:
        how = f"killed by signal {-exit_code}"
    elif exit_code == 0:
        how = "it stopped, unable to read the save from the trainer"
    elif exit_code is not None:
        how = f"stopped by an error of its own, exit code {exit_code}: its traceback is in the kernel's log"
    else:
        how = "no longer answering"
    return {"ok": False, "lost": True, "error": f"the writer process died ({how})", "step": step}


class WriterProcess:
    """The trainer's side: start the process once, send jobs, collect results.

    A plain `python -m colabkit.checkpoint.writer` over a socketpair, not multiprocessing: its
    spawn re-imports the parent's __main__, which a notebook or a script without a main guard
    can't afford, and fork would copy a kernel with threads and a CUDA context.
    """

    def __init__(self, lock_fd: int | None = None):
        """`lock_fd`: the store's lock (lock.py), held by the writer too until it exits."""
        import colabkit

        ours, theirs = socket.socketpair()
        package_parent = str(Path(colabkit.__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))}
        # Its own session: when a dead kernel's process group is killed, the commit in flight
        # still completes.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "colabkit.checkpoint.writer", str(theirs.fileno())],
            pass_fds=[theirs.fileno()] + ([lock_fd] if lock_fd is not None else []), stdin=subprocess.DEVNULL,
            env=env, start_new_session=True)
        theirs.close()
        self._conn = Connection(ours.detach())
        self._buffer_sent: int | None = None
        self._fragments_sent: dict[str, str] = {}  # what the writer holds of the last job's fragments
        self._early: dict | None = None  # a streamed job's result that came before its stream ended
        self.in_flight: dict | None = None

    def alive(self) -> bool:
        return self.process.poll() is None

    def submit(self, job: dict, buffer: StagingBuffer) -> None:
        """Send a job whose staged bytes are in `buffer` (its fd goes along the first time)."""
        payload = job["payload"]
        sent = self._fragments_sent  # the same text object as the last job's: not sent again
        job = {**job, "buffer": buffer.serial, "buffer_size": buffer.size, "payload": dataclasses.replace(
            payload, fragments={key: None if sent.get(key) is text else text for key, text in payload.fragments.items()})}
        self._fragments_sent = {}
        self._conn.send(job)
        self._fragments_sent = payload.fragments
        if self._buffer_sent != buffer.serial:
            reduction.send_handle(self._conn, buffer.fd, self.process.pid)
            self._buffer_sent = buffer.serial
        self.in_flight = job

    def send_chunk(self, slot: int, length: int) -> None:
        """A streamed job's next chunk is in `slot` of the ring (stream.py)."""
        self._conn.send(("chunk", slot, length))

    def abandon(self) -> None:
        """The trainer stopped in the middle of a stream (an interrupt): the writer drops the save."""
        try:
            self._conn.send(("abandon", 0, 0))
        except OSError:  # the writer is gone already
            pass

    def freed(self) -> int:
        """Wait until the writer has written a chunk of a streamed job; the slot it freed. OSError
        when the writer died (the save is lost)."""
        while True:
            try:
                if self._conn.poll(0.5):
                    message = self._conn.recv()
                    if isinstance(message, tuple) and message[0] == "freed":
                        return message[1]
                    self._early = message  # the job's result: it failed before the stream's end
                    raise OSError("the writer stopped reading the stream")
            except EOFError:
                raise OSError("the writer process died") from None
            if not self.alive():
                raise OSError("the writer process died")

    def poll(self, timeout: float = 0.0) -> dict | None:
        """The result of the job in flight if it is done (None if still writing or none sent)."""
        if self.in_flight is None:
            return None
        result, self._early = self._early, None
        try:
            while result is None and self._conn.poll(timeout):
                message = self._conn.recv()
                if not isinstance(message, tuple):  # a tuple: a streamed job's last slots freed
                    result = message
            ready = result is not None
        except (EOFError, OSError):  # the writer was killed (the OOM killer, a user's kill)
            result, ready = None, True
        if not ready:
            if self.alive():
                return None
        self.in_flight, job = None, self.in_flight
        if result is not None:
            return result
        try:
            self.process.wait(5)  # its end of the connection closes a moment before it exits
        except subprocess.TimeoutExpired:
            pass
        return lost(job["payload"].step, self.process.returncode)

    def wait(self) -> dict | None:
        while self.in_flight is not None:
            result = self.poll(0.5)
            if result is not None:
                return result
        return None

    def close(self, waiting: Callable[[], None] | None = None) -> None:
        """Let the writer finish its job and its Drive copy, and exit; `waiting` is called when
        that takes over CLOSE_NOTICE seconds. Stopped after CLOSE_WAIT (what it was copying is
        then not on Drive: Checkpointer.close says so)."""
        self._conn.close()  # the writer finishes its job, reads EOF and exits
        try:
            try:
                self.process.wait(CLOSE_NOTICE)
                return
            except subprocess.TimeoutExpired:
                if waiting is not None:
                    waiting()
            self.process.wait(CLOSE_WAIT - CLOSE_NOTICE)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):  # waited long enough, or told to stop waiting
            self.process.kill()
            self.process.wait()
            if sys.exc_info()[0] is KeyboardInterrupt:
                raise


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
