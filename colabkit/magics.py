"""The magics: argument parsing and a call into the Python API, nothing more.

Every error the user can fix arrives as a ColabkitError and is shown as a UsageError: one
paragraph, no traceback.
"""

from __future__ import annotations

import functools

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .errors import ColabkitError


def _clear_errors(method):
    @functools.wraps(method)
    def wrapper(self, line=""):
        try:
            return method(self, line)
        except ColabkitError as exc:
            raise UsageError(str(exc)) from None

    return wrapper


def _export_arguments(method):
    """The export's options (shared with `colabkit export`) as magic_arguments."""
    from .sagemaker.arguments import ARGUMENTS

    for names, settings in reversed(ARGUMENTS):
        method = argument(*names, **settings)(method)
    return method


@magics_class
class ColabkitMagics(Magics):
    @line_magic
    @magic_arguments()
    @argument("action", nargs="?", default="start", choices=["start", "stop", "once", "info", "plot", "save"],
              help="start (default): show the live panel; stop: end it (its output becomes a summary); once: "
                   "print one reading; info: print the platform, its limits and the time left in this session; "
                   "plot: show the history as charts; save PATH: write the history as PATH.png and PATH.csv.")
    @argument("path", nargs="?", default=None, help="With save: where to write, e.g. run.png (and run.csv).")
    @argument("--once", action="store_true", help="Same as the action 'once'.")
    @argument("--info", action="store_true", help="Same as the action 'info'.")
    @argument("--interval", default="1s", help="Seconds between samples (default 1s).")
    @argument("--history", default="10m", help="How much history to keep (default 10m).")
    @argument("--view", default="auto", choices=["auto", "widget", "colab", "text"],
              help="auto picks a widget panel in Jupyter, the served panel on Colab, text elsewhere.")
    @argument("--tier", default=None, help="Your Colab tier: free (12 h cap, the default), pro or "
                                           "pro+ (24 h). Also read from COLABKIT_TIER.")
    @argument("--idle", default=None, help="An idle-disconnect limit to count down, e.g. 90m "
                                           "(no platform documents one; off by default).")
    @argument("--ram-alert", default=None, help="Alert when RAM reaches this %% (default 90).")
    @argument("--gpu-alert", default=None, help="Alert when GPU memory reaches this %% (default 95).")
    @argument("--disk-alert", default=None, help="Alert when a disk reaches this %% (default 90).")
    @argument("--every", default="60s", help="With the text view: print a reading this often (default 60s).")
    @_clear_errors
    def gpuwatch(self, line=""):
        """Live GPU, CPU, RAM and disk panel with session time left and alerts.

        Examples: %gpuwatch   %gpuwatch --interval 2s   %gpuwatch --tier pro   %gpuwatch --once
        %gpuwatch info   %gpuwatch plot   %gpuwatch save run.png   %gpuwatch stop
        """
        from . import monitor

        args = parse_argstring(self.gpuwatch, line)
        action = "once" if args.once else "info" if args.info else args.action
        if (action == "save") != (args.path is not None):
            raise ColabkitError("%gpuwatch save needs a path (e.g. %gpuwatch save run.png, which writes run.png "
                                "and run.csv); only save takes one.")
        if action == "plot":
            monitor.plot()
        elif action == "save":
            print("colabkit: wrote " + ", ".join(str(p) for p in monitor.save(args.path)))
        elif action == "stop":
            print("colabkit: watch stopped." if monitor.stop_watch() else "colabkit: no watch was running.")
        elif action == "once":
            print(monitor.reading(tier=args.tier))
        elif action == "info":
            print(monitor.info(tier=args.tier, idle=args.idle))
        else:
            monitor.watch(interval=args.interval, history=args.history, view=args.view, tier=args.tier,
                          idle=args.idle, ram_alert=args.ram_alert, gpu_alert=args.gpu_alert,
                          disk_alert=args.disk_alert, text_every=args.every)

    @line_magic
    @magic_arguments()
    @argument("words", nargs="*", help="every PERIOD NAME...: what to save and how often (30s, 15m, 1h30m, "
                                       "or '500 optimizer steps'); now: save at once; list; restore [latest|ID]; "
                                       "keep: go on from the live state after an interrupted run; off.")
    @argument("--keep", type=int, default=3, help="How many checkpoints to keep (default 3).")
    @argument("--to", default=None, help="Checkpoint folder (default: <storage>/checkpoints, see %%mount).")
    @argument("--trust", action="store_true", help="With restore or every: also load objects.pkl (pickled "
                                                   "values). Only for checkpoints you wrote yourself.")
    @_clear_errors
    def checkpoint(self, line=""):
        """Save training state on a schedule, atomically, and resume it after a restart.

        Examples:
          %checkpoint every 15m model optimizer scheduler
          %checkpoint every 500 steps model optimizer --keep 5
          for epoch in colabkit.resumable(range(50)): ...
          %checkpoint now      %checkpoint list      %checkpoint restore [latest|step-N]      %checkpoint off
          %checkpoint keep     (after an interrupted loop or Trainer.train(): go on from the live state)
        """
        from .checkpoint import commands

        args = parse_argstring(self.checkpoint, line)
        return commands.run(args.words, keep=args.keep, to=args.to, trust=args.trust, namespace=self.shell.user_ns)

    @line_magic
    @magic_arguments()
    @argument("instance_type", help="A SageMaker training instance type, e.g. ml.g5.xlarge.")
    @_export_arguments
    @_clear_errors
    def to_sagemaker(self, line=""):
        """Export this notebook's run (its cells up to this one, and the latest checkpoint) as a
        SageMaker training job: run it here first (--local), see the request (--dry-run), or
        submit it and follow it (--wait).

        Example: %to_sagemaker ml.g5.xlarge --local    %to_sagemaker ml.g5.xlarge --wait
        """
        from . import platform, runtime
        from .sagemaker import arguments, capture, export

        if export.inside_job():
            return None
        args = parse_argstring(self.to_sagemaker, line)
        options = arguments.options_from(args, args.instance_type)
        kernel = runtime.current(self.shell)
        captured = capture.capture(kernel, capture.calling_cell(self.shell), options.all_cells)
        outcome = export.finish(export.run(options, captured, kernel), options.wait, platform.in_kernel())
        return outcome.job if outcome.mode == export.SUBMIT and not options.wait else None

    @line_magic
    @magic_arguments()
    @argument("--to", default=None, help="Use this folder instead of the platform's default.")
    @_clear_errors
    def mount(self, line=""):
        """Mount the storage colabkit keeps your work in, and print its path.

        Colab: Google Drive (asks for consent), folder MyDrive/colabkit/<notebook>. Kaggle:
        /kaggle/working. In a SageMaker job: /opt/ml/checkpoints. Elsewhere: colabkit-storage/<notebook>
        beside the notebook.
        Example: %mount   %mount --to /data/runs
        """
        from . import runtime

        args = parse_argstring(self.mount, line)
        path = runtime.current(self.shell).mount(to=args.to)
        print(f"colabkit storage: {path}")
        return path

