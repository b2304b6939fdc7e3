"""The live panel for Colab, where ipywidgets updated from a thread are not rendered (colabtools#3373).

TensorBoard's way: a small HTTP server in a kernel thread, bound to 127.0.0.1 with a random token,
serves a page and the panel's parts; the output cell shows that page in an iframe whose address
comes from `google.colab.kernel.proxyPort(port)`, so the page's polling is same-origin and goes on
while the kernel is busy in a long cell. The page replaces only the parts that changed, tells
the output its height (so an alert never pushes rows out of view), and follows the browser's
colour scheme. When the watch stops or is replaced, the output becomes the static summary.

Always in view: Colab runs each output in its own sandboxed frame, so nothing of an output can
reach Colab's toolbar or stay on screen when its cell scrolls away; Colab's own RAM and disk
meter stays at the top right, and colabkit's alerts also appear under the running cell.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlparse

from ..watcher import Watcher
from . import notify, render


log = logging.getLogger(__name__)

CONNECTION_TIMEOUT = 10.0  # seconds a connection may sit idle or dribble a request in

# Host headers answered off Colab. On Colab the browser reaches this server only through Colab's
# authenticated kernel proxy (google.colab.kernel.proxyPort / output.serve_kernel_port_as_iframe:
# https://<port>-<id>.<region>.prod.colab.dev, formerly *-colab.googleusercontent.com), and no page in
# the person's browser can reach the VM's loopback, so DNS rebinding can't either: there every Host
# is answered (which one the proxy sends could not be observed outside Colab, and a guess that is
# wrong would break every Colab panel), behind the token. Elsewhere (`--view colab` in a local
# Jupyter) the browser's machine is the server's, so only loopback names and Colab's proxy domains
# are answered: a page of another site whose name an attacker made resolve to 127.0.0.1 is refused
# before the token is even looked at.
_HOSTS = re.compile(r"(127\.0\.0\.1|localhost|\[::1\])(:[0-9]{1,5})?"
                    r"|[a-z0-9.-]+\.(googleusercontent\.com|colab\.dev)(:[0-9]{1,5})?", re.ASCII | re.IGNORECASE)


class _Server(ThreadingHTTPServer):
    """Each connection in a daemon thread, with a deep listen backlog; `close_connections` ends the
    open ones at once, so stopping never waits on a client (an idle keep-alive, a slow header)."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, *args):
        self._open: set[socket.socket] = set()
        self._open_guard = threading.Lock()
        super().__init__(*args)

    def process_request(self, request, client_address):
        with self._open_guard:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._open_guard:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        """A client that went away mid-answer (or was cut off by the stop) is no news: socketserver
        would print its traceback on the kernel's stderr, which is the user's cell output."""
        log.debug("panel request from %s failed", client_address, exc_info=True)

    def close_connections(self) -> None:
        with self._open_guard:
            open_now = list(self._open)
        for connection in open_now:
            try:
                connection.shutdown(socket.SHUT_RDWR)  # its thread's read returns at once
            except OSError:
                pass


class PanelServer:
    """Serves `/` (the page), `/parts` (the panel's parts, JSON), `/panel` (the panel as one HTML
    fragment) and `/data` (the reading, JSON), all behind a token."""

    def __init__(self, watcher: Watcher, host: str = "127.0.0.1", any_host: bool = False):
        """`any_host`: answer whatever Host the request names (on Colab, behind its proxy: see _HOSTS)."""
        self.watcher = watcher
        self.any_host = any_host
        self.token = secrets.token_urlsafe(24)
        page = resources.files(__package__).joinpath("served_panel.html").read_text()
        self._page = page.replace("<!--STYLE-->", render.style(served=True)).encode()
        self._server = _Server((host, 0), self._handler_class())
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="colabkit-panel-server", daemon=True)
        self._thread.start()

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = CONNECTION_TIMEOUT

            def do_GET(self):  # noqa: N802 (http.server's name)
                if not server.any_host and not _HOSTS.fullmatch(self.headers.get("Host", "")):
                    return self._send(403, "text/plain", b"colabkit: this server answers only through Colab's proxy")
                url = urlparse(self.path)
                token = parse_qs(url.query).get("token", [""])[0]
                # As bytes: compare_digest refuses a str with characters beyond ASCII.
                if not hmac.compare_digest(token.encode("utf-8", "surrogateescape"), server.token.encode()):
                    return self._send(403, "text/plain", b"colabkit: wrong or missing token")
                if url.path == "/":
                    return self._send(200, "text/html; charset=utf-8", server._page)
                if url.path == "/parts":
                    return self._send(200, "application/json", json.dumps(server.parts()).encode())
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

    def parts(self) -> dict:
        now = self.watcher.now()
        return {"seq": now.seq, "parts": render.parts(self.watcher, now)}

    def panel(self) -> str:
        return render.panel_html(self.watcher, served=True)

    def data(self) -> dict:
        return render.panel_data(self.watcher.latest, self.watcher.platform, self.watcher.alerts,
                                 self.watcher.latest_seq)

    def close(self) -> None:
        """Stop at once, whatever clients are doing."""
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        self._thread.join(5)


class ServedView:
    """Shows the PanelServer's page in the output through Colab's kernel proxy."""

    def __init__(self, watcher: Watcher):
        from .. import platform as platforms

        self.server = PanelServer(watcher, any_host=platforms.detect_name() == platforms.COLAB)
        self.watcher = watcher
        self._handle = None
        self._unsubscribe = watcher.subscribe(on_alert=notify.alert)

    def html(self) -> str:
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
    frame.title = "colabkit live panel: GPU, CPU, RAM and disk";
    frame.style.cssText = "border:0;width:100%;max-width:700px;height:260px";
    // The page says its height whenever it changes: the frame fits it, alerts included.
    window.addEventListener("message", event => {{
      if (event.source === frame.contentWindow && event.data && event.data.colabkitHeight) {{
        frame.style.height = Math.ceil(event.data.colabkitHeight) + "px";
      }}
    }});
    host.appendChild(frame);
  }} catch (err) {{
    host.textContent = "colabkit: the live panel could not reach the kernel (" + err +
      "). Run %gpuwatch --view text for plain text instead.";
  }}
}})();
</script>"""

    def display(self) -> None:
        from IPython.display import display

        self._handle = display({"text/html": self.html(), "text/plain": "colabkit live panel (served)"},
                               raw=True, display_id=True)

    def close(self) -> None:
        """Stop serving, and leave the summary where the panel was (the watcher has stopped)."""
        self._unsubscribe()
        self.server.close()
        if self._handle is not None:
            self._handle.update({"text/html": render.summary_html(self.watcher),
                                 "text/plain": render.summary_text(self.watcher)}, raw=True)
