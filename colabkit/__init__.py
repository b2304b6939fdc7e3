"""colabkit: see, survive and escape the limits of free notebooks (Colab, Kaggle, Studio Lab, Jupyter).

`%load_ext colabkit` registers the magics and imports nothing heavy; the Python API below is
imported on first use, so `import colabkit` stays cheap in every notebook.
"""

import importlib

from .version import VERSION as __version__

# Public name -> the module that defines it, imported on first access.
_API = {
    "watch": "monitor",
    "stop_watch": "monitor",
    "current_platform": "monitor",
    "mount": "runtime",
    "Watcher": "watcher",
    "Thresholds": "watcher",
    "Sampler": "telemetry",
    "Sample": "telemetry",
    "Checkpointer": "checkpoint.checkpointer",
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
    """Create this kernel's Runtime and register the magics. Where IPython can (9.x), lazily: the
    magics module and its argument parsers are only built when a magic is first used or asked for
    help (`%gpuwatch?`)."""
    import sys

    from . import runtime

    runtime.current(ipython)
    manager = ipython.magics_manager
    if hasattr(manager, "load_lazy") and f"{__name__}.magics" not in sys.modules:
        for name in MAGIC_NAMES:
            manager.register_lazy(name, _MAGICS_SPEC, "line")
        return
    from .magics import ColabkitMagics  # older IPython (Colab has 7.34), or already imported

    ipython.register_magics(ColabkitMagics)


def unload_ipython_extension(ipython):
    """Close this kernel's Runtime (every thread, server and process colabkit started) and take
    the magics away."""
    from . import runtime

    runtime.close()
    manager = ipython.magics_manager
    for name in MAGIC_NAMES:
        manager.magics["line"].pop(name, None)
        getattr(manager, "lazy_magics", {}).pop(name, None)
    manager.registry.pop("ColabkitMagics", None)
