"""The live panel for JupyterLab and Notebook 7: ipywidgets updated from the watcher thread.

The panel is a box of HTML widgets, one per part of render.parts(), and a tick changes only the
parts whose HTML changed (ipywidgets sends nothing for an unchanged value): the page is not
replaced every second.

Always in view: a small script output (JupyterLab runs scripts in the trusted HTML outputs of
the running session) keeps a one-line copy of the panel's reading in JupyterLab's status bar, or
pinned to the window's corner where there is none (Notebook 7), and scrolls to the panel when
clicked. A status-bar item proper would need a JupyterLab extension built with node, which
`pip install colabkit` can't bring; the copy reads the panel's own hidden one-line part, so it
needs no connection of its own and goes when the panel goes.

When the watch stops or is replaced, the panel's output becomes the static summary
(render.summary_html), so a finished or saved notebook shows what happened. Where widgets don't
render (nbconvert, GitHub) the live output shows its text/plain part: the first reading.
"""

from __future__ import annotations

import secrets

from ..telemetry import Sample
from ..watcher import Watcher
from . import notify, render

PIN_SCRIPT = """<script>
(() => {
  const watch = "%(watch)s", staleAfter = %(stale)d;
  document.querySelectorAll(".ck-pinned").forEach(old => old.remove());
  const pin = document.createElement("div");
  pin.className = "ck-pinned";
  pin.setAttribute("role", "button");
  pin.tabIndex = 0;
  pin.title = "colabkit: show the full panel";
  // Its own style: it lives outside the output, where the panel's stylesheet may be gone.
  pin.style.cssText = "font:12px/24px -apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;cursor:pointer;" +
    "white-space:nowrap;overflow:hidden;text-overflow:ellipsis;max-width:60vw;padding:0 8px;" +
    "font-variant-numeric:tabular-nums;color:var(--jp-ui-font-color1,#1f2328)";
  const statusBar = document.querySelector("#jp-main-statusbar .jp-StatusBar-Left");
  if (statusBar) { pin.classList.add("ck-in-statusbar"); statusBar.appendChild(pin); }
  else {
    pin.classList.add("ck-floating");
    pin.style.cssText += ";position:fixed;right:12px;bottom:10px;z-index:1000;border-radius:12px;" +
      "background:var(--jp-layout-color1,#fff);border:1px solid var(--jp-border-color2,#c9ced6);" +
      "box-shadow:0 1px 4px rgba(0,0,0,.25)";
    document.body.appendChild(pin);
  }
  const panel = () => document.querySelector(".ck-watch-" + watch);
  const show = () => { const p = panel(); if (p) p.scrollIntoView({block: "center"}); };
  pin.addEventListener("click", show);
  pin.addEventListener("keydown", e => { if (e.key === "Enter" || e.key === " ") show(); });
  let source = null, lastSeq = null, last = null, unchanged = 0;
  const timer = setInterval(() => {
    const ended = document.querySelector('.colabkit-summary[data-watch="' + watch + '"]');
    source = (panel() && panel().querySelector(".ck-compact")) || source;
    const seq = source ? source.dataset.seq : null;
    unchanged = seq === lastSeq ? unchanged + 1 : 0;
    lastSeq = seq;
    // Gone with its watch: the summary took the panel's place, or the panel stopped getting new
    // readings (its output was cleared, the kernel died), or it never showed.
    if (ended || unchanged > staleAfter) { clearInterval(timer); pin.remove(); return; }
    const text = source ? source.textContent : null;
    if (source && text !== last) {
      last = text;
      pin.textContent = text;
      const alerting = source.dataset.alerts !== "0";
      pin.style.fontWeight = alerting ? "700" : "400";
      pin.dataset.alerts = source.dataset.alerts;
    }
  }, 1000);
})();
</script>"""


class WidgetView:
    def __init__(self, watcher: Watcher):
        import ipywidgets  # only when a panel is shown: it costs ~100 ms to import

        self._ipywidgets = ipywidgets
        self.watcher = watcher
        self.id = secrets.token_hex(4)
        self._parts: dict[str, object] = {}
        self._style = ipywidgets.HTML(value=render.style())
        self.widget = ipywidgets.VBox()
        for css in ("colabkit-widget", "ck-panel", "colabkit-panel", f"ck-watch-{self.id}"):
            self.widget.add_class(css)
        self._handles = []
        self._update()
        # The banner shows every alert that holds; the notifier also says each under the running cell.
        self._unsubscribe = watcher.subscribe(on_sample=self._on_sample, on_alert=notify.alert)

    def _update(self) -> None:
        children, changed = [self._style], []
        for name, fragment in render.parts(self.watcher):
            part = self._parts.get(name)
            if part is None:
                part = self._parts[name] = self._ipywidgets.HTML(value=fragment)
                part.add_class(f"ck-part-{name}")
            elif part.value != fragment:
                changed.append((part, fragment))
            children.append(part)
        # Each change is its own message, applied in order: from the bottom up, so the bars have
        # their new values before the banner above them speaks of them.
        for part, fragment in reversed(changed):
            part.value = fragment
        if tuple(children) != tuple(self.widget.children):
            self.widget.children = tuple(children)

    def _on_sample(self, sample: Sample) -> None:
        self._update()

    def display(self) -> None:
        from IPython.display import display

        latest = self.watcher.latest
        # The bundle ipywidgets 7 and 8 both display, with our reading as the text/plain part.
        self._handles.append(display({
            "application/vnd.jupyter.widget-view+json": {
                "version_major": 2, "version_minor": 0, "model_id": self.widget.model_id},
            "text/plain": render.text_line(latest, self.watcher.platform) if latest else "colabkit panel",
        }, raw=True, display_id=True))
        stale = int(3 * self.watcher.interval) + 3
        self._handles.append(display({"text/html": PIN_SCRIPT % {"watch": self.id, "stale": stale},
                                      "text/plain": ""}, raw=True, display_id=True))

    def close(self) -> None:
        """Stop updating, and leave the summary where the panel was (the watcher has stopped)."""
        self._unsubscribe()
        if self._handles:
            panel, pin = self._handles
            panel.update({"text/html": render.summary_html(self.watcher, self.id),
                          "text/plain": render.summary_text(self.watcher)}, raw=True)
            pin.update({"text/plain": ""}, raw=True)
        for part in (self.widget, self._style, *self._parts.values()):
            part.close()
