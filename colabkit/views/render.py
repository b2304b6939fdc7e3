"""How a reading looks: the panel as named parts (shared by the widget and the Colab panel), the
static summary a stopped watch leaves, and plain text.

Pure functions of the watcher's data, so every view shows the same numbers the same way. The
panel is a list of (name, HTML) parts so that a view updates only the parts that changed: the
page is not replaced every second, a screen reader keeps its place, and the alert announcement
(a role=alert element) appears only when an alert fires or clears.

Bars: a fullness bar (RAM, GPU memory, disk) is "ok", "high" or "alert" by the user's own alert
levels (Thresholds.state, the comparison that raises the alert), said in words beside it and by
a striped fill, not by colour alone; every bar is a role=progressbar with its value.
"""

from __future__ import annotations

import html
import time
from dataclasses import asdict

from ..platform import Platform
from ..telemetry import NO_GPU, GpuReading, Sample, fraction
from ..units import format_bytes, format_duration
from ..watcher import Alert, CellUsage, Condition, Now, Peaks, Thresholds, Watcher, gpu_key
from . import chart

# Fill colours keep 3:1 against their track, and "ok" against "alert" (WCAG 1.4.11), in both themes.
PALETTE = {
    "light": {"track": "#f3f4f7", "ok": "#339e66", "high": "#9a5b00", "alert": "#7d1913", "busy": "#2f5fb3"},
    "dark": {"track": "#2b2f36", "ok": "#2a8a5a", "high": "#d9922e", "alert": "#ffd0ca", "busy": "#7aa2f7"},
}
STATE_WORDS = {"ok": "", "high": "high", "alert": "ALERT"}


def _vars(theme: str) -> str:
    return ";".join(f"--ck-{name}:{color}" for name, color in PALETTE[theme].items())


# JupyterLab's theme variables where they exist (light and dark themes); the served page (Colab)
# has none, so it follows prefers-color-scheme instead (style(served=True)).
DARK = (f"{_vars('dark')};--ck-bg:var(--jp-layout-color1,#1b1d21);--ck-fg:var(--jp-ui-font-color1,#e6e6e6);"
        "--ck-fg2:var(--jp-ui-font-color2,#b4b8bf);--ck-border:var(--jp-border-color1,#555b63);"
        "--ck-banner:#3d2624;--ck-banner-fg:#ffd0ca")
