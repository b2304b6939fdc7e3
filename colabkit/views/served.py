"""The live panel for Colab, where ipywidgets updated from a thread are not rendered (colabtools#3373).

TensorBoard's way: a small HTTP server in a kernel thread, bound to 127.0.0.1 with a random token,
serves a page and the panel's HTML; the output cell shows that page in an iframe whose address
comes from `google.colab.kernel.proxyPort(port)`, so the page's polling is same-origin and goes on
while the kernel is busy in a long cell.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlparse

from ..watcher import Watcher
from . import notify, render


class PanelServer:
    """Serves `/` (the page), `/panel` (the HTML fragment) and `/data` (JSON), all behind a token."""

    def __init__(self, watcher: Watcher, host: str = "127.0.0.1"):
        self.watcher = watcher
        self.token = secrets.token_urlsafe(24)
        self._seq = 0
        self._lock = threading.Lock()
        self._page = resources.files(__package__).joinpath("served_panel.html").read_bytes()
        self._server = HTTPServer((host, 0), self._handler_class())
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="colabkit-panel-server", daemon=True)
        self._thread.start()

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                url = urlparse(self.path)
                token = parse_qs(url.query).get("token", [""])[0]
                if not hmac.compare_digest(token, server.token):
                    return self._send(403, "text/plain", b"colabkit: wrong or missing token")
                if url.path == "/":
                    return self._send(200, "text/html; charset=utf-8", server._page)
                if url.path == "/panel":
                    return self._send(200, "text/html; charset=utf-8", server.panel().encode())
                if url.path == "/data":
                    return self._send(200, "application/json", json.dumps(server.data()).encode())
                return self._send(404, "text/plain", b"not found")

            def _send(self, status: int, content_type: str, body: bytes):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # the kernel's stderr is the user's cell output
                pass

        return Handler

    def panel(self) -> str:
        """The panel as of now, with the peaks since the previous poll."""
        with self._lock:
            seq, newer = self.watcher.since(self._seq)
            self._seq = seq
        return render.panel_html(self.watcher, seq, self.watcher.peaks(newer))

    def data(self) -> dict:
        return render.panel_data(self.watcher.latest, self.watcher.platform, self.watcher.alerts,
                                 self.watcher.latest_seq)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class ServedView:
    """Shows the PanelServer's page in the output through Colab's kernel proxy."""

    def __init__(self, watcher: Watcher):
        self.server = PanelServer(watcher)
        self.watcher = watcher
        self._unsubscribe = watcher.subscribe(on_alert=notify.alert)

    def html(self) -> str:
        latest = self.watcher.latest
        gpus = len(latest.gpus) if latest else 0
        height = 200 + 75 * max(gpus - 1, 0) + (20 if latest and latest.swap_total else 0)
        element = f"colabkit-served-{self.server.token[:8]}"
        every = int(self.watcher.interval * 1000)
        return f"""<div id="{element}" class="colabkit-served"></div>
<script>
(async () => {{
  const host = document.getElementById("{element}");
  try {{
    const base = await google.colab.kernel.proxyPort({self.server.port}, {{cache: false}});
    const frame = document.createElement("iframe");
    frame.src = new URL("?token={self.server.token}&every={every}", base).href;
    frame.className = "colabkit-frame";
    frame.style.cssText = "border:0;width:100%;max-width:700px;height:{height}px";
    host.appendChild(frame);
  }} catch (err) {{
    host.textContent = "colabkit: the live panel could not reach the kernel (" + err +
      "). Run %gpuwatch --view text for plain text instead.";
  }}
}})();
</script>"""

    def display(self) -> None:
        from IPython.display import HTML, display

        display(HTML(self.html()))

    def close(self) -> None:
        self._unsubscribe()
        self.server.close()
