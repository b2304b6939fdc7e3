"""CPU the watcher costs while it runs at 1 Hz, sampling and rendering the panel each tick.

Measures this process's CPU time over --seconds (default 60) while the main thread sleeps, as a
share of one core. Goal: <= 0.5%.
"""

import argparse
import resource
import sys
import time

from colabkit import platform
from colabkit.views import render
from colabkit.watcher import Watcher


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    watcher = Watcher(interval=args.interval, platform=platform.detect())

    def render_panel(sample):  # what the widget and served views do on each sample
        render.parts(watcher)

    watcher.subscribe(on_sample=render_panel)
    idle_start = cpu_seconds()
    time.sleep(min(5.0, args.seconds / 4))
    idle = (cpu_seconds() - idle_start) / min(5.0, args.seconds / 4)
    start_cpu, start = cpu_seconds(), time.monotonic()
    watcher.start()
    time.sleep(args.seconds)
    watcher.stop()
    elapsed = time.monotonic() - start
    share = (cpu_seconds() - start_cpu) / elapsed - idle
    ticks = watcher.latest_seq
    print(f"idle process (baseline): {idle * 100:.3f}% of one core")
    print(f"watcher at {1 / args.interval:g} Hz with panel render: {share * 100:.3f}% of one core over {elapsed:.0f} s "
          f"({ticks} samples)  (goal <= 0.5%)")
    return 0 if share <= 0.005 else 1


if __name__ == "__main__":
    sys.exit(main())
