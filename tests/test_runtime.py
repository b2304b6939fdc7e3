"""One owner per kernel: what %load_ext makes and %unload_ext closes, and who hears alerts."""

import logging
import threading

from colabkit import runtime
from colabkit.events import Events
from conftest import run


def test_a_listener_that_raises_does_not_silence_the_others(caplog):
    events, heard = Events(), []

    def broken(alert):
        raise RuntimeError("a broken listener")

    events.on_alert(broken)
    remove = events.on_alert(heard.append)
    events.add_status(lambda: 1 / 0)
    events.add_status(lambda: "checkpoint step-3")
    with caplog.at_level(logging.ERROR, logger="colabkit"):
        events.alert("RAM 95% full")
        assert events.status_lines() == ["checkpoint step-3"]
    assert heard == ["RAM 95% full"]
    assert "a broken listener" in caplog.text and "ZeroDivisionError" in caplog.text
    remove()
    events.alert("again")
    assert heard == ["RAM 95% full"]


def test_unload_closes_the_watch_and_the_checkpoints_of_the_kernel(shell, tmp_path):
    run(shell, "import numpy as np\nw = np.zeros(3)")
    run(shell, "%gpuwatch --view text --interval 0.2s --every 1h")
    run(shell, f"%checkpoint every 1h w --to {tmp_path / 'ck'}")
    kernel = runtime.current()
    writer = kernel.checkpoints.checkpointer.sink._writer.process
    assert kernel.watch is not None and writer.poll() is None
    shell.run_line_magic("unload_ext", "colabkit")
    assert kernel.watch is None and kernel.checkpoints is None
    assert writer.wait(10) == 0  # the writer process ended
    assert not [t for t in threading.enumerate() if t.name.startswith("colabkit")]
    shell.run_line_magic("load_ext", "colabkit")  # the fixture unloads it again
    assert runtime.current() is not kernel


def test_the_session_deadline_alert_reaches_the_checkpoints_through_the_events(shell, tmp_path):
    run(shell, "import numpy as np\nw = np.zeros(3)")
    run(shell, f"%checkpoint every 1h w --to {tmp_path / 'ck'}")
    checkpointer = runtime.current().checkpoints.checkpointer
    assert not checkpointer.due()

    class Alert:
        kind, message = "session", "10m left"

    runtime.current().events.alert(Alert())
    assert checkpointer.due()
