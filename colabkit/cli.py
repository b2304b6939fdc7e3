"""`colabkit` from a terminal: the platform and its limits, and a text watch of the machine."""

from __future__ import annotations

import argparse
import sys
import time

from .errors import ColabkitError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="colabkit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="print the platform, its limits and the session's time left")
    info.add_argument("--tier", help="Colab tier: free, pro or pro+")
    watch = commands.add_parser("watch", help="print GPU, CPU, RAM and disk readings until Ctrl-C")
    watch.add_argument("--interval", default="5s", help="time between lines (default 5s)")
    watch.add_argument("--once", action="store_true", help="print one reading and exit")
    watch.add_argument("--tier", help="Colab tier: free, pro or pro+")
    args = parser.parse_args(argv)

    from . import monitor

    try:
        if args.command == "info":
            print(monitor.info(tier=args.tier))
        elif args.once:
            print(monitor.reading(tier=args.tier))
        else:
            watcher = monitor.watch(interval=args.interval, view="text", tier=args.tier, text_every=0)
            try:
                while watcher.watcher.running:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                monitor.stop_watch()
    except ColabkitError as exc:
        print(f"colabkit: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
