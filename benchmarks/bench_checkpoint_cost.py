"""What a checkpoint costs as what changed, each figure a ratio to a baseline from the same run.

Medians of --runs rounds, with the spread (min-max) beside them; the machine is shared, so the load
average is printed at the start, with each case and at the end. --gib takes several sizes: `full`,
`loop`, `busy` and `first` run once per size and --tensors count, `budget` once per size, and a
sweep ends with one Markdown table of the ratios (rows: size x tensors), to paste into README.md.

1. hashes: MB/s of XXH3-128 (what colabkit uses), sha256, blake2b and BLAKE3 (when installed)
   over the same 256 MiB, against a memcpy of it.
2. lora: LoRA on a frozen base (--base-mb of frozen weights, 1.5 MB of adapters trained with
   Adam): bytes written per checkpoint and the pause, against a copy of the adapters and their
   Adam state alone (PEFT saves the adapters; that copy is its floor) and torch.save of them.
3. full: --gib of float32 in --tensors tensors, all changing: the stall against a copy of the same
   tensors into a preallocated buffer; the commit against a raw fsync'd write; the restore
   (verified as it reads) against a raw cold read of the same size made just before it (the
   file written once, before the first); beside them, against the same baselines: torch.save
   and safetensors.save_file of the same state (+ fsync of the file and its folder); the raw
   write, the commit, torch.save and safetensors run by run, each in
   turn, the first rotating (the disk here has a fast and a slow mode: all of one before all of
   the next compared them in different modes);
   PyTorch Distributed Checkpoint in this one process (no process group; DCP's no_dist mode):
   dcp.save (the whole call, which fsyncs its files, + fsync of the folder) against the raw
   write, dcp.async_save's stall (until the call returns: it copies the state first) against the
   copy and its commit (from the call to the returned future's result, + fsync of the folder)
   against the raw write, and dcp.load into a fresh model's state dict (page cache dropped)
   against the cold read.
4. loop: a GIL-bound training-like loop (pure Python arithmetic) in the main thread: its speed
   while colabkit's writer commits a save of --gib in --tensors tensors (ck.save(), then the loop
   runs until ck.wait() returns in a waiting thread), while torch.save and while
   safetensors.save_file (+ fsync) run in a thread of this process, while dcp.async_save's
   thread writes (its copy made before the loop starts, as colabkit's stall is; until the
   future's result + fsync), and while `dd conv=fsync` writes as many bytes; each as iterations
   per second relative to the loop alone (the mean of its rates alone just before and just
   after, each over about a commit's time). Goal: >= 0.93 beside the commit, and no worse than
   beside a saver thread.
5. busy: the stall beside a busy process (a CPU-bound loop on the other core, as a data loader
   is on a 2-core Colab VM), against the copy loop beside the same process, with torch's threads
   and with one.
6. first: the first scheduled save's stall against the later ones' (first / later), with the
   staging buffer prepared in the background and without.
7. budget: a state larger than the staging budget (--ring-mib): the pause of a save streamed
   through the ring, against a copy of the same tensors and a raw fsync'd write.

Memory: at most about 3x the largest --gib (12 GiB for --gib 4): during colabkit's restore in
the full case (the state, a fresh model, and the checkpoint the restore reads), and during its
runs in turn (the state, colabkit's staging buffer, and a raw write's bytes or safetensors'
copy); elsewhere the state and one other copy (colabkit's staging buffer, a raw write's bytes,
dcp.async_save's copy). Everything is freed between cases; the peak is printed at the end. Disk:
about 3x the largest --gib.
"""

import argparse
import gc
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

from colabkit.checkpoint.checkpointer import Checkpointer

sys.path.insert(0, str(Path(__file__).parent))
from bench_checkpoint import drop_cache, loop_rate, raw_cold_read, raw_write  # noqa: E402


