"""What a checkpoint costs as what changed, each figure a ratio to a baseline from the same run.

Medians of --runs rounds, with the spread (min-max) beside them; the machine is shared, so say its
load with the figures.

1. hashes: MB/s of XXH3-128 (what colabkit uses), sha256, blake2b and BLAKE3 (when installed)
   over the same 256 MiB, against a memcpy of it.
2. LoRA on a frozen base (--base-mb of frozen weights, 1.5 MB of adapters trained with Adam):
   bytes written per checkpoint and the pause, against a copy of the adapters and their Adam
   state alone (PEFT saves the adapters; that copy is its floor) and torch.save of the adapters.
3. --gib of float32 in --tensors tensors, all changing: the stall against a copy of the same
   tensors into a preallocated buffer; the commit against a raw fsync'd write; the restore
   (verified as it reads) against a raw cold read; beside them torch.save and
   safetensors.save_file + fsync of the same state.
4. first vs later save: the first scheduled save's stall against the later ones' (first / later),
   with the staging buffer prepared in the background and without.
5. a state larger than the staging budget (--ring-mib): the pause of a save streamed through the
   ring, against a copy of the same tensors and a raw fsync'd write.
"""

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from colabkit.checkpoint.checkpointer import Checkpointer

sys.path.insert(0, str(Path(__file__).parent))
from bench_checkpoint import drop_cache, raw_cold_read, raw_write  # noqa: E402


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
    def __init__(self, base_mb: float, width=1024, rank=8):
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
        start = time.perf_counter()
        [t.clone() for t in state]
        floor.append(time.perf_counter() - start)
        start = time.perf_counter()
        torch.save({"adapters": [p.detach() for p in trained], "opt": opt.state_dict()}, folder / "peft.pt")
        tsave.append(time.perf_counter() - start)
    ck.close()
    base = sum(p.numel() * 4 for p in model.base.parameters())
    print(f"LoRA: frozen base {base / 2**20:.0f} MiB, adapters {sum(p.numel() * 4 for p in trained) / 2**20:.2f} MiB")
    print(f"  first save: pause {first[0]:.3f} s, {first[1] / 2**20:.1f} MiB written (the base, once)")
    print(f"  later saves: {statistics.median(writes) / 2**20:.2f} MiB written ({min(writes) / 2**20:.2f}-"
          f"{max(writes) / 2**20:.2f}); torch.save of adapters + optimizer: {(folder / 'peft.pt').stat().st_size / 2**20:.2f} MiB")
    print(f"  pause {spread(pauses)} s; copy of adapters + Adam state (baseline) {spread(floor)} s; "
          f"torch.save of them {spread(tsave)} s; pause - copy = {statistics.median(pauses) - statistics.median(floor):.3f} s")


class Weights(torch.nn.Module):
    def __init__(self, gib: float, parts: int):
        super().__init__()
        numel = int(gib * (1 << 30) / 4 / parts)
        self.params = torch.nn.ParameterList(torch.nn.Parameter(torch.randn(numel)) for _ in range(parts))


def copy_loop_times(tensors: list, runs: int) -> list[float]:
    """The stall's baseline: the same float32 tensors copied one by one into a buffer allocated
    and touched beforehand (freed after)."""
    buffer = torch.empty(sum(t.numel() for t in tensors))
    buffer.fill_(0)

    def copy_loop():
        offset = 0
        for t in tensors:
            buffer[offset:offset + t.numel()].copy_(t)
            offset += t.numel()

    return timed(copy_loop, runs)


def changed_saves(ck, tensors: list, runs: int, streamed: bool | None = None) -> tuple[float, list, list]:
    """runs + 1 saves, every tensor changed before each: the first save's stall, then each later
    save's stall and commit time. `streamed`: whether every save must have gone through the ring."""
    first, stalls, commits = None, [], []
    for step in range(runs + 1):
        with torch.no_grad():
            for t in tensors:
                t.add_(1.0)
        ck.step = step + 1
        start = time.perf_counter()
        ck.save()
        stall = time.perf_counter() - start
        ck.wait()
        assert ck.last["ok"] and (streamed is None or bool(ck.last.get("streamed")) == streamed)
        if step == 0:
            first = stall
        else:
            stalls.append(stall)
            commits.append(ck.last["seconds"])
    return first, stalls, commits