STYLE = f"""<style>
.ck-panel{{{_vars('light')};--ck-bg:var(--jp-layout-color1,#fff);--ck-fg:var(--jp-ui-font-color1,#1f2328);
  --ck-fg2:var(--jp-ui-font-color2,#57606a);--ck-border:var(--jp-border-color2,#c9ced6);
  --ck-banner:#fbeae8;--ck-banner-fg:#6b1510;
  font:12px/1.45 -apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;color:var(--ck-fg);
  background:var(--ck-bg);border:1px solid var(--ck-border);border-radius:6px;padding:8px 10px;
  max-width:680px;box-sizing:border-box;container-type:inline-size}}
body[data-jp-theme-light="false"] .ck-panel{{{DARK}}}
.ck-panel > .jupyter-widgets{{margin:0}}
.ck-panel .widget-html,.ck-panel .widget-html-content{{margin:0;padding:0;line-height:inherit;height:auto;
  white-space:normal;font:inherit;color:inherit;overflow:visible}}
.ck-head{{display:flex;flex-wrap:wrap;justify-content:space-between;column-gap:12px;font-weight:600;margin-bottom:4px}}
.ck-head .ck-sub{{font-weight:400;color:var(--ck-fg2)}}
.ck-row{{display:flex;flex-wrap:wrap;align-items:center;column-gap:8px;row-gap:1px;margin:3px 0}}
.ck-label{{flex:0 0 9.5em}}
.ck-bar{{flex:1 1 140px;min-width:140px;max-width:360px;height:12px;background:var(--ck-track);
  border:1px solid var(--ck-border);border-radius:3px;position:relative;overflow:hidden;box-sizing:border-box}}
.ck-fill{{height:100%;background:var(--ck-ok)}}
.ck-fill.ck-high{{background:var(--ck-high)}}.ck-fill.ck-busy{{background:var(--ck-busy)}}
.ck-fill.ck-alert{{background:repeating-linear-gradient(135deg,var(--ck-alert) 0 6px,transparent 6px 8px),var(--ck-alert)}}
.ck-peak{{position:absolute;top:-1px;bottom:-1px;width:0;border-left:2px solid var(--ck-fg)}}
.ck-level{{position:absolute;top:0;bottom:0;width:0;border-left:1px dashed var(--ck-fg2)}}
.ck-val{{flex:0 0 17em;font-variant-numeric:tabular-nums;white-space:nowrap}}
.ck-state{{font-weight:700;margin-left:4px}}
.ck-note{{color:var(--ck-fg2);margin:0 0 2px 9.5em;padding-left:8px}}
.ck-banner{{margin:4px 0}}
.ck-alert{{background:var(--ck-banner);color:var(--ck-banner-fg);border-left:4px solid var(--ck-alert);
  border-radius:3px;padding:3px 6px;margin:3px 0}}
.ck-alert.ck-cleared{{opacity:.6;background:transparent;border-left-color:var(--ck-border);color:var(--ck-fg2)}}
.ck-when{{font-variant-numeric:tabular-nums;font-weight:600}}
.ck-sr{{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}}
.ck-status{{margin:2px 0 4px}}
.ck-chart{{display:block;margin-top:6px;color:var(--ck-fg)}}
.ck-chart-narrow{{display:none}}
.ck-cells{{margin-top:6px;border-collapse:collapse;font:inherit;font-variant-numeric:tabular-nums}}
.ck-cells th,.ck-cells td{{text-align:left;padding:1px 8px 1px 0;font-weight:400}}
.ck-cells caption{{text-align:left;font-weight:600}}
.ck-cells code{{font-size:11px}}
.ck-compact{{display:none}}
@container (max-width:520px){{.ck-chart-wide{{display:none}}.ck-chart-narrow{{display:block}}
  .ck-note{{margin-left:0;padding-left:0}}}}
</style>"""
# The served page has no JupyterLab theme to read: it follows the browser's colour scheme.
SERVED_STYLE = (f"<style>@media (prefers-color-scheme: dark){{.ck-panel{{{DARK}}}"
                "body{background:#1b1d21}}</style>")


def style(served: bool = False) -> str:
    return STYLE + (SERVED_STYLE if served else "")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def _of(used, total) -> str:
    return f"{format_bytes(used)} / {format_bytes(total)}"


def _row(css: str, label: str, fraction_now: float | None, value: str, *, state: str | None = None,
         peak: float | None = None, level: float | None = None) -> str:
    """One bar. `state` None: an activity bar (utilisation, CPU), blue whatever its value, since a
    GPU at 97% is doing its job; else "ok", "high" or "alert", said in words too."""
    words = STATE_WORDS.get(state or "ok", "")
    text = value + (f", {words.lower()}" if words else "")
    if peak is not None:
        text += f", session peak {_pct(peak)}"
    if fraction_now is None:
        bar = (f'<div class="ck-bar" role="progressbar" aria-label="{html.escape(label)}" '
               f'aria-valuetext="not available"></div>')
    else:
        width = min(max(fraction_now, 0.0), 1.0) * 100
        fill = "ck-busy" if state is None else f"ck-{state}"
        marks = ""
        if peak is not None and peak > fraction_now + 0.005:
            marks += f'<div class="ck-peak" style="left:{min(peak, 1.0) * 100:.1f}%" title="session peak {_pct(peak)}"></div>'
        if level is not None:
            marks += f'<div class="ck-level" style="left:{level * 100:.1f}%" title="alert level {_pct(level)}"></div>'
        bar = (f'<div class="ck-bar" role="progressbar" aria-label="{html.escape(label)}" aria-valuemin="0" '
               f'aria-valuemax="100" aria-valuenow="{width:.0f}" aria-valuetext="{html.escape(text)}">'
               f'<div class="ck-fill {fill}" style="width:{width:.1f}%"></div>{marks}</div>')
    shown = html.escape(value)
    if peak is not None and peak > (fraction_now or 0) + 0.005:
        shown += f" · peak {_pct(peak)}"
    state_html = f'<b class="ck-state">{words}</b>' if words else ""
    return (f'<div class="ck-row {css}" data-state="{state or "busy"}"><span class="ck-label">{html.escape(label)}</span>'
            f'{bar}<span class="ck-val">{shown}{state_html}</span></div>')


