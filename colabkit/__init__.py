"""colabkit: see, survive and escape the limits of free notebooks (Colab, Kaggle, Studio Lab, Jupyter).

`%load_ext colabkit` registers the magics and imports nothing heavy; the Python API below is
imported on first use, so `import colabkit` stays cheap in every notebook.
"""

import importlib
import sys

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first access.
_API = {
    "watch": "monitor",
    "stop_watch": "monitor",
    "current_platform": "monitor",
    "mount": "storage",
    "Watcher": "watch",
    "Thresholds": "watch",
    "Sampler": "telemetry",
    "Sample": "telemetry",
    "Checkpointer": "checkpoint.schedule",
    "resumable": "checkpoint.session",
    "to_sagemaker": "sagemaker.export",
    "ColabkitError": "errors",
    "ColabkitWarning": "errors",
}

__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        module = importlib.import_module(f".{_API[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'colabkit' has no attribute {name!r}")


MAGIC_NAMES = ("gpuwatch", "mount", "checkpoint", "to_sagemaker")
_MAGICS_SPEC = "colabkit.magics:ColabkitMagics"


def load_ipython_extension(ipython):
    """Register the magics. Where IPython can (9.x), lazily: the magics module and its argument
    parsers are only built when a magic is first used or asked for help (`%gpuwatch?`)."""
    manager = ipython.magics_manager
    if hasattr(manager, "load_lazy") and f"{__name__}.magics" not in sys.modules:
        for name in MAGIC_NAMES:
            manager.register_lazy(name, _MAGICS_SPEC, "line")
        return
    from .magics import ColabkitMagics  # older IPython (Colab has 7.34), or already imported

    ipython.register_magics(ColabkitMagics)


def unload_ipython_extension(ipython):
    """Stop every thread and server colabkit started, and take the magics away."""
    monitor = sys.modules.get(f"{__name__}.monitor")
    if monitor is not None:
        monitor.stop_watch()
    checkpoints = sys.modules.get(f"{__name__}.checkpoint.session")
    if checkpoints is not None:
        checkpoints.deactivate()
    manager = ipython.magics_manager
    for name in MAGIC_NAMES:
        manager.magics["line"].pop(name, None)
        getattr(manager, "lazy_magics", {}).pop(name, None)
    manager.registry.pop("ColabkitMagics", None)