def full(folder: Path, gib: float, parts: int, runs: int):
    model = Weights(gib, parts)
    tensors = [p.detach() for p in model.parameters()]
    nbytes = sum(t.numel() * 4 for t in tensors)
    copies = copy_loop_times(tensors, runs)
    writes, colds = [], []
    for _ in range(runs):
        writes.append(raw_write(folder, nbytes))
        colds.append(raw_cold_read(folder))
    ck = Checkpointer(every="1 steps", to=folder / f"full-{parts}", keep=2, model=model)
    first, stalls, commits = changed_saves(ck, tensors, runs)
    restores = []
    ck.close()
    for _ in range(runs):
        drop_cache(folder / f"full-{parts}")
        fresh = Weights(gib, parts)
        start = time.perf_counter()
        Checkpointer(to=folder / f"full-{parts}", model=fresh).restore()
        restores.append(time.perf_counter() - start)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), fresh.parameters()))
    tsaves, stsaves = [], []
    from safetensors.torch import save_file

    state = model.state_dict()
    for _ in range(runs):
        start = time.perf_counter()
        torch.save(state, folder / "t.pt")
        fd = os.open(folder / "t.pt", os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        tsaves.append(time.perf_counter() - start)
        start = time.perf_counter()
        save_file(state, str(folder / "s.safetensors"))
        fd = os.open(folder / "s.safetensors", os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        stsaves.append(time.perf_counter() - start)
    copy, write, cold = (statistics.median(x) for x in (copies, writes, colds))
    print(f"{nbytes / 2**20:.0f} MiB of float32 in {parts} tensors, all changed between saves:")
    print(f"  copy loop (baseline) {spread(copies)} s; stall {spread(stalls)} s = "
          f"{statistics.median(stalls) / copy:.2f}x (first save {first:.3f} s)")
    print(f"  raw fsync'd write (baseline) {spread(writes)} s; commit {spread(commits)} s = "
          f"{statistics.median(commits) / write:.2f}x; torch.save+fsync {statistics.median(tsaves) / write:.2f}x; "
          f"safetensors.save_file+fsync {statistics.median(stsaves) / write:.2f}x")
    print(f"  raw cold read (baseline) {spread(colds)} s; restore (verified in one pass) {spread(restores)} s = "
          f"{statistics.median(restores) / cold:.2f}x")


def first_vs_later(folder: Path, gib: float, runs: int):
    """The first scheduled save's stall against the later ones', each Checkpointer fresh: with the
    staging buffer prepared in the background since %checkpoint (as now), and without (a
    Checkpointer with no schedule prepares nothing, as every one did before)."""
    for prepared in (True, False):
        firsts, laters, ratios, ready = [], [], [], []
        for run in range(runs):
            model = Weights(gib, 64)
            tensors = [p.detach() for p in model.parameters()]
            started = time.perf_counter()
            ck = Checkpointer(every="1 steps" if prepared else None, to=folder / f"first-{prepared}-{run}", keep=2,
                              model=model)
            if prepared:
                ck.sink.prepared.wait(60)  # training's first minutes, before the first save comes due
                ready.append(time.perf_counter() - started)
            first, later, _ = changed_saves(ck, tensors, 3)
            ck.close()
            shutil.rmtree(folder / f"first-{prepared}-{run}")
            firsts.append(first)
            laters.append(statistics.median(later))
            ratios.append(first / statistics.median(later))
        how = (f"prepared in the background (ready {spread(ready)} s after %checkpoint)" if prepared
               else "not prepared (before)")
        print(f"{gib * 1024:.0f} MiB in 64 tensors, staging {how}: first save stall {spread(firsts)} s, "
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
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gib", type=float, default=0.25)
    parser.add_argument("--tensors", type=int, nargs="+", default=[64, 20000])
    parser.add_argument("--base-mb", type=float, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--ring-mib", type=int, default=64, help="the staging budget of the larger-than-budget case")
    parser.add_argument("--cases", nargs="+", default=["hashes", "lora", "full", "first", "budget"])
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-cost-", dir=args.dir or "."))
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    try:
        if "hashes" in args.cases:
            hashes(args.runs)
        if "lora" in args.cases:
            lora(folder, args.base_mb, args.runs)
        if "full" in args.cases:
            for parts in args.tensors:
                full(folder, args.gib, parts, args.runs)
        if "first" in args.cases:
            first_vs_later(folder, args.gib, args.runs)
        if "budget" in args.cases:
            larger_than_budget(folder, args.gib, args.runs, args.ring_mib)
    finally:
        shutil.rmtree(folder)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
