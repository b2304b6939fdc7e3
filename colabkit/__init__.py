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
    "ColabkitError": "errors",
    "ColabkitWarning": "errors",
}

__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        module = importlib.import_module(f".{_API[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'colabkit' has no attribute {name!r}")


def load_ipython_extension(ipython):
    from .magics import ColabkitMagics

    ipython.register_magics(ColabkitMagics)


def unload_ipython_extension(ipython):
    """Stop every thread and server colabkit started, and take the magics away."""
    monitor = sys.modules.get(f"{__name__}.monitor")
    if monitor is not None:
        monitor.stop_watch()
    from .magics import MAGIC_NAMES

    for name in MAGIC_NAMES:
        ipython.magics_manager.magics["line"].pop(name, None)
    ipython.magics_manager.registry.pop("ColabkitMagics", None)
