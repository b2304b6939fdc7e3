"""Which notebook platform this is, the limits it imposes, and how long this session has lived.

Detection reads files and environment variables only (no network, no heavy imports), so it is
cheap enough to run on every `%load_ext`. Paths are taken relative to `root` and variables from
`environ` so that tests can describe any platform without being on it.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import settings
from .errors import ColabkitError
from .units import format_duration, parse_duration

COLAB = "colab"
KAGGLE = "kaggle"
STUDIOLAB = "studiolab"
SAGEMAKER_JOB = "sagemaker-job"
JUPYTER = "jupyter"
TERMINAL = "terminal"
PYTHON = "python"

LABELS = {
    COLAB: "Google Colab",
    KAGGLE: "Kaggle Notebooks",
    STUDIOLAB: "SageMaker Studio Lab",
    SAGEMAKER_JOB: "SageMaker training job",
    JUPYTER: "Jupyter",
    TERMINAL: "terminal IPython",
    PYTHON: "plain Python",
}

COLAB_TIERS = ("free", "pro", "pro+")

HOUR = 3600.0
# Colab FAQ: "notebooks can run for at most 12 hours" on the free tier.
COLAB_FREE_CAP = 12 * HOUR
# Colab Pro/Pro+ runtimes last "up to 24 hours" (colabtools#4648; Colab's signup page).
COLAB_PRO_CAP = 24 * HOUR
# Kaggle docs (Notebooks > Technical specifications): 12 h per CPU/GPU session, 9 h for TPU.
KAGGLE_CAP = 12 * HOUR
KAGGLE_TPU_CAP = 9 * HOUR
# Studio Lab FAQ: GPU and CPU sessions end after 4 h (aws/studio-lab-examples#221).
STUDIOLAB_CAP = 4 * HOUR


@dataclass(frozen=True)
class Platform:
    """Where the notebook runs and what that place allows. Durations are seconds; None = no limit."""

    name: str
    session_cap: float | None
    session_cap_source: str
    idle_timeout: float | None
    session_start: float
    tier: str | None = None
    accelerator: str | None = None

    @property
    def label(self) -> str:
        return LABELS[self.name] + (f" ({self.tier})" if self.tier else "")

    @property
    def clock(self) -> str:
        """Whose age `session_age` is: what the panel calls it."""
        return "VM up" if self.name in MACHINE_SESSIONS else "kernel up"

    def session_age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.session_start

    def time_left(self, now: float | None = None) -> float | None:
        if self.session_cap is None:
            return None
        return self.session_cap - self.session_age(now)

    def describe(self, now: float | None = None) -> str:
        """The lines `%gpuwatch --info` prints."""
        cap = format_duration(self.session_cap) if self.session_cap else "none known"
        idle = format_duration(self.idle_timeout) if self.idle_timeout else "not set (no official figure)"
        lines = [
            f"platform:      {self.label}",
            f"session cap:   {cap}  ({self.session_cap_source})",
            f"idle limit:    {idle}",
            f"session age:   {format_duration(self.session_age(now))}",
            f"time left:     {format_duration(self.time_left(now))}",
        ]
        if self.accelerator:
            lines.insert(1, f"accelerator:   {self.accelerator}")
        return "\n".join(lines)


def detect_name(environ=None, root: str = "/", shell=None) -> str:
    """The platform's name from its own markers; the shell decides between Jupyter and a terminal."""
    env = os.environ if environ is None else environ
    base = Path(root)
    sagemaker_base = env.get("SAGEMAKER_BASE_DIR", str(base / "opt/ml"))
    if Path(sagemaker_base, "input/config").is_dir() or "TRAINING_JOB_NAME" in env:
        return SAGEMAKER_JOB
    if "COLAB_RELEASE_TAG" in env or (base / "var/colab/hostname").exists():
        return COLAB
    if "KAGGLE_KERNEL_RUN_TYPE" in env or (base / "kaggle/working").is_dir():
        return KAGGLE
    # Studio Lab runs every notebook as this user (Studio Lab docs, "Manage your environment").
    if env.get("USER") == "studio-lab-user" or (base / "home/studio-lab-user").is_dir():
        return STUDIOLAB
    return kind_of_shell(shell if shell is not None else current_shell())


def current_shell():
    """The running IPython shell, or None; never imports IPython."""
    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython else None


