"""How a reading looks: one HTML panel (shared by the widget and the Colab panel) and plain text.

Pure functions of the watcher's data, so every view shows the same numbers the same way.
"""

from __future__ import annotations

import html
import time
from dataclasses import asdict

from ..platform import Platform
from ..telemetry import GpuReading, Sample, fraction
from ..units import format_bytes, format_duration
from ..watcher import Alert, Peaks, Watcher

SPARK_POINTS = 120  # the sparkline's width in samples (2 minutes at the default 1 s)

STYLE = """<style>
.ck-panel{font:12px/1.45 -apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;color:#222;
  border:1px solid #ccd;border-radius:6px;padding:8px 10px;max-width:680px;background:#fbfbfd}
.ck-head{display:flex;justify-content:space-between;gap:8px;font-weight:600;margin-bottom:4px}
.ck-head .ck-sub{font-weight:400;color:#555}
.ck-row{display:grid;grid-template-columns:140px 1fr 210px;align-items:center;gap:8px;margin:2px 0}
.ck-bar{height:10px;background:#e3e5ec;border-radius:3px;position:relative;overflow:hidden}
.ck-fill{height:100%;background:#3a8d5d}
.ck-fill.ck-warn{background:#d49a1c}.ck-fill.ck-crit{background:#c9372c}.ck-fill.ck-busy{background:#3a6fd8}
.ck-peak{position:absolute;top:0;bottom:0;width:2px;background:#333}
.ck-val{font-variant-numeric:tabular-nums;color:#333;white-space:nowrap}
.ck-note{color:#666;margin-left:148px}
.ck-alert{background:#fdecea;border:1px solid #c9372c;color:#7a1b14;border-radius:4px;
  padding:4px 6px;margin:4px 0}
.ck-status{color:#333;margin:2px 0 4px}.ck-spark{margin-top:4px}.ck-spark text{font-size:10px;fill:#666}
</style>"""


