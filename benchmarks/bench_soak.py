"""Soak: a long training loop with a checkpoint every --save-every seconds, the Colab panel's server
polled by --clients clients, and the writer process SIGKILLed every --kill-every seconds.

Checks at the end: every checkpoint the Checkpointer reported OK loads and is bit-exact with the
state handed to it (a SHA-256 of the arrays, taken when the save was handed over); every lost save
was said in the output; nothing failed. Prints saves reported OK, lost saves (and said), kills
(and how many hit a save in progress), panel requests served with p50/p99 latency against a quiet
baseline measured first in the same run (same clients, no training, no kills), and max RSS growth.

Defaults are the issue's: one hour, a kill every 5 minutes. Not in CI:
    .test-env/venv/bin/python benchmarks/bench_soak.py --duration 300 --kill-every 30
"""

import argparse
import contextlib
import hashlib
import http.client
import io
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from colabkit.checkpoint.checkpointer import Checkpointer
from colabkit.errors import ColabkitError
from colabkit.storage import Places
from colabkit.views.served import PanelServer
from colabkit.watcher import Watcher

LOST_SAID = "was lost: the writer process died"


class Tee(io.TextIOBase):
    """The process's stderr, also kept: what colabkit said to the person is counted."""

    def __init__(self, stream):
        self.stream, self.kept = stream, []

    def write(self, text):
        self.kept.append(text)
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()


def digest(state: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(np.ascontiguousarray(state[name]).tobytes())
    return h.hexdigest()


class Clients:
    """`n` threads polling the panel's /parts (as the Colab page does), each every `every` seconds."""

    def __init__(self, server: PanelServer, n: int, every: float):
        self.server, self.every = server, every
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._poll, daemon=True) for _ in range(n)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def _poll(self):
        path = f"/parts?token={self.server.token}"
        while not self._stop.wait(self.every):
            started = time.perf_counter()
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
                connection.request("GET", path)
                response = connection.getresponse()
                body = response.read()
                connection.close()
                ok = response.status == 200 and b'"parts"' in body
                error = None if ok else f"HTTP {response.status}"
            except OSError as exc:
                error = f"{type(exc).__name__}: {exc}"
            with self._lock:
                if error is None:
                    self.latencies.append(time.perf_counter() - started)
                else:
                    self.errors.append(error)


def writer_process() -> psutil.Process | None:
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "colabkit.checkpoint.writer" in " ".join(child.cmdline()):
                return child
    return None


