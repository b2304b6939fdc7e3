"""The live panel for JupyterLab and Notebook 7: an ipywidgets HTML widget updated from the watcher thread.

Where widgets don't render (nbconvert, GitHub, a frontend without the widget manager) the same
output shows its text/plain part instead: the reading at the time it was displayed.
"""

from __future__ import annotations

from ..telemetry import Sample
from ..watcher import Watcher
from . import notify, render


class WidgetView:
    def __init__(self, watcher: Watcher):
        import ipywidgets  # only when a panel is shown: it costs ~100 ms to import

        self.watcher = watcher
        self._seq = 0
        self.widget = ipywidgets.HTML(value=self._render())
        self.widget.add_class("colabkit-widget")
        # The render puts the latest alert in the panel's banner; the notifier shows it in the cell.
        self._unsubscribe = watcher.subscribe(on_sample=self._on_sample, on_alert=notify.alert)

    def _render(self) -> str:
        seq, newer = self.watcher.since(self._seq)
        self._seq = seq
        return render.panel_html(self.watcher, seq, self.watcher.peaks(newer))

    def _on_sample(self, sample: Sample) -> None:
        self.widget.value = self._render()

    def display(self) -> None:
        from IPython.display import display

        # The bundle ipywidgets 7 and 8 both display, with our reading as the text/plain part.
        latest = self.watcher.latest
        display({
            "application/vnd.jupyter.widget-view+json": {
                "version_major": 2, "version_minor": 0, "model_id": self.widget.model_id},
            "text/plain": render.text_line(latest, self.watcher.platform) if latest else "colabkit panel",
        }, raw=True)

    def close(self) -> None:
        self._unsubscribe()
        self.widget.close()