def spread(values):
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def timed(fn, runs):
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def hashes(runs):
    import xxhash

    data = memoryview(os.urandom(1 << 20) * 256)
    target = bytearray(len(data))
    cases = {"memcpy (baseline)": lambda: target.__setitem__(slice(None), data),
             "xxh3_128": lambda: xxhash.xxh3_128(data).digest(),
             "sha256": lambda: hashlib.sha256(data).digest(),
             "blake2b": lambda: hashlib.blake2b(data).digest()}
    try:
        import blake3

        cases["blake3 (1 thread)"] = lambda: blake3.blake3(data).digest()
    except ImportError:
        pass
    copy = statistics.median(timed(cases["memcpy (baseline)"], runs))
    print("hash over 256 MiB: MB/s, and time as a multiple of a memcpy")
    for name, fn in cases.items():
        t = timed(fn, runs)
        print(f"  {name:20s} {256 / statistics.median(t):7.0f} MiB/s  {statistics.median(t) / copy:5.2f}x memcpy  "
              f"(runs {min(t):.3f}-{max(t):.3f} s)")


class Lora(torch.nn.Module):
    def __init__(self, base_mb: float, width=1024, rank=4):  # rank 4: 1.5 MiB of adapters on 200 MiB, as in the issue
        super().__init__()
        layers = max(1, int(base_mb * (1 << 20) / (width * width * 4)))
        self.base = torch.nn.ModuleList(torch.nn.Linear(width, width, bias=False) for _ in range(layers))
        self.base.requires_grad_(False)
        self.down = torch.nn.ParameterList(torch.nn.Parameter(torch.randn(width, rank) * 0.01) for _ in range(layers))
        self.up = torch.nn.ParameterList(torch.nn.Parameter(torch.zeros(rank, width)) for _ in range(layers))

    def forward(self, x):
        for layer, down, up in zip(self.base, self.down, self.up):
            x = layer(x) + x @ down @ up
        return x


def written_bytes(root: Path, before: set) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and p not in before)


def lora(folder: Path, base_mb: float, runs: int):
    model = Lora(base_mb)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    trained = [p for p in model.parameters() if p.requires_grad]
    ck = Checkpointer(every="1 steps", to=folder / "lora", keep=3, model=model, opt=opt)
    pauses, writes, floor, tsave = [], [], [], []
    for step in range(runs + 1):
        model(torch.randn(2, 1024)).sum().backward()
        opt.step()
        opt.zero_grad()
        before = set(ck.store.root.rglob("*")) if ck.store.root.exists() else set()
        ck.step = step + 1
        start = time.perf_counter()
        ck.save()
        pause = time.perf_counter() - start
        ck.wait()
        if step == 0:
            first = (pause, written_bytes(ck.store.root, before))
            continue
        pauses.append(pause)
        writes.append(written_bytes(ck.store.root, before))
        state = [p.detach() for p in trained] + [t for s in opt.state.values() for t in s.values() if t.dim()]
        changed = sum(t.nbytes for t in state)
        floor += copy_loop_times(state, 1)
        start = time.perf_counter()
        torch.save({"adapters": [p.detach() for p in trained], "opt": opt.state_dict()}, folder / "peft.pt")
        tsave.append(time.perf_counter() - start)
    ck.close()
    base = sum(p.numel() * 4 for p in model.base.parameters())
    print(f"LoRA: frozen base {base / 2**20:.0f} MiB, adapters {sum(p.numel() * 4 for p in trained) / 2**20:.2f} MiB")
    print(f"  first save: pause {first[0]:.3f} s, {first[1] / 2**20:.1f} MiB written (the base, once)")
    print(f"  later saves: {statistics.median(writes) / 2**20:.2f} MiB written ({min(writes) / 2**20:.2f}-"
          f"{max(writes) / 2**20:.2f}) = {statistics.median(writes) / changed:.2f}x the changed bytes (adapters + Adam "
          f"state, {changed / 2**20:.2f} MiB); torch.save of adapters + optimizer: "
          f"{(folder / 'peft.pt').stat().st_size / 2**20:.2f} MiB")
    print(f"  pause {spread(pauses)} s; copy of the changed tensors (baseline) {spread(floor)} s; "
          f"torch.save of them {spread(tsave)} s; pause - copy = {statistics.median(pauses) - statistics.median(floor):.3f} s "
          "(goal: pause <= 1.5x copy + 0.020 s)")