class Killer:
    """SIGKILLs the writer every `every` seconds: while a commit is in progress when one starts
    within one save period (a `.tmp-step` folder in the store), else at once."""

    def __init__(self, store: Path, every: float, save_every: float):
        self.store, self.every, self.save_every = store, every, save_every
        self.kills = 0
        self.mid_save = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)

    def _committing(self) -> bool:
        with contextlib.suppress(OSError):
            return any(p.name.startswith(".tmp-step") for p in self.store.iterdir())
        return False

    def _run(self):
        while not self._stop.wait(self.every):
            deadline = time.monotonic() + 2 * self.save_every
            while not self._committing() and time.monotonic() < deadline and not self._stop.is_set():
                time.sleep(0.001)
            writer = writer_process()
            if writer is None:
                continue
            in_commit = self._committing()
            with contextlib.suppress(psutil.Error):
                writer.send_signal(signal.SIGKILL)
                self.kills += 1
                self.mid_save += in_commit


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds of training (default 3600)")
    parser.add_argument("--kill-every", type=float, default=300.0, help="seconds between writer kills (default 300)")
    parser.add_argument("--save-every", type=float, default=10.0, help="checkpoint period, seconds (default 10)")
    parser.add_argument("--clients", type=int, default=10, help="panel clients (default 10)")
    parser.add_argument("--poll-every", type=float, default=0.2, help="seconds between one client's requests "
                        "(default 0.2: five times the Colab page's pace at --interval 1s)")
    parser.add_argument("--mib", type=float, default=8.0, help="training state size, MiB (default 8)")
    parser.add_argument("--baseline", type=float, default=20.0, help="seconds of quiet panel polling first")
    parser.add_argument("--folder", default=None, help="where the store goes (default: a temporary folder)")
    args = parser.parse_args()

    folder = Path(args.folder or tempfile.mkdtemp(prefix="colabkit-soak-"))
    store = folder / "checkpoints"
    tee = Tee(sys.stderr)
    process = psutil.Process()

    watcher = Watcher(interval=1.0).start()
    server = PanelServer(watcher)
    with Clients(server, args.clients, args.poll_every) as quiet:
        time.sleep(args.baseline)
    baseline = list(quiet.latencies)

    rng = np.random.default_rng(0)
    w = rng.standard_normal(int(args.mib * (1 << 20) / 4)).astype(np.float32)
    m = np.zeros(len(w) // 4)
    keep = int(args.duration / args.save_every) + 20  # every reported-OK checkpoint stays to be checked
    handed: dict[int, str] = {}  # step -> digest of the state handed to the writer
    reported_ok: dict[int, str] = {}  # step -> checkpoint id
    lost, failed = [], []
    step = 0
    with contextlib.redirect_stderr(tee):
        ck = Checkpointer(every=f"{args.save_every}s", keep=keep, places=Places(store), w=w, m=m)
        last_result = ck.last
        rss_start = rss_max = process.memory_info().rss
        with Clients(server, args.clients, args.poll_every) as soak, Killer(store, args.kill_every, args.save_every) as killer:
            end = time.monotonic() + args.duration
            next_rss = 0.0
            while time.monotonic() < end:
                step += 1
                at = rng.integers(0, len(w) - 65536)
                w[at:at + 65536] += 0.01 * rng.standard_normal(65536, dtype=np.float32)  # a "training step"
                m[at // 4:at // 4 + 16384] = 0.9 * m[at // 4:at // 4 + 16384] + 0.1
                time.sleep(0.005)
                ck.step = step
                was_saved = ck.schedule.saved_at(step)
                try:
                    ck.at_consistent_point()
                except ColabkitError as exc:
                    failed.append(str(exc))
                if not was_saved and ck.schedule.saved_at(step):
                    handed[step] = digest({"w": w, "m": m})
                if ck.last is not last_result:
                    last_result = ck.last
                    if last_result.get("lost"):
                        lost.append(last_result.get("step"))
                    elif last_result.get("ok"):
                        reported_ok[last_result["step"]] = last_result["id"]
                if time.monotonic() >= next_rss:
                    rss_max, next_rss = max(rss_max, process.memory_info().rss), time.monotonic() + 1.0
            try:
                ck.close()  # waits for the save in flight
            except ColabkitError as exc:
                failed.append(str(exc))
            if ck.last is not last_result and ck.last.get("ok"):
                reported_ok[ck.last["step"]] = ck.last["id"]
            elif ck.last is not last_result and ck.last.get("lost"):
                lost.append(ck.last.get("step"))
    server.close()
    watcher.stop()

    # Every reported-OK checkpoint: loads, and is bit-exact with what was handed over.
    bad = []
    with contextlib.redirect_stderr(tee):
        reader = Checkpointer(places=Places(store), keep=keep, w=np.zeros_like(w), m=np.zeros_like(m))
        for saved_step, checkpoint_id in sorted(reported_ok.items()):
            try:
                restored = reader.restore(checkpoint_id)
                got = digest({"w": reader.objects["w"], "m": reader.objects["m"]})
                if restored is None or got != handed.get(saved_step):
                    bad.append(f"{checkpoint_id}: not what was saved")
            except Exception as exc:  # noqa: BLE001 (any failure to load is a finding)
                bad.append(f"{checkpoint_id}: {type(exc).__name__}: {exc}")
        reader.close()
    said_lost = "".join(tee.kept).count(LOST_SAID)

    p50, p99 = percentile(soak.latencies, 0.50), percentile(soak.latencies, 0.99)
    b50, b99 = percentile(baseline, 0.50), percentile(baseline, 0.99)
    print(f"soak: {args.duration:.0f} s, a save every {args.save_every:.0f} s, writer killed every "
          f"{args.kill_every:.0f} s, {args.clients} panel clients, {args.mib:.0f} MiB of state, {step} steps")
    print(f"saves reported OK:        {len(reported_ok)} (loadable and bit-exact: {len(reported_ok) - len(bad)})")
    print(f"lost saves:               {len(lost)} (said in the output: {said_lost}) steps {lost}")
    print(f"failed saves (errors):    {len(failed)}")
    print(f"writer kills:             {killer.kills} ({killer.mid_save} during a commit)")
    print(f"panel requests served:    {len(soak.latencies)} (errors {len(soak.errors)}); p50 {p50 * 1e3:.1f} ms, "
          f"p99 {p99 * 1e3:.1f} ms")
    print(f"  quiet baseline:         {len(baseline)} requests (errors {len(quiet.errors)}); p50 {b50 * 1e3:.1f} ms, "
          f"p99 {b99 * 1e3:.1f} ms; soak / quiet: p50 {p50 / b50:.2f}x, p99 {p99 / b99:.2f}x")
    print(f"max RSS growth:           {(rss_max - rss_start) / (1 << 20):.1f} MiB (from {rss_start / (1 << 20):.0f} MiB)")
    for line in bad + failed + soak.errors[:5]:
        print("  " + line)
    ok = not bad and not failed and not soak.errors and said_lost >= len(lost) and killer.kills > 0
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
