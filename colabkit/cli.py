"""`colabkit` from a terminal: the platform and its limits, a text watch of the machine, and the
export of a saved notebook as a SageMaker training job."""

from __future__ import annotations

import argparse
import sys
import time

from .errors import ColabkitError


def main(argv: list[str] | None = None) -> int:
    from .version import VERSION

    parser = argparse.ArgumentParser(prog="colabkit", description=__doc__)
    parser.add_argument("--version", action="version", version=f"colabkit {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="print the platform, its limits and the session's time left")
    info.add_argument("--tier", help="Colab tier: free, pro or pro+")
    watch = commands.add_parser("watch", help="print GPU, CPU, RAM and disk readings until Ctrl-C")
    watch.add_argument("--interval", default="5s", help="time between lines (default 5s)")
    watch.add_argument("--once", action="store_true", help="print one reading and exit")
    watch.add_argument("--tier", help="Colab tier: free, pro or pro+")
    export = commands.add_parser("export", help="export a notebook (.ipynb) as a SageMaker training job")
    export.add_argument("notebook", help="the .ipynb file; every code cell is exported")
    export.add_argument("--instance", required=True, metavar="TYPE", help="a training instance type, e.g. ml.g5.xlarge")
    export.add_argument("--storage", default=None, metavar="PATH",
                        help="the notebook's colabkit storage, with its checkpoints "
                             "(default: colabkit-storage/<notebook> beside the notebook)")
    from .sagemaker.arguments import ARGUMENTS

    for names, settings in ARGUMENTS:
        if names != ("--all",):  # the terminal always exports every cell
            export.add_argument(*names, **settings)
    args = parser.parse_args(argv)

    from . import monitor

    try:
        if args.command == "export":
            return _export(args)
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


def _export(args) -> int:
    from .notebook import from_file
    from .runtime import Runtime
    from .sagemaker import arguments, capture, export

    captured = capture.read_notebook(args.notebook)
    runtime = Runtime(notebook=from_file(args.notebook))
    if args.storage:
        runtime.mount(to=args.storage)
    outcome = export.run(arguments.options_from(args, args.instance), captured, runtime)
    if outcome.mode == export.SUBMIT and not args.wait:
        print(f"[colabkit] {outcome.job.summary()}")
        return 0
    try:
        export.finish(outcome, args.wait, in_notebook=False)
    except ColabkitError as exc:  # the job ran, and failed: its log is above
        print(f"colabkit: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
