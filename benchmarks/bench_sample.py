"""CPU cost of one Sample against the raw psutil calls it is made of. Goal: <= 1 ms with no GPU.

CPU time (not wall time) on this thread, so another busy core doesn't move the figure.
"""

import argparse
import os
import sys
import time

import psutil

from colabkit.telemetry import Sampler


def per_call(fn, n):
    fn()
    start = time.thread_time()
    for _ in range(n):
        fn()
    return (time.thread_time() - start) / n


def raw_psutil():
    psutil.virtual_memory()
    psutil.swap_memory()
    psutil.cpu_percent(None)
    os.stat(".")
    psutil.disk_usage(".")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=3000)
    args = parser.parse_args()
    sampler = Sampler()
    raw = per_call(raw_psutil, args.n)
    sample = per_call(sampler.read, args.n)
    print(f"raw psutil calls (baseline): {raw * 1e6:.0f} us")
    print(f"one Sample:                  {sample * 1e6:.0f} us  (goal <= 1000 us)")
    print(f"ratio Sample / raw psutil:   {sample / raw:.2f}  (the rest: cgroup files, NVML init check, dataclasses)")
    return 0 if sample <= 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
