"""Writers to kill: a warm parent forks, on request, a child that commits checkpoints of a known
payload, step after step, until it is killed.

usage: commit_loop.py ROOT MEGABYTES, then lines on stdin:
  "start STEP [PHASE]"  fork a writer from STEP; the answer is its pid. With PHASE the child
                        SIGKILLs itself right after that phase of its first commit.
  "reap PID"            wait for that child; the answer is the signal that ended it.
The payload of step N is bytes derived from N alone, so a reader can tell old from new, bit for
bit, beside a frozen tensor every step shares through the pool (so kills also land while
retention deletes the packs only older steps used, and never the shared one). Forking from one parent that has imported everything already makes a trial cost
milliseconds instead of a Python start.
"""

import os
import signal
import sys

import numpy as np

from colabkit.checkpoint import codec
from colabkit.checkpoint.changes import ALIGN
from colabkit.checkpoint.pool import Pool
from colabkit.checkpoint.store import CheckpointStore


def payload(step: int, megabytes: int) -> np.ndarray:
    return np.random.default_rng(step).integers(0, 2**31, size=megabytes * (1 << 18), dtype=np.int32)


def frozen(megabytes: int) -> np.ndarray:
    return np.random.default_rng(10**9).integers(0, 2**31, size=megabytes * (1 << 18), dtype=np.int32)


def staged(step: int, keys: list[str], arrays: list[np.ndarray]) -> tuple[codec.Payload, memoryview]:
    """A payload of `arrays` (int32) and its staged bytes: the arrays one after another, each at
    an offset aligned as the trainer's staging buffer aligns it."""
    places, size = [], 0
    for array in arrays:
        places.append(size)
        size += array.nbytes + (-array.nbytes % ALIGN)
    data = bytearray(size)
    for array, place in zip(arrays, places):
        data[place:place + array.nbytes] = array.tobytes()
    encoded = codec.Payload(step, keys, ["I32"] * len(arrays), [a.shape for a in arrays], [a.nbytes for a in arrays],
                            places, size, {"structure": {}, "step": step, "position": 0}, None, {"platform": "test"})
    return encoded, memoryview(data)


def commit_forever(root: str, step: int, megabytes: int, kill_after: str | None) -> None:
    def phase(name):
        if name == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    store = CheckpointStore(root, keep=2)
    pool = Pool(root)
    base = frozen(megabytes)
    while True:
        encoded, data = staged(step, ["x", "base"], [payload(step, megabytes), base])
        store.commit(step, lambda folder: codec.write_payload(folder, pool, encoded, data), encoded.meta, phase=phase)
        step += 1


def main():
    root, megabytes = sys.argv[1], int(sys.argv[2])
    payload(0, 1)  # warm numpy's generator up in the parent
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if words[0] == "start":
            pid = os.fork()
            if pid == 0:
                commit_forever(root, int(words[1]), megabytes, words[2] if len(words) > 2 else None)
            print(pid, flush=True)
        elif words[0] == "reap":
            _, status = os.waitpid(int(words[1]), 0)
            print(os.WTERMSIG(status) if os.WIFSIGNALED(status) else -1, flush=True)


if __name__ == "__main__":
    main()