def _memory_value(used, total) -> str:
    """"93% · 11.2 / 12.0 GiB": the share first, then the amounts in the total's unit."""
    share = _pct(fraction(used, total))
    if used is None or total is None:
        return f"{share} · {_of(used, total)}"
    number, unit = format_bytes(total).split()
    scale = total / float(number) if float(number) else 1
    return f"{share} · {used / scale:.1f} / {number} {unit}"


def _gpu_parts(gpu: GpuReading, peaks: Peaks, t: Thresholds) -> list[tuple[str, str]]:
    name, key = f"GPU {gpu.index}", gpu_key(gpu.index)
    util = None if gpu.utilization is None else gpu.utilization / 100
    peak_util = peaks.get(f"{key}_utilization")
    parts = [
        (f"{key}-util", _row("ck-gpu-util", f"{name} util", util, _pct(util),
                             peak=None if peak_util is None else peak_util / 100)),
        (f"{key}-mem", _row("ck-gpu-mem", f"{name} memory", gpu.memory_fraction,
                            _memory_value(gpu.memory_used, gpu.memory_total),
                            state=t.state("gpu_memory", gpu.memory_fraction),
                            peak=fraction(peaks.get(f"{key}_memory_used"), gpu.memory_total), level=t.gpu_memory)),
    ]
    temp = "n/a" if gpu.temperature is None else f"{gpu.temperature:.0f} °C"
    power = "n/a" if gpu.power_draw is None else f"{gpu.power_draw:.0f} W"
    if gpu.power_limit is not None:
        power += f" / {gpu.power_limit:.0f} W"
    procs = ", ".join(f"{p.name or p.pid} {format_bytes(p.used_memory)}" for p in gpu.processes[:3])
    parts.append((f"{key}-note", f'<div class="ck-note">{html.escape(gpu.name or "n/a")} · {temp} · {power}'
                                 f'{" · " + html.escape(procs) if procs else ""}</div>'))
    for mig in gpu.mig_instances:
        mkey = gpu_key(mig.index)
        parts.append((f"{mkey}-mem", _row("ck-gpu-mig", f"MIG {mig.index}", mig.memory_fraction,
                                          _memory_value(mig.memory_used, mig.memory_total),
                                          state=t.state("gpu_memory", mig.memory_fraction),
                                          peak=fraction(peaks.get(f"{mkey}_memory_used"), mig.memory_total),
                                          level=t.gpu_memory)))
    return parts


def _head(watcher: Watcher, sample: Sample, seq: int) -> str:
    platform = watcher.platform
    left = "colabkit" + (f" · {platform.label}" if platform is not None else "")
    sub = []
    if platform is not None:
        sub.append(f"{platform.clock} {format_duration(platform.session_age(sample.time))}")
        remaining = platform.time_left(sample.time)
        if remaining is not None:
            sub.append(f"<b class='ck-left'>{format_duration(max(remaining, 0))} left</b>")
    idle = watcher.idle_for(sample.time)
    if idle is not None:
        sub.append(f"idle {format_duration(idle)} of {format_duration(platform.idle_timeout)}")
    sub.append(f'<span class="ck-stamp">{_clock(sample.time)}</span>')
    return (f'<div class="ck-head" data-seq="{seq}"><span>{html.escape(left)}</span>'
            f'<span class="ck-sub">{" · ".join(sub)}</span></div>')


def _banner(conditions: list[Condition]) -> str:
    """Each alert that holds, with the time it fired; cleared ones dimmed, saying when they cleared."""
    items = []
    for c in conditions:
        if c.active:
            items.append(f'<div class="ck-alert" data-kind="{c.kind}"><span class="ck-when">⚠ since {_clock(c.since)}</span> '
                         f'{html.escape(c.message)}</div>')
        else:
            items.append(f'<div class="ck-alert ck-cleared" data-kind="{c.kind}"><span class="ck-when">✓ cleared '
                         f'{_clock(c.cleared)}</span> (fired {_clock(c.since)}): {html.escape(_cleared_text(c))}</div>')
    return f'<div class="ck-banner" aria-label="colabkit alerts">{"".join(items)}</div>'


