"""`google.colab` inside a SageMaker job: what can work does, what can't fails at once and says why.

A notebook written for Colab imports google.colab freely. In the job, `import google.colab` gets
this stand-in (put in sys.modules by the runner), so every call either does the job's equivalent
or raises ColabOnly with what to do, at once: nothing waits for a browser that isn't there.

- drive.mount(path): the Drive files the export uploaded (the job's "drive" channel) appear at
  `path`; flush_and_unmount() does nothing.
- files.download(path): the file comes back with the job's results; files.upload() can't work.
- userdata.get(name): the value from the job's environment, where the secrets given with --secret
  arrive (job_secrets.py);
  a name that isn't there raises SecretNotFoundError, as Colab does.
- runtime.unassign(): nothing (the job ends when its cells end); output.*: nothing to show.
- auth.authenticate_user() and anything else: ColabOnly.

The export reports each use before anything is sent (portability.py), in the same words.
"""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import sys
import types
from pathlib import Path


class ColabOnly(RuntimeError):
    """A Colab feature that has no equivalent in a training job."""


UPLOAD = ("files.upload() asks the person at the browser for files, and a job has nobody there. Put the "
          "files on Drive and read them by their /content/drive/... path (the export uploads the files "
          "the cells name), or download them in a cell.")
AUTH = ("auth.authenticate_user() signs in to Google Cloud through the browser, and a job has none. "
        "Give the job's IAM role access to the data instead, or copy the data to S3 or Drive.")


class _Module(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ColabOnly(f"{self.__name__}.{name} is Colab's and has no equivalent in a SageMaker job: "
                        "remove that call from the cells you export, or guard it with "
                        "`if 'google.colab' in sys.modules and not os.environ.get('TRAINING_JOB_NAME')`.")


def _module(name: str, **attributes) -> types.ModuleType:
    module = _Module(name, f"colabkit's stand-in for {name} inside a SageMaker job")
    # A spec as an imported module has: libraries probe for Colab with importlib.util.find_spec.
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package="__path__" in attributes)
    for key, value in attributes.items():
        setattr(module, key, value)
    return module


class SecretNotFoundError(Exception):
    pass


def install(content: Path, results: Path, drive_channel: str | None, to_job_path) -> None:
    """Put the stand-in in sys.modules. `to_job_path` maps a notebook path (/content/...) to the job's."""

    def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
        target = Path(to_job_path(str(mountpoint)))
        if drive_channel and Path(drive_channel).is_dir():
            if not os.path.lexists(target):
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(drive_channel, target)
            print(f"[colabkit] drive.mount: the Drive files the export uploaded are at {mountpoint}", flush=True)
        else:
            target.mkdir(parents=True, exist_ok=True)
            print(f"[colabkit] drive.mount: no Drive files came with this job (the cells named none), so "
                  f"{mountpoint} is an empty folder", flush=True)

    def download(filename):
        source = Path(to_job_path(str(filename)))
        if not source.is_file():
            raise FileNotFoundError(f"files.download: there is no file {filename}")
        target = results / "downloads" / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        print(f"[colabkit] files.download({filename}): it comes back with the job's results", flush=True)

    def upload(*args, **kwargs):
        raise ColabOnly(UPLOAD)

    def get(key):
        value = os.environ.get(key)
        if value is None:
            raise SecretNotFoundError(f"Secret {key} does not exist in this job: export with --secret {key} to "
                                      "give it to the job.")
        return value

    def authenticate_user(*args, **kwargs):
        raise ColabOnly(AUTH)

    def nothing(*args, **kwargs):
        return None

    drive = _module("google.colab.drive", mount=mount, flush_and_unmount=nothing)
    files = _module("google.colab.files", download=download, upload=upload, view=nothing)
    userdata = _module("google.colab.userdata", get=get, SecretNotFoundError=SecretNotFoundError)
    runtime = _module("google.colab.runtime", unassign=nothing)
    output = _module("google.colab.output", eval_js=nothing, clear=nothing, enable_custom_widget_manager=nothing,
                     disable_custom_widget_manager=nothing, serve_kernel_port_as_window=nothing,
                     serve_kernel_port_as_iframe=nothing, register_callback=nothing, no_vertical_scroll=nothing)
    auth = _module("google.colab.auth", authenticate_user=authenticate_user)
    colab = _module("google.colab", drive=drive, files=files, userdata=userdata, runtime=runtime, output=output,
                    auth=auth, __path__=[])
    google = sys.modules.get("google")
    if google is None:
        try:
            import google  # a namespace package in most images (protobuf, google-auth)
        except ImportError:
            google = sys.modules["google"] = _module("google", __path__=[])
    google.colab = colab
    sys.modules["google.colab"] = colab
    for module in (drive, files, userdata, runtime, output, auth):
        sys.modules[module.__name__] = module