def kind_of_shell(shell) -> str:
    """JUPYTER for a kernel (a frontend renders rich output), TERMINAL for terminal IPython, else PYTHON."""
    kind = type(shell).__name__
    if kind == "ZMQInteractiveShell":
        return JUPYTER
    if kind == "TerminalInteractiveShell":
        return TERMINAL
    return PYTHON


def in_kernel() -> bool:
    """Whether this runs in a Jupyter kernel, where a display can be updated in place."""
    return kind_of_shell(current_shell()) == JUPYTER


def _tpu(env) -> str | None:
    # Kaggle and Colab TPU VMs set these; a GPU is reported by telemetry, not here.
    for name in ("TPU_ACCELERATOR_TYPE", "TPU_NAME", "COLAB_TPU_ADDR"):
        if env.get(name):
            return f"TPU ({env[name]})"
    return None


def session_cap(name: str, tier: str | None, accelerator: str | None) -> tuple[float | None, str]:
    """The most a session may live on this platform, and where that figure comes from."""
    if name == COLAB:
        if tier in ("pro", "pro+"):
            return COLAB_PRO_CAP, f"Colab {tier}: up to 24 h (colabtools#4648)"
        return COLAB_FREE_CAP, "Colab free: VMs live at most 12 h (Colab FAQ)"
    if name == KAGGLE:
        if accelerator and accelerator.startswith("TPU"):
            return KAGGLE_TPU_CAP, "Kaggle: 9 h per TPU session (Kaggle docs)"
        return KAGGLE_CAP, "Kaggle: 12 h per CPU/GPU session (Kaggle docs)"
    if name == STUDIOLAB:
        return STUDIOLAB_CAP, "Studio Lab: 4 h per session (Studio Lab FAQ)"
    if name == SAGEMAKER_JOB:
        return None, "a training job ends at its own MaxRuntimeInSeconds"
    return None, "no platform limit"


# Where the platform caps the machine's life, the session is the machine's (a kernel restart after an
# out-of-memory crash does not give time back); elsewhere it is this kernel's.
MACHINE_SESSIONS = (COLAB, KAGGLE, STUDIOLAB)


def machine_start() -> float:
    """When this machine (or container: PID 1) started; a kernel restart keeps it."""
    import psutil  # only when a session clock is asked for

    try:
        return psutil.Process(1).create_time()
    except (psutil.Error, OSError):
        return psutil.boot_time()


def session_start(name: str) -> float:
    """When this session began: the machine's start on MACHINE_SESSIONS platforms, the process's
    own start elsewhere (a Jupyter kernel's age)."""
    import psutil

    if name in MACHINE_SESSIONS:
        return machine_start()
    try:
        return psutil.Process().create_time()
    except (psutil.Error, OSError):
        return psutil.boot_time()


def tier_from(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    tier = value.strip().lower().replace("plus", "+").replace(" ", "")
    if tier not in COLAB_TIERS:
        raise ColabkitError(
            f"{value!r} is not a Colab tier. Use one of: free, pro, pro+ (the tier cannot be read "
            "from inside the runtime, so tell colabkit which one you pay for)."
        )
    return tier


def detect(
    environ=None,
    root: str = "/",
    shell=None,
    tier: str | None = None,
    idle_timeout: str | float | None = None,
    started: float | None = None,
) -> Platform:
    """The platform this code runs on, with its limits and session clock.

    `tier` (or COLABKIT_TIER) picks Colab's free/pro/pro+ cap; `idle_timeout` (or
    COLABKIT_IDLE_TIMEOUT, e.g. "90m") sets an idle limit, which no platform documents.
    """
    env = os.environ if environ is None else environ
    name = detect_name(env, root, shell)
    chosen_tier = tier_from(tier if tier is not None else settings.get("COLABKIT_TIER", env))
    if name == COLAB and chosen_tier is None:
        chosen_tier = "free"
    if name != COLAB:
        chosen_tier = None
    accelerator = _tpu(env)
    cap, source = session_cap(name, chosen_tier, accelerator)
    idle = idle_timeout if idle_timeout is not None else settings.get("COLABKIT_IDLE_TIMEOUT", env)
    idle_seconds = parse_duration(idle) if idle not in (None, "") else 0.0
    return Platform(
        name=name,
        session_cap=cap,
        session_cap_source=source,
        idle_timeout=idle_seconds or None,  # 0 switches the idle limit off
        session_start=session_start(name) if started is None else started,
        tier=chosen_tier,
        accelerator=accelerator,
    )