def _what(c: Condition) -> str:
    return {"ram": "RAM", "gpu_memory": f"GPU {c.key} memory", "disk": f"disk at {c.key}",
            "session": "session time", "idle": "idle time"}[c.kind]


def _cleared_text(c: Condition) -> str:
    if c.kind in ("session", "idle"):
        return f"{_what(c)}: time was given back"
    return f"{_what(c)} reached {_pct(c.worst)}, now {_pct(c.value)}"


def _announcement(conditions: list[Condition]) -> str:
    """What a screen reader says, once per change: a role=alert element that only changes when an
    alert fires or clears (the visible banner's countdowns change every second)."""
    active = [c for c in conditions if c.active]
    if not active:
        return ""
    return (f'<div role="alert" class="ck-sr">colabkit alert since {_clock(max(c.since for c in active))}: '
            f'{html.escape(", ".join(_what(c) for c in active))}</div>')


def parts(watcher: Watcher, now: Now | None = None) -> list[tuple[str, str]]:
    """The panel as (name, HTML) pairs, in order: a view updates the parts whose HTML changed."""
    now = now or watcher.now()
    sample, t = now.sample, watcher.thresholds
    if sample is None:
        return [("head", '<div class="ck-head" data-seq="0">colabkit: waiting for the first reading…</div>')]
    out = [("head", _head(watcher, sample, now.seq)),
           ("announce", _announcement(now.banner)),
           ("banner", _banner(now.banner)),
           ("status", "".join(f'<div class="ck-status">{html.escape(line)}</div>' for line in watcher.status_lines()))]
    if sample.gpus:
        for gpu in sample.gpus:
            out += _gpu_parts(gpu, now.peaks, t)
    else:
        out.append(("gpu-none", f'<div class="ck-row ck-gpu-none"><span class="ck-label">GPU</span>'
                                f'<span>{html.escape(sample.gpu_status)}</span></div>'))
    cpu = None if sample.cpu_percent is None else sample.cpu_percent / 100
    peak_cpu = now.peaks.cpu_percent
    out.append(("cpu", _row("ck-cpu", "CPU (machine)", cpu, _pct(cpu),
                            peak=None if peak_cpu is None else peak_cpu / 100)))
    ram_label = "RAM" if sample.ram_limited_by == "host" else f"RAM ({sample.ram_limited_by})"
    out.append(("ram", _row("ck-ram", ram_label, sample.ram_fraction,
                            _memory_value(sample.ram_used, sample.ram_total), state=t.state("ram", sample.ram_fraction),
                            peak=fraction(now.peaks.ram_used, sample.ram_total), level=t.ram)))
    if sample.kernel_cpu_percent is not None or sample.kernel_ram_used is not None:
        kernel_cpu = "n/a" if sample.kernel_cpu_percent is None else f"{sample.kernel_cpu_percent:.0f}%"
        out.append(("kernel", f'<div class="ck-note">this kernel: CPU {kernel_cpu} of the machine · '
                              f'RAM {format_bytes(sample.kernel_ram_used)}</div>'))
    if sample.swap_total:
        swap = fraction(sample.swap_used, sample.swap_total)
        out.append(("swap", _row("ck-swap", "swap", swap, _memory_value(sample.swap_used, sample.swap_total))))
    for disk in sample.disks:
        key = "disk_" + disk.label.replace(" ", "_")
        out.append((key, _row("ck-disk", f"disk ({disk.label})", disk.fraction, _memory_value(disk.used, disk.total),
                              state=t.state("disk", disk.fraction),
                              peak=fraction(now.peaks.get(f"{key}_used"), disk.total), level=t.disk)))
    window, title = watcher.history.window_points(), f"Last {format_duration(watcher.history.window)}"
    gap = max(5 * watcher.interval, 5.0)
    # Two sizes, the one that fits shown (a container query): a scaled-down chart's text is unreadable.
    out.append(("chart", f'<div class="ck-chart-wide">{chart.svg(window, t, width=640, title=title, gap_after=gap)}</div>'
                         f'<div class="ck-chart-narrow">{chart.svg(window, t, width=340, title=title, gap_after=gap)}</div>'))
    if watcher.activity is not None:
        out.append(("cells", cells_table(watcher.activity.top())))
    out.append(("compact", f'<div class="ck-compact" data-seq="{now.seq}" data-alerts="{sum(c.active for c in now.banner)}">'
                           f'{html.escape(compact_line(sample, watcher.platform, now.banner, width=90))}</div>'))
    return out


