"""A writer to kill: commits checkpoints of a known payload, step after step, until killed.

usage: commit_loop.py ROOT FIRST_STEP MEGABYTES [PHASE]
The payload of step N is bytes derived from N alone, so a reader can tell old from new, bit for
bit. With PHASE, the process SIGKILLs itself right after that phase of its first commit.
"""

import os
import signal
import sys

import numpy as np

from colabkit.checkpoint import tensorfile
from colabkit.checkpoint.store import CheckpointStore
from colabkit.checkpoint.writer import payload_writer


def payload(step: int, megabytes: int) -> np.ndarray:
    return np.random.default_rng(step).integers(0, 2**31, size=megabytes * (1 << 18), dtype=np.int32)


def main():
    root, step, megabytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    kill_after = sys.argv[4] if len(sys.argv) > 4 else None

    def phase(name):
        if name == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    store = CheckpointStore(root, keep=2)
    store.prepare()
    print("ready", flush=True)
    while True:
        data = payload(step, megabytes)
        header = tensorfile.header_bytes([("x", "I32", data.shape, 0, data.nbytes)])
        write = payload_writer(lambda path: tensorfile.write(path, header, memoryview(data).cast("B")),
                               f'{{"step": {step}}}'.encode(), None)
        store.commit(step, write, {"platform": "test"}, phase=phase)
        step += 1


if __name__ == "__main__":
    main()