class Weights(torch.nn.Module):
    def __init__(self, gib: float, parts: int):
        super().__init__()
        numel = int(gib * (1 << 30) / 4 / parts)
        self.params = torch.nn.ParameterList(torch.nn.Parameter(torch.randn(numel)) for _ in range(parts))


def copy_loop_times(tensors: list, runs: int) -> list[float]:
    """The stall's baseline: the same float32 tensors copied one by one into a buffer allocated
    and touched beforehand (freed after), in the steady state as the stall is: one untimed copy
    first, as the first save is left out of the stall."""
    buffer = torch.empty(sum(t.numel() for t in tensors))
    buffer.fill_(0)

    def copy_loop():
        offset = 0
        for t in tensors:
            buffer[offset:offset + t.numel()].copy_(t.reshape(-1))
            offset += t.numel()

    copy_loop()
    return timed(copy_loop, runs)


def changed_save(ck, tensors: list, streamed: bool | None = None) -> tuple[float, float]:
    """One save at the next step, every tensor changed before it: its stall and commit time.
    `streamed`: whether it must have gone through the ring."""
    with torch.no_grad():
        for t in tensors:
            t.add_(1.0)
    ck.step += 1
    start = time.perf_counter()
    ck.save()
    stall = time.perf_counter() - start
    ck.wait()
    assert ck.last["ok"] and (streamed is None or bool(ck.last.get("streamed")) == streamed)
    return stall, ck.last["seconds"]


def changed_saves(ck, tensors: list, runs: int, streamed: bool | None = None) -> tuple[float, list, list]:
    """runs + 1 saves (changed_save): the first save's stall, then each later save's stall and
    commit time."""
    first, _ = changed_save(ck, tensors, streamed)
    later = [changed_save(ck, tensors, streamed) for _ in range(runs)]
    return first, [stall for stall, _ in later], [commit for _, commit in later]


def load_average() -> str:
    return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