def panel_html(watcher: Watcher, served: bool = False) -> str:
    """The whole panel as one HTML fragment (style included, so it renders on its own)."""
    inner = "".join(f'<div data-part="{name}">{fragment}</div>' for name, fragment in parts(watcher))
    return style(served) + f'<div class="ck-panel colabkit-panel">{inner}</div>'


def cells_table(cells: list[CellUsage], caption: str = "Cells that used the most memory", inline: str = "") -> str:
    """The cells that grew memory most. `inline`: a style for every cell, where no stylesheet comes along."""
    if not cells:
        return ""
    td = f' style="{inline}"' if inline else ""
    tr = ' style="background:none"' if inline else ""
    rows = []
    for c in cells:
        number = f"[{c.number}]" if c.number is not None else "[ ]"
        ran = format_duration(c.ended - c.started) if c.ended else "running"
        rows.append(f"<tr{tr}><td{td}>{number} <code>{html.escape(c.source)}</code></td><td{td}>{ran}</td>"
                    f"<td{td}>{_growth(c.ram_peak, c.ram_growth)}</td><td{td}>{_growth(c.gpu_peak, c.gpu_growth)}</td></tr>")
    head = "".join(f"<th{td}>{h}</th>" for h in ("cell", "ran", "RAM peak (grew)", "GPU memory peak (grew)"))
    table = ' style="border-collapse:collapse;margin:4px 0;font:inherit"' if inline else ""
    caption_style = ' style="text-align:left;font-weight:600"' if inline else ""
    return (f'<table class="ck-cells"{table}><caption{caption_style}>{caption}</caption><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _growth(peak, growth) -> str:
    if peak is None:
        return "n/a"
    return format_bytes(peak) + ("" if growth is None else f" ({'+' if growth >= 0 else '−'}{format_bytes(abs(growth))})")


# -- one line ---------------------------------------------------------------------------------
def _short(used, total) -> str:
    """Used of total in few characters, in the total's unit: 5.1/12.0G."""
    if used is None or total is None:
        return "n/a"
    for unit, size in (("T", 2**40), ("G", 2**30), ("M", 2**20), ("K", 2**10), ("B", 1)):
        if total >= size:
            return f"{used / size:.1f}/{total / size:.1f}{unit}"
    return f"{used}/{total}B"


def compact_line(sample: Sample, platform: Platform | None = None, conditions: list[Condition] = (),
                 width: int | None = None, stamp: bool = False) -> str:
    """The reading in one line: what stays in view (the pinned line, a terminal). Fields drop from
    the least needed (GPU utilisation, disk, CPU) until it fits `width` characters."""
    fields = []  # (priority: lower stays longer, text)
    active = [c for c in conditions if c.active]
    if active:
        fields.append((0, f"⚠ {len(active)} alert{'s' if len(active) > 1 else ''}"))
    for n, gpu in enumerate(sample.gpus):
        fields.append((1 if n == 0 else 1.5, f"GPU{gpu.index} {_short(gpu.memory_used, gpu.memory_total)} "
                                             f"{_pct(gpu.memory_fraction)}"))
        if gpu.utilization is not None:
            fields.append((5, f"util {gpu.utilization:.0f}%"))
    if not sample.gpus and sample.gpu_status != NO_GPU:  # a GPU whose driver is not answering
        fields.append((1, "GPU driver not answering"))
    fields.append((1, f"RAM {_short(sample.ram_used, sample.ram_total)} {_pct(sample.ram_fraction)}"))
    cpu = "n/a" if sample.cpu_percent is None else f"{sample.cpu_percent:.0f}%"
    fields.append((3, f"CPU {cpu}"))
    disks = [d.fraction for d in sample.disks if d.fraction is not None]
    if disks:
        fields.append((4, f"disk {max(disks):.0%}"))
    if platform is not None and platform.time_left(sample.time) is not None:
        fields.append((2, f"{format_duration(max(platform.time_left(sample.time), 0))} left"))
    prefix = f"[colabkit {_clock(sample.time)}] " if stamp else "colabkit · "
    keep = list(range(len(fields)))

    def line():
        return prefix + " · ".join(fields[i][1] for i in keep)

    while width is not None and len(line()) > width and len(keep) > 1:
        keep.remove(max(keep, key=lambda i: (fields[i][0], i)))
    return line()


def text_line(sample: Sample, platform: Platform | None = None, peaks: Peaks | None = None) -> str:
    """One full reading in one or a few lines, for logs and `%gpuwatch --once`."""
    fields = [f"[colabkit {_clock(sample.time)}]"]
    if sample.gpus:
        for gpu in sample.gpus:
            util = "n/a" if gpu.utilization is None else f"{gpu.utilization:.0f}%"
            temp = "n/a" if gpu.temperature is None else f"{gpu.temperature:.0f}C"
            power = "n/a" if gpu.power_draw is None else f"{gpu.power_draw:.0f}W"
            fields.append(f"GPU{gpu.index} {util} mem {_of(gpu.memory_used, gpu.memory_total)} "
                          f"({_pct(gpu.memory_fraction)}) {temp} {power}")
            fields += [f"MIG{m.index} mem {_of(m.memory_used, m.memory_total)}" for m in gpu.mig_instances]
    else:
        fields.append(f"GPU: {sample.gpu_status}")
    cpu = "n/a" if sample.cpu_percent is None else f"{sample.cpu_percent:.0f}%"
    if peaks is not None and peaks.cpu_percent is not None:
        cpu += f" (peak {peaks.cpu_percent:.0f}%)"
    fields.append(f"CPU (machine) {cpu}")
    fields.append(f"RAM {_of(sample.ram_used, sample.ram_total)} ({_pct(sample.ram_fraction)})")
    fields += [f"disk {d.label} {_of(d.used, d.total)} ({_pct(d.fraction)})" for d in sample.disks]
    if platform is not None and platform.time_left(sample.time) is not None:
        fields.append(f"session left {format_duration(max(platform.time_left(sample.time), 0))}")
    return " | ".join(fields)


# -- what a stopped watch leaves ------------------------------------------------------------------
def _peak_lines(watcher: Watcher, peaks: Peaks, sample: Sample | None) -> list[tuple[str, str]]:
    """(what, peak in words) for every quantity the session saw."""
    lines = []
    if sample is not None:
        for gpu in sample.gpus:
            key = gpu_key(gpu.index)
            used = peaks.get(f"{key}_memory_used")
            if used is not None:
                lines.append((f"GPU {gpu.index} memory", _peak_at(peaks, f"{key}_memory_used",
                                                                  _memory_value(used, gpu.memory_total))))
    if peaks.ram_used is not None and sample is not None:
        lines.append(("RAM", _peak_at(peaks, "ram_used", _memory_value(peaks.ram_used, sample.ram_total))))
    if peaks.get("kernel_ram_used") is not None:
        lines.append(("this kernel's RAM", _peak_at(peaks, "kernel_ram_used", format_bytes(peaks.get("kernel_ram_used")))))
    if peaks.cpu_percent is not None:
        lines.append(("CPU (machine)", _peak_at(peaks, "cpu_percent", f"{peaks.cpu_percent:.0f}%")))
    if sample is not None:
        for disk in sample.disks:
            key = "disk_" + disk.label.replace(" ", "_") + "_used"
            if peaks.get(key) is not None:
                lines.append((f"disk ({disk.label})", _peak_at(peaks, key, _memory_value(peaks.get(key), disk.total))))
    return lines


def _peak_at(peaks: Peaks, name: str, text: str) -> str:
    return f"{text} at {_clock(peaks.times[name])}" if name in peaks.times else text


def _peaks_caption(watcher: Watcher) -> str:
    """Peaks are the session's: from before this watch when the history file kept them."""
    session = watcher.history.session_points()
    if session and watcher.started_at and session[0].time < watcher.started_at - 2 * watcher.interval:
        return f"Session peaks (since {_clock(session[0].time)}: kept across watches and kernel restarts)"
    return "Session peaks"


def _duration(watcher: Watcher) -> tuple[float | None, float | None, str]:
    start, end = watcher.started_at, watcher.stopped_at or time.time()
    span = f"{_clock(start)}–{_clock(end)} ({format_duration(end - start)})" if start else "no samples"
    return start, end, span


def summary_html(watcher: Watcher, watch_id: str = "") -> str:
    """What a stopped (or replaced) watch leaves in its output: duration, peaks, a small chart of
    the session, its alerts and the cells that used most. Inline styles only: a saved notebook
    shows it wherever HTML renders, and its text/plain twin (summary_text) everywhere else."""
    sample, peaks = watcher.latest, watcher.session_peaks
    _, _, span = _duration(watcher)
    where = f" · {watcher.platform.label}" if watcher.platform is not None else ""
    box = ("font:12px/1.45 -apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;border:1px solid #8b939c;"
           "border-radius:6px;padding:8px 10px;max-width:680px;box-sizing:border-box")
    cell = "text-align:left;padding:0 12px 0 0;background:none"  # JupyterLab right-aligns and stripes tables
    rows = "".join(f'<tr style="background:none"><td style="{cell}">{html.escape(what)}</td><td style="{cell}">'
                   f'{html.escape(text)}</td></tr>'
                   for what, text in _peak_lines(watcher, peaks, sample))
    alerts = "".join(
        f'<li>{_clock(c.since)} {html.escape(c.message)}'
        f'{f" (cleared {_clock(c.cleared)})" if c.cleared is not None else " (still active at the end)"}</li>'
        for c in watcher.conditions())
    cells = cells_table(watcher.activity.top(5), inline=cell) if watcher.activity is not None else ""
    session = watcher.history.session_points()
    return (f'<div class="colabkit-summary" data-watch="{watch_id}" style="{box}">'
            f'<div style="font-weight:600">colabkit watch ended{html.escape(where)} · {html.escape(span)}</div>'
            f'<table style="border-collapse:collapse;margin:4px 0;font:inherit"><caption style="text-align:left;'
            f'font-weight:600">{html.escape(_peaks_caption(watcher))}</caption>{rows}</table>'
            + (f'<div style="font-weight:600">Alerts</div><ul style="margin:2px 0 4px 18px;padding:0">{alerts}</ul>'
               if alerts else '<div>No alerts.</div>')
            + cells
            + chart.svg(session, watcher.thresholds, width=480, plot_height=26, title="This session",
                        gap_after=max(5 * watcher.history.span, 5.0))
            + '<div style="opacity:.75">%gpuwatch plot shows the whole history; %gpuwatch save PATH keeps it '
              '(PNG and CSV).</div></div>')


def summary_text(watcher: Watcher) -> str:
    _, _, span = _duration(watcher)
    lines = [f"colabkit watch ended · {span}"]
    lines += [f"  peak {what}: {text}" for what, text in _peak_lines(watcher, watcher.session_peaks, watcher.latest)]
    for c in watcher.conditions():
        end = f"cleared {_clock(c.cleared)}" if c.cleared is not None else "still active at the end"
        lines.append(f"  alert {_clock(c.since)} ({end}): {c.message}")
    if watcher.activity is not None:
        for c in watcher.activity.top(3):
            gpu = f", GPU memory {_growth(c.gpu_peak, c.gpu_growth)}" if c.gpu_peak is not None else ""
            lines.append(f"  cell [{c.number}] {c.source}: RAM {_growth(c.ram_peak, c.ram_growth)}{gpu}")
    return "\n".join(lines)


def panel_data(sample: Sample | None, platform: Platform | None, alerts: list[Alert], seq: int) -> dict:
    """The latest reading as JSON-ready data, for the served panel's /data endpoint."""
    return {
        "seq": seq,
        "sample": asdict(sample) if sample is not None else None,
        "platform": platform.name if platform else None,
        "time_left": platform.time_left(sample.time) if platform and sample else None,
        "alerts": [asdict(a) for a in alerts],
    }
