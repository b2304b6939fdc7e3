"""Durations and sizes as people write and read them ("1h30m", "3.2 GiB")."""

import re

from .errors import ColabkitError

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|m|s)")
_SECONDS_PER_UNIT = {"h": 3600, "m": 60, "s": 1}


def parse_duration(text: str | float | int) -> float:
    """Seconds in "90", "30s", "15m", "1h30m" or "2.5h"; a bare number means seconds."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        spelled = str(text).strip().lower().replace(" ", "")
        try:
            seconds = float(spelled)
        except ValueError:
            parts = _DURATION_PART.findall(spelled)
            if not parts or "".join(n + u for n, u in parts) != spelled:
                raise ColabkitError(
                    f"{text!r} is not a duration colabkit understands. Write it as a number of "
                    "seconds or with units h, m and s, for example 30s, 15m, 1h30m or 2.5h."
                ) from None
            seconds = sum(float(n) * _SECONDS_PER_UNIT[u] for n, u in parts)
    if seconds < 0:
        raise ColabkitError(f"A duration cannot be negative (got {text!r}).")
    return seconds


def format_duration(seconds: float | None) -> str:
    """ "3h 05m", "12m 30s", "45s"; n/a for an unknown duration."""
    if seconds is None:
        return "n/a"
    sign = "-" if seconds < 0 else ""
    s = int(abs(seconds))
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h {minutes:02d}m"
    if minutes:
        return f"{sign}{minutes}m {secs:02d}s"
    return f"{sign}{secs}s"


def format_bytes(n: float | None) -> str:
    """Binary units, as nvidia-smi and free -h show them."""
    if n is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_rate(pace: float | None) -> str | None:
    """Seconds per iteration as people read them, as tqdm shows them: "1.14 s/it", "12.5 it/s",
    "2m 05s/it"; None when unknown."""
    if pace is None or pace <= 0:
        return None
    if pace < 1:
        return f"{1 / pace:.1f} it/s"
    return f"{pace:.2f} s/it" if pace < 60 else f"{format_duration(pace)}/it"


def parse_percent(text: str | float) -> float:
    """A threshold as a fraction: "90", "90%" and 0.9 all mean 0.9; "1" means 1%, not 100%;
    with a % sign it is always a percentage ("0.5%" is half a percent)."""
    spelled = str(text).strip()
    try:
        value = float(spelled.removesuffix("%"))
    except ValueError:
        raise ColabkitError(
            f"{text!r} is not a percentage. Write a number between 1 and 100, for example 90."
        ) from None
    fraction = value / 100 if spelled.endswith("%") or value >= 1 else value
    if not 0 < fraction <= 1:
        raise ColabkitError(f"A threshold must lie between 1 and 100 percent (got {text!r}).")
    return fraction


def format_clock(seconds: float, approximate: bool = False) -> str:
    """A stopwatch's reading, as tqdm shows elapsed and remaining time: "0:42", "1:02:03"; an
    estimate with "~", and "< 1 s" rather than a zero that looks like nothing is left."""
    if approximate and seconds < 1:
        return "< 1 s"
    s = int(round(seconds))
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
    return ("~" if approximate else "") + text