def size_name(nbytes: int) -> str:
    return f"{nbytes / 2**30:g} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def make_durable(path: Path) -> None:
    """fsync a file, or a folder's files, and the folder holding them (what colabkit's commit does)."""
    files = [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else [path]
    for target in files + [path if path.is_dir() else path.parent]:
        fd = os.open(target, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def durable_save_times(save, path: Path, runs: int) -> list[float]:
    """save(path) then make_durable(path), each run into a path removed beforehand (untimed), as
    colabkit writes each checkpoint to new files."""
    out = []
    for _ in range(runs):
        remove(path)
        start = time.perf_counter()
        save(path)
        make_durable(path)
        out.append(time.perf_counter() - start)
    remove(path)
    return out


def ratio(times: list[float], baseline: list[float]) -> float:
    return statistics.median(times) / statistics.median(baseline)


def dcp_figures(folder: Path, state: dict, fresh, runs: int) -> dict[str, list[float]]:
    """PyTorch Distributed Checkpoint of `state` in this one process: DCP's single-process mode
    (no_dist=True; no process group is needed, not even for async_save). DCP warns on every call
    that torch.distributed is uninitialised; that warning is silenced here, in the benchmark only.
    dcp.save's FileSystemWriter fsyncs its data files and .metadata (sync_files=True) but not the
    folder after renaming .metadata.tmp: make_durable adds that (and re-fsyncs clean files, ~free)."""
    import torch.distributed.checkpoint as dcp

    warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
    target = folder / "dcp"
    saves = durable_save_times(lambda path: dcp.save(state, checkpoint_id=path, no_dist=True), target, runs)
    stalls, commits = [], []
    for _ in range(runs):
        remove(target)
        start = time.perf_counter()
        future = dcp.async_save(state, checkpoint_id=target, no_dist=True)
        stalls.append(time.perf_counter() - start)
        future.result()
        make_durable(target)
        commits.append(time.perf_counter() - start)
    loads = []
    fresh_state = fresh().state_dict()  # made only now: the async copy is gone
    for _ in range(runs):
        with torch.no_grad():
            for t in fresh_state.values():
                t.zero_()
        drop_cache(target)
        start = time.perf_counter()
        dcp.load(fresh_state, checkpoint_id=target, no_dist=True)
        loads.append(time.perf_counter() - start)
        assert all(torch.equal(fresh_state[name], t) for name, t in state.items())
    remove(target)
    return {"save": saves, "async stall": stalls, "async commit": commits, "load": loads}


def full(folder: Path, gib: float, parts: int, runs: int) -> dict[str, float]:
    """The full case's detail lines; returns its ratios for the sweep's table."""
    from safetensors.torch import save_file

    model = Weights(gib, parts)
    tensors = [p.detach() for p in model.parameters()]
    nbytes = sum(t.numel() * 4 for t in tensors)
    copies = copy_loop_times(tensors, runs)
    store = folder / f"full-{parts}"
    ck = Checkpointer(every="1 steps", to=store, keep=2, model=model)
    first, _ = changed_save(ck, tensors)
    state = model.state_dict()
    writes, stalls, commits, tsaves, stsaves = [], [], [], [], []

    def raw():
        writes.append(raw_write(folder, nbytes))
        (folder / "raw.bin").unlink()

    def commit():
        stall, seconds = changed_save(ck, tensors)
        stalls.append(stall)
        commits.append(seconds)

    # Run by run, each writer in turn, the first one rotating: the disk here has a fast and a slow
    # mode, and measuring all of one writer's runs before the next's compared them in different modes.
    writers = [raw, commit, lambda: tsaves.extend(durable_save_times(lambda path: torch.save(state, path),
                                                                     folder / "t.pt", 1)),
               lambda: stsaves.extend(durable_save_times(lambda path: save_file(state, str(path)),
                                                         folder / "s.safetensors", 1))]
    for run in range(runs):
        for measure in writers[run % len(writers):] + writers[:run % len(writers)]:
            measure()
    del state
    ck.close()  # frees the staging buffer before the fresh model exists
    fresh = Weights(gib, parts)
    restores, colds = [], []
    raw_write(folder, nbytes)  # once: read cold beside each restore, in the disk's mode of the moment
    for run in range(runs):
        with torch.no_grad():
            for p in fresh.parameters():
                p.zero_()
        colds.append(raw_cold_read(folder, keep=run < runs - 1))
        drop_cache(store)
        start = time.perf_counter()
        Checkpointer(to=store, model=fresh).restore()
        restores.append(time.perf_counter() - start)
        assert all(torch.equal(a, b) for a, b in zip(model.parameters(), fresh.parameters()))
    shutil.rmtree(store)
    del fresh  # dcp.async_save copies the state: at most 2x it from here
    state = model.state_dict()
    dcps = dcp_figures(folder, state, lambda: Weights(gib, parts), runs)
    print(f"{size_name(nbytes)} of float32 in {parts} tensors, all changed between saves ({load_average()}):")
    print(f"  copy loop (baseline) {spread(copies)} s; stall {spread(stalls)} s = "
          f"{ratio(stalls, copies):.2f}x (first save {first:.3f} s); "
          f"dcp.async_save stall {spread(dcps['async stall'])} s = {ratio(dcps['async stall'], copies):.2f}x")
    print(f"  raw fsync'd write (baseline) {spread(writes)} s; commit {spread(commits)} s = "
          f"{ratio(commits, writes):.2f}x; torch.save+fsync {spread(tsaves)} s = {ratio(tsaves, writes):.2f}x; "
          f"safetensors.save_file+fsync {spread(stsaves)} s = {ratio(stsaves, writes):.2f}x")
    print(f"  against the same raw write: dcp.save (fsyncs its files) {spread(dcps['save'])} s = "
          f"{ratio(dcps['save'], writes):.2f}x; dcp.async_save until .result() {spread(dcps['async commit'])} s = "
          f"{ratio(dcps['async commit'], writes):.2f}x")
    print(f"  raw cold read (baseline) {spread(colds)} s; restore (verified in one pass) {spread(restores)} s = "
          f"{ratio(restores, colds):.2f}x; dcp.load into a fresh state dict {spread(dcps['load'])} s = "
          f"{ratio(dcps['load'], colds):.2f}x")
    return {"stall / copy": ratio(stalls, copies), "commit / raw write": ratio(commits, writes),
            "torch.save / raw": ratio(tsaves, writes), "safetensors / raw": ratio(stsaves, writes),
            "DCP / raw": ratio(dcps["save"], writes), "DCP async stall / copy": ratio(dcps["async stall"], copies),
            "DCP async commit / raw": ratio(dcps["async commit"], writes),
            "restore / cold read": ratio(restores, colds), "DCP load / cold read": ratio(dcps["load"], colds)}


def loop_beside(start, finish) -> float:
    """start() (untimed), then the loop's rate in this thread until finish() returns in another
    (what finish() raised is raised here)."""
    start()
    done, failed = threading.Event(), []

    def wait():
        try:
            finish()
        except BaseException as error:
            failed.append(error)
        finally:
            done.set()

    waiter = threading.Thread(target=wait)
    waiter.start()
    during = loop_rate(3600.0, stop=done)
    waiter.join()
    if failed:
        raise failed[0]
    return during


def loop_case(folder: Path, gib: float, parts: int, runs: int) -> dict[str, float]:
    """The loop case's detail lines; returns the loop's relative speeds for the sweep's table."""
    from safetensors.torch import save_file

    model = Weights(gib, parts)
    tensors = [p.detach() for p in model.parameters()]
    nbytes = sum(t.numel() * 4 for t in tensors)
    state = model.state_dict()
    ck = Checkpointer(every="1 steps", to=folder / f"loop-{parts}", keep=2, model=model)
    _, _, commits = changed_saves(ck, tensors, 1)  # staging buffer and writer ready, as in training
    window = max(0.5, commits[0])  # each measure of the loop alone, about as long as a commit
    target = folder / "loop.out"

    def colabkit_save():
        with torch.no_grad():
            for t in tensors:
                t.add_(1.0)
        ck.step += 1
        ck.save()

    def colabkit_committed():
        ck.wait()
        assert ck.last["ok"] and ck.last["step"] == ck.step

    import torch.distributed.checkpoint as dcp

    warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
    dd, futures = [], []
    workers = {
        "colabkit's commit": (colabkit_save, colabkit_committed),
        "torch.save thread": (lambda: remove(target), lambda: (torch.save(state, target), make_durable(target))),
        "safetensors thread": (lambda: remove(target),
                               lambda: (save_file(state, str(target)), make_durable(target))),
        "dcp.async_save": (lambda: (remove(target), futures.append(dcp.async_save(state, checkpoint_id=target,
                                                                                   no_dist=True))),
                           lambda: (futures.pop().result(), make_durable(target))),
        "dd conv=fsync": (lambda: (remove(target), dd.append(subprocess.Popen(
            ["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={(nbytes + (1 << 20) - 1) >> 20}", "conv=fsync"],
            stderr=subprocess.DEVNULL))), lambda: dd.pop().wait()),
    }
    # Alone, then beside each in turn with alone again after each: each is relative to the mean of
    # the rates alone just before and just after it (the loop's own speed drifts on a shared VM).
    ratios, alone = {name: [] for name in workers}, [loop_rate(window)]
    for _ in range(runs):
        for name, (start, finish) in workers.items():
            during = loop_beside(start, finish)
            alone.append(loop_rate(window))
            ratios[name].append(during / ((alone[-2] + alone[-1]) / 2))
    ck.close()
    remove(target)
    shutil.rmtree(folder / f"loop-{parts}")
    print(f"GIL-bound loop beside a save of {size_name(nbytes)} in {parts} tensors ({load_average()}): "
          f"alone {statistics.median(alone):.0f} it/s ({min(alone):.0f}-{max(alone):.0f}); "
          f"its speed relative to alone:")
    for name, values in ratios.items():
        goal = "   goal >= 0.93, and >= beside a saver thread" if name == "colabkit's commit" else ""
        print(f"  beside {name:20s} {spread(values)}{goal}")
    return {f"loop: {name}": statistics.median(values) for name, values in ratios.items()}


def busy_case(folder: Path, gib: float, parts: int, runs: int) -> dict[str, float]:
    """The stall beside a busy process (a CPU-bound loop, as a data loader is on a 2-core Colab
    VM), against the copy loop beside the same process, with torch's threads (the baseline
    elsewhere) and with one thread (torch.set_num_threads(1)); returns both ratios for the table."""
    model = Weights(gib, parts)
    tensors = [p.detach() for p in model.parameters()]
    # Spins until this process is gone, even when it is killed before its finally runs.
    busy = subprocess.Popen([sys.executable, "-c", "import os\nparent = os.getppid()\n"
                             "while os.getppid() == parent:\n    for _ in range(100000): pass"])
    threads = torch.get_num_threads()
    try:
        time.sleep(0.5)
        copies = copy_loop_times(tensors, runs)
        torch.set_num_threads(1)
        singles = copy_loop_times(tensors, runs)
        torch.set_num_threads(threads)
        ck = Checkpointer(every="1 steps", to=folder / f"busy-{parts}", keep=2, model=model)
        ck.sink.prepared.wait(60)
        _, stalls, _ = changed_saves(ck, tensors, runs)
        ck.close()
    finally:
        torch.set_num_threads(threads)
        busy.kill()
        busy.wait()
    shutil.rmtree(folder / f"busy-{parts}")
    print(f"{size_name(sum(t.numel() * 4 for t in tensors))} in {parts} tensors beside a busy process "
          f"({load_average()}): copy loop {spread(copies)} s, with one thread {spread(singles)} s; "
          f"stall {spread(stalls)} s = {ratio(stalls, copies):.2f}x the copy loop, "
          f"{ratio(stalls, singles):.2f}x the one-thread copy")
    return {"busy: stall / copy": ratio(stalls, copies), "busy: stall / 1-thread copy": ratio(stalls, singles)}


def table(rows: dict[tuple[float, int], dict[str, float]]) -> None:
    """The sweep as one Markdown table: rows size (GiB) x tensors, a column per ratio measured."""
    columns = list(dict.fromkeys(column for row in rows.values() for column in row))
    print("\n| state | tensors | " + " | ".join(columns) + " |")
    print("|---|---:|" + "---:|" * len(columns))
    for (gib, parts), row in sorted(rows.items()):
        cells = [f"{row[c]:.2f}" + ("" if c.startswith("loop") else "x") if c in row else "" for c in columns]
        print(f"| {size_name(int(gib * 2**30))} | {parts} | " + " | ".join(cells) + " |")


def first_vs_later(folder: Path, gib: float, parts: int, runs: int):
    """The first scheduled save's stall against the later ones', each Checkpointer fresh: with the
    staging buffer prepared in the background since %checkpoint (as now), and without (a
    Checkpointer with no schedule prepares nothing, as every one did before)."""
    for prepared in (True, False):
        firsts, laters, ratios, ready = [], [], [], []
        for run in range(runs):
            model = Weights(gib, parts)
            tensors = [p.detach() for p in model.parameters()]
            started = time.perf_counter()
            ck = Checkpointer(every="1 steps" if prepared else None, to=folder / f"first-{prepared}-{run}", keep=2,
                              model=model)
            if prepared:
                ck.sink.prepared.wait(60)  # training's first minutes, before the first save comes due
                ready.append(time.perf_counter() - started)
            first, later, _ = changed_saves(ck, tensors, 3)
            ck.close()
            del ck, model, tensors  # before the next run's model exists
            shutil.rmtree(folder / f"first-{prepared}-{run}")
            firsts.append(first)
            laters.append(statistics.median(later))
            ratios.append(first / statistics.median(later))
        how = (f"prepared in the background (ready {spread(ready)} s after %checkpoint)" if prepared
               else "not prepared (before)")
        print(f"{gib * 1024:.0f} MiB in {parts} tensors, staging {how}: first save stall {spread(firsts)} s, "
              f"later {spread(laters)} s; first / later {spread(ratios)}")


def larger_than_budget(folder: Path, gib: float, runs: int, ring_mib: int):
    """A state larger than the staging budget (the budget set to 4 slots of ring_mib/4): the pause
    of a save streamed through the ring, against a copy of the same tensors into a preallocated
    buffer and a raw fsync'd write (what the inline path this replaced paused for, at the least),
    and the staged stall of the same state when it fits."""
    from colabkit.checkpoint import sink

    model = Weights(gib, 64)
    tensors = [p.detach() for p in model.parameters()]
    nbytes = sum(t.numel() * 4 for t in tensors)
    copies = copy_loop_times(tensors, runs)
    writes = [raw_write(folder, nbytes) for _ in range(runs)]
    results = {}
    for streamed in (False, True):
        original = sink.budget
        if streamed:
            sink.budget = lambda: ring_mib << 20
        try:
            ck = Checkpointer(to=folder / f"budget-{streamed}", keep=2, model=model)
            _, pauses, commits = changed_saves(ck, tensors, runs, streamed)
            ring = ck.sink._buffer.size
            ck.close()
        finally:
            sink.budget = original
        results[streamed] = (pauses, commits, ring)
    copy, write = statistics.median(copies), statistics.median(writes)
    pauses, commits, ring = results[True]
    print(f"{nbytes / 2**20:.0f} MiB in 64 tensors, larger than a staging budget of {ring_mib} MiB "
          f"(ring {ring / 2**20:.0f} MiB):")
    print(f"  copy loop (baseline) {spread(copies)} s; raw fsync'd write (baseline) {spread(writes)} s")
    print(f"  streamed pause {spread(pauses)} s = {statistics.median(pauses) / copy:.2f}x the copy, "
          f"{statistics.median(pauses) / write:.2f}x the raw write; whole commit {spread(commits)} s")
    print(f"  staged whole (fits): stall {spread(results[False][0])} s = "
          f"{statistics.median(results[False][0]) / copy:.2f}x the copy")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, nargs="+", default=[0.25],
                        help="state sizes in GiB, one run of the size cases each (e.g. 0.0625 0.25 1 4); "
                             "needs about 3x the largest in RAM and on disk")
    parser.add_argument("--tensors", type=int, nargs="+", default=[64, 20000])
    parser.add_argument("--base-mb", type=float, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--ring-mib", type=int, default=64, help="the staging budget of the larger-than-budget case")
    parser.add_argument("--cases", nargs="+", default=["hashes", "lora", "full", "loop", "busy", "first", "budget"],
                        choices=["hashes", "lora", "full", "loop", "busy", "first", "budget"])
    args = parser.parse_args()
    if args.dir:
        Path(args.dir).mkdir(parents=True, exist_ok=True)  # a --dir that is not there yet is made
    folder = Path(tempfile.mkdtemp(prefix="bench-cost-", dir=args.dir or "."))
    rss_at_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
    print(f"{load_average()} at start; torch {torch.__version__}; sizes {args.gib} GiB, tensors {args.tensors}, "
          f"{args.runs} runs")
    rows = {}
    try:
        if "hashes" in args.cases:
            hashes(args.runs)
        if "lora" in args.cases:
            lora(folder, args.base_mb, args.runs)
        for gib in args.gib:
            for parts in args.tensors:
                for case, measure in (("full", full), ("loop", loop_case), ("busy", busy_case)):
                    if case in args.cases:
                        rows.setdefault((gib, parts), {}).update(measure(folder, gib, parts, args.runs))
                        gc.collect()
                if "first" in args.cases:
                    first_vs_later(folder, gib, parts, args.runs)
                    gc.collect()
            if "budget" in args.cases and gib * 1024 <= args.ring_mib:
                print(f"budget case skipped at {size_name(int(gib * 2**30))}: not larger than "
                      f"--ring-mib {args.ring_mib}")
            elif "budget" in args.cases:
                larger_than_budget(folder, gib, args.runs, args.ring_mib)
                gc.collect()
    finally:
        shutil.rmtree(folder)
    if rows:
        table(rows)
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10) - rss_at_start
    print(f"{load_average()} at end; peak RSS {peak / 2**30:.2f} GiB above the start = "
          f"{peak / (max(args.gib) * 2**30):.1f}x the largest state (the writer process's own memory apart)")


if __name__ == "__main__":
    main()