def _pct(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{fraction:.0%}"


def _bar(fraction: float | None, peak: float | None = None, fullness: bool = True) -> str:
    """A bar; `fullness` bars (memory, disk) turn amber and red as they fill, activity bars don't."""
    if fraction is None:
        return '<div class="ck-bar"></div>'
    width = min(max(fraction, 0.0), 1.0) * 100
    if not fullness:
        level = " ck-busy"  # a GPU at 97% is doing its job
    else:
        level = " ck-crit" if fraction >= 0.9 else " ck-warn" if fraction >= 0.75 else ""
    marker = ""
    if peak is not None and peak > fraction + 0.005:
        marker = f'<div class="ck-peak" style="left:{min(peak, 1.0) * 100:.1f}%"></div>'
    return f'<div class="ck-bar"><div class="ck-fill{level}" style="width:{width:.1f}%"></div>{marker}</div>'


def _row(label: str, css: str, fraction: float | None, value: str, peak: float | None = None,
         fullness: bool = True) -> str:
    return (f'<div class="ck-row {css}"><span>{html.escape(label)}</span>{_bar(fraction, peak, fullness)}'
            f'<span class="ck-val">{html.escape(value)}</span></div>')


def _of(used, total) -> str:
    return f"{format_bytes(used)} / {format_bytes(total)}"


def _gpu_rows(gpu: GpuReading, peaks: Peaks) -> list[str]:
    name = f"GPU {gpu.index}"
    util = None if gpu.utilization is None else gpu.utilization / 100
    peak_util = peaks.gpu_utilization.get(gpu.index)
    rows = [
        _row(f"{name} util", "ck-gpu-util", util, _pct(util),
             None if peak_util is None else peak_util / 100, fullness=False),
        _row(f"{name} mem", "ck-gpu-mem", gpu.memory_fraction, _of(gpu.memory_used, gpu.memory_total),
             fraction(peaks.gpu_memory_used.get(gpu.index), gpu.memory_total)),
    ]
    temp = "n/a" if gpu.temperature is None else f"{gpu.temperature:.0f} °C"
    power = "n/a" if gpu.power_draw is None else f"{gpu.power_draw:.0f} W"
    if gpu.power_limit is not None:
        power += f" / {gpu.power_limit:.0f} W"
    procs = ", ".join(f"{p.name or p.pid} {format_bytes(p.used_memory)}" for p in gpu.processes[:3])
    rows.append(f'<div class="ck-note">{html.escape(gpu.name or "n/a")} · {temp} · {power}'
                f'{" · " + html.escape(procs) if procs else ""}</div>')
    for mig in gpu.mig_instances:
        rows.append(_row(f"MIG {mig.index}", "ck-gpu-mig", mig.memory_fraction,
                         _of(mig.memory_used, mig.memory_total)))
    return rows


def sparkline(history: list[Sample], width: int = 300, height: int = 36) -> str:
    """RAM, CPU and the first GPU's memory over the last samples, as an inline SVG."""
    points = history[-SPARK_POINTS:]
    series = {
        "#3a6fd8": [s.cpu_percent / 100 if s.cpu_percent is not None else None for s in points],
        "#8e44ad": [s.ram_fraction for s in points],
        "#c9372c": [s.gpus[0].memory_fraction if s.gpus else None for s in points],
    }
    lines = []
    step = width / max(SPARK_POINTS - 1, 1)
    for color, values in series.items():
        coords = [f"{i * step:.1f},{height - 2 - v * (height - 4):.1f}"
                  for i, v in enumerate(values) if v is not None]
        if len(coords) > 1:
            lines.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.3" points="{" ".join(coords)}"/>')
    legend = ('<text x="4" y="10">CPU</text><text x="30" y="10" style="fill:#8e44ad">RAM</text>'
              '<text x="58" y="10" style="fill:#c9372c">GPU mem</text>')
    return (f'<svg class="ck-spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
            f'<rect width="{width}" height="{height}" fill="#f1f2f6"/>{"".join(lines)}{legend}</svg>')


def panel_html(watcher: Watcher, seq: int, peaks: Peaks) -> str:
    """The whole panel as one HTML fragment (style included, so it renders on its own)."""
    sample, platform, alerts = watcher.latest, watcher.platform, watcher.alerts
    if sample is None:
        return STYLE + '<div class="ck-panel colabkit-panel">colabkit: waiting for the first reading…</div>'
    head_left = "colabkit"
    if platform is not None:
        head_left += f" · {platform.label}"
    left = platform.time_left(sample.time) if platform else None
    session = ""
    if platform is not None:
        session = f"session {format_duration(platform.session_age(sample.time))}"
        if left is not None:
            session += f" · <b class='ck-left'>{format_duration(max(left, 0))} left</b>"
    idle = watcher.idle_for(sample.time)
    if idle is not None:
        session += f" · idle {format_duration(idle)} of {format_duration(platform.idle_timeout)}"
    stamp = time.strftime("%H:%M:%S", time.localtime(sample.time))
    parts = [STYLE, f'<div class="ck-panel colabkit-panel" data-seq="{seq}">',
             f'<div class="ck-head"><span>{html.escape(head_left)}</span>'
             f'<span class="ck-sub">{session} · <span class="ck-stamp">{stamp}</span></span></div>']
    if alerts:
        parts.append(f'<div class="ck-alert">⚠ {html.escape(alerts[-1].message)}</div>')
    parts += [f'<div class="ck-status">{html.escape(line)}</div>' for line in watcher.status_lines()]
    if sample.gpus:
        for gpu in sample.gpus:
            parts += _gpu_rows(gpu, peaks)
    else:
        parts.append(f'<div class="ck-row ck-gpu-none"><span>GPU</span><span>{html.escape(sample.gpu_status)}</span></div>')
    cpu = None if sample.cpu_percent is None else sample.cpu_percent / 100
    peak_cpu = None if peaks.cpu_percent is None else peaks.cpu_percent / 100
    parts.append(_row("CPU", "ck-cpu", cpu, f"{_pct(cpu)} · peak {_pct(peak_cpu)}", peak_cpu, fullness=False))
    ram_label = "RAM" if sample.ram_limited_by == "host" else f"RAM ({sample.ram_limited_by})"
    parts.append(_row(ram_label, "ck-ram", sample.ram_fraction, _of(sample.ram_used, sample.ram_total),
                      fraction(peaks.ram_used, sample.ram_total)))
    if sample.swap_total:
        parts.append(_row("swap", "ck-swap", fraction(sample.swap_used, sample.swap_total),
                          _of(sample.swap_used, sample.swap_total)))
    for disk in sample.disks:
        parts.append(_row(f"disk ({disk.label})", "ck-disk", disk.fraction, _of(disk.used, disk.total)))
    parts.append(sparkline(watcher.history()))
    parts.append("</div>")
    return "".join(parts)


def text_line(sample: Sample, platform: Platform | None = None, peaks: Peaks | None = None) -> str:
    """One reading in one or a few lines, for terminals, logs and `%gpuwatch --once`."""
    stamp = time.strftime("%H:%M:%S", time.localtime(sample.time))
    fields = [f"[colabkit {stamp}]"]
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
    fields.append(f"CPU {cpu}")
    fields.append(f"RAM {_of(sample.ram_used, sample.ram_total)} ({_pct(sample.ram_fraction)})")
    fields += [f"disk {d.label} {_of(d.used, d.total)} ({_pct(d.fraction)})" for d in sample.disks]
    if platform is not None and platform.time_left(sample.time) is not None:
        fields.append(f"session left {format_duration(max(platform.time_left(sample.time), 0))}")
    return " | ".join(fields)


def panel_data(sample: Sample | None, platform: Platform | None, alerts: list[Alert], seq: int) -> dict:
    """The latest reading as JSON-ready data, for the served panel's /data endpoint."""
    return {
        "seq": seq,
        "sample": asdict(sample) if sample is not None else None,
        "platform": platform.name if platform else None,
        "time_left": platform.time_left(sample.time) if platform and sample else None,
        "alerts": [asdict(a) for a in alerts],
    }
