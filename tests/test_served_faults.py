"""The Colab panel's server under clients that misbehave, over real sockets on 127.0.0.1: an idle
connection and a slow header don't stall other requests or its stop; odd tokens and Host headers
get a 403, never a traceback."""

import http.client
import socket
import threading
import time

import pytest

from colabkit.views.served import PanelServer
from colabkit.watcher import Watcher
from test_watcher import Script, sample


@pytest.fixture
def server():
    watcher = Watcher(sampler=Script([sample(cpu=12)]))
    watcher.tick()
    served = PanelServer(watcher)
    yield served
    served.close()


def status(server, path, host=None):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.putrequest("GET", path, skip_host=host is not None)
        if host is not None:
            connection.putheader("Host", host)
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def test_an_idle_and_a_slow_header_connection_neither_stall_requests_nor_the_stop(server, capfd):
    idle = socket.create_connection(("127.0.0.1", server.port))  # connects, says nothing
    slow = socket.create_connection(("127.0.0.1", server.port))
    slow.sendall(b"GET /parts?token=" + server.token.encode() + b" HTTP/1.1\r\nHost: loc")  # the rest never comes
    time.sleep(0.2)
    assert status(server, f"/parts?token={server.token}") == 200  # answered beside them
    stopped = threading.Event()
    threading.Thread(target=lambda: (server.close(), stopped.set()), daemon=True).start()
    assert stopped.wait(2), "stop hung on an idle connection"  # a generous limit: it takes milliseconds
    for connection in (idle, slow):
        connection.settimeout(2)
        assert connection.recv(100) == b""  # closed by the server, not left hanging
        connection.close()
    time.sleep(0.5)  # the cut-off handlers finish: nothing of theirs reaches the cell's output
    assert "Traceback" not in capfd.readouterr().err


def test_a_non_ascii_token_gets_403_not_a_traceback(server, capfd):
    assert status(server, "/parts?token=%C3%A9t%C3%A9") == 403
    assert status(server, f"/parts?token={server.token}") == 200
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("host, expected", [
    ("127.0.0.1:{port}", 200), ("localhost:{port}", 200), ("localhost", 200),
    ("8000-m-s-abc123-a.us-west4-0.prod.colab.dev", 200),  # Colab's proxy, if it passes its own name on
    ("abc123-496ff2e9c6d22116-8000-colab.googleusercontent.com", 200),
    ("evil.example:{port}", 403), ("127.0.0.1.evil.example", 403), ("", 403),
])
def test_the_host_header_is_checked(server, host, expected):
    assert status(server, f"/parts?token={server.token}", host=host.format(port=server.port)) == expected


def test_on_colab_any_host_is_answered_behind_the_token(monkeypatch):
    """Colab's proxy is the only way in there, and the Host it sends is unknown: a wrong guess must
    not break every Colab panel. The token still guards."""
    from colabkit.views.served import ServedView

    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab_20261101-060000_RC00")
    watcher = Watcher(sampler=Script([sample(cpu=12)]))
    watcher.tick()
    view = ServedView(watcher)
    try:
        assert status(view.server, f"/parts?token={view.server.token}", host="172.28.0.12:9000") == 200
        assert status(view.server, "/parts?token=wrong", host="172.28.0.12:9000") == 403
    finally:
        view.server.close()
    monkeypatch.delenv("COLAB_RELEASE_TAG")
    view = ServedView(watcher)  # not on Colab: the Host is checked
    try:
        assert status(view.server, f"/parts?token={view.server.token}", host="172.28.0.12:9000") == 403
    finally:
        view.server.close()
