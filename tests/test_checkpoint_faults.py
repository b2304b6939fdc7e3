"""Faults a long session meets, injected one at a time: a writer killed mid-save, two kernels on one
store, checkpoints that verify but can't be decoded, odd folder names and links, a read-only store."""

import json
import os
import subprocess
import sys
import signal
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from colabkit.checkpoint import codec
from colabkit.checkpoint.store import CheckpointStore
from helpers.kernels import output
from helpers.tensor_index import index_of, index_text


def writer_of(kernel_pid: int) -> psutil.Process | None:
    for child in psutil.Process(kernel_pid).children(recursive=True):
        try:
            if "colabkit.checkpoint.writer" in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


@pytest.mark.kernel
def test_a_writer_killed_mid_save_loses_that_save_only_and_training_goes_on(tmp_path):
    store = tmp_path / "store"
    steps = 30
    cells = [
        "%load_ext colabkit",
        "import time, numpy as np, colabkit\nw = np.zeros(8 << 20)",  # 64 MiB: a save takes a while
        f"%checkpoint every 1 steps w --to {store}",
        f"for i in colabkit.resumable(range({steps})):\n    w += 1\n    time.sleep(0.1)",
        "print('finished', int(w[0]))",
    ]
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    killed = []

    def killer():  # SIGKILL the writer alone, twice, each time while a commit is in progress
        while client.km is None or not client.km.has_kernel:
            time.sleep(0.05)
        kernel = client.km.provisioner.process.pid
        deadline = time.monotonic() + 120
        while len(killed) < 2 and time.monotonic() < deadline:
            writer = writer_of(kernel)
            if writer is not None and store.is_dir() and any(p.name.startswith(".tmp-step") for p in store.iterdir()):
                writer.send_signal(signal.SIGKILL)
                killed.append(writer.pid)
                time.sleep(1.0)
            time.sleep(0.002)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    client.execute()
    thread.join()
    assert len(killed) == 2
    said = output(nb, 3)
    assert "Error" not in said, said
    assert said.count("was lost: the writer process died") >= 1, said
    assert f"finished {steps}" in output(nb, 4)
    latest, skipped = CheckpointStore(store).latest_valid()
    assert latest.step == steps and skipped == []
    loaded = codec.read(latest.path, trust=False)
    assert loaded.position == steps
    assert [p.name for p in store.iterdir() if p.name.startswith(".tmp")] == []  # the dead writers' leftovers went


HOLDER = """
import sys, numpy as np
from pathlib import Path
from colabkit.checkpoint.checkpointer import Checkpointer
from colabkit.storage import Places
ck = Checkpointer(places=Places(Path(sys.argv[1])), w=np.zeros(1 << 20))
step = 0
while True:
    step += 1
    ck.step = step
    ck.objects["w"] = ck.objects["w"] + 1
    try:
        ck.save(force=True, wait=True)
        print("saved", step, flush=True)
    except Exception as exc:
        print("FAILED", step, exc, flush=True)
    if step >= 3 and Path(sys.argv[2]).exists():
        break
ck.close()
"""


def test_a_second_kernel_on_a_store_gets_a_read_only_view_and_sweeps_nothing_of_the_writers(tmp_path, capsys):
    from colabkit.checkpoint.checkpointer import Checkpointer
    from colabkit.errors import ColabkitError
    from colabkit.storage import Places

    root, stop = tmp_path / "store", tmp_path / "stop"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), str(stop)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().startswith("saved 1")
        in_flight = root / ".tmp-step-99-0123456789ab"  # as the writer's commit in progress looks
        in_flight.mkdir()
        for _ in range(10):  # a second kernel starts %checkpoint again and again while the first commits
            second = Checkpointer(places=Places(root), w=np.ones(4))
            said = capsys.readouterr().err
            assert f"in use by another kernel (process {holder.pid})" in said and "--to" in said, said
            with pytest.raises(ColabkitError, match="read-only.*--to ANOTHER-FOLDER"):
                second.save()
            restored = second.restore()  # reading works
            assert restored is not None and restored.step >= 1
            second.close()
            assert in_flight.is_dir()
        stop.touch()
        lines = holder.stdout.read().splitlines()
    finally:
        holder.kill()
        holder.wait()
    assert lines and not [line for line in lines if line.startswith("FAILED")], lines
    last = int(lines[-1].split()[1])
    assert CheckpointStore(root).latest_valid()[0].step == last  # the writer's reported-OK saves are there

    (root / ".tmp-LATEST-0820a3eb702a").write_text("step-3")  # a leftover file, not a folder
    third = Checkpointer(places=Places(root), w=np.ones(4))  # the first kernel is gone: this one writes
    assert "in use" not in capsys.readouterr().err
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".tmp")) == []
    third.step = last + 1
    third.save(wait=True)
    third.close()


def saved_steps(root: Path, steps=(1, 2, 3)):
    """A store with a checkpoint per step whose array `w` holds the step number."""
    from colabkit.checkpoint.checkpointer import Checkpointer
    from colabkit.storage import Places

    ck = Checkpointer(places=Places(root), keep=5, w=np.zeros(4))
    for step in steps:
        ck.step = step
        ck.objects["w"] = np.full(4, float(step))
        ck.save(wait=True)
    ck.close()


def rewrite(folder: Path, name: str, data: bytes) -> None:
    """Replace a file and record its new hash in the manifest: it verifies, whatever it holds."""
    import json

    from colabkit.checkpoint import durable

    (folder / name).write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    record = durable.hash_file(folder / name)
    manifest["files"][name] = {"size": record.size, "hash": record.hash}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def crafted_index(folder: Path, shape: list[int], size: int) -> bytes:
    """tensors.json with `w` given another shape and byte size, in the pack it was in."""
    packs, rows = index_of(folder)
    for row in rows:
        if row[0] == "w":
            row[2], row[5] = shape, size
    return index_text(packs, rows)


@pytest.mark.parametrize("fault", ["8 TiB in the index", "a shape of other bytes", "a column one short",
                                   "a hash digit short", "a key that is a list", "deep state.json",
                                   "a structure that is a list", "missing key", "a manifest record not a dict"])
def test_a_checkpoint_that_verifies_but_cant_be_decoded_is_passed_over_and_said_why(tmp_path, fault):
    from colabkit.checkpoint.checkpointer import restore
    from colabkit.checkpoint.store import stores_at
    from colabkit.storage import Places

    root = tmp_path / "store"
    saved_steps(root)
    newest = root / "step-3"
    if fault == "8 TiB in the index":  # shape and size agree: only the pack's size can refuse it
        rewrite(newest, "tensors.json", crafted_index(newest, [2**40], 2**43))
        why = "tensors.json places w outside the packs its manifest.json lists"
    elif fault == "a shape of other bytes":  # refused before anything is allocated
        rewrite(newest, "tensors.json", crafted_index(newest, [2**40], 32))
        why = "tensors.json describes a tensor that can't be (F64 of shape [1099511627776] is not 32 bytes)"
    elif fault in ("a column one short", "a hash digit short"):  # every row's place then unknowable
        index = json.loads((newest / "tensors.json").read_text())
        if fault == "a column one short":
            index["offsets"].pop()
        else:
            index["hashes"] = index["hashes"][:-1]
        rewrite(newest, "tensors.json", json.dumps(index).encode())
        why = "tensors.json cannot be decoded (TypeError: its columns are not lists of one value per tensor)"
    elif fault == "a key that is a list":
        index = json.loads((newest / "tensors.json").read_text())
        index["keys"][0] = [index["keys"][0]]
        rewrite(newest, "tensors.json", json.dumps(index).encode())
        why = "tensors.json describes a tensor that can't be (unhashable type: 'list')"
    elif fault == "deep state.json":
        rewrite(newest, "state.json", b"[" * 50_000 + b"]" * 50_000)
        why = "state.json cannot be decoded (RecursionError"
    elif fault == "a structure that is a list":
        document = json.loads((newest / "state.json").read_text())
        rewrite(newest, "state.json", json.dumps({**document, "structure": [document["structure"]]}).encode())
        why = "state.json cannot be decoded (AttributeError"
    elif fault == "a manifest record not a dict":
        manifest = json.loads((newest / "manifest.json").read_text())
        manifest["files"]["state.json"] = "its hash"
        (newest / "manifest.json").write_text(json.dumps(manifest))
        why = "manifest.json lacks its step or its list of files"
    else:
        text = (newest / "state.json").read_text().replace('"__array__": "w"', '"__array__": "gone"')
        rewrite(newest, "state.json", text.encode())
        why = "state.json cannot be decoded (KeyError"
    if fault != "a manifest record not a dict":
        assert CheckpointStore(root).latest_valid()[0].step == 3  # its hashes verify
    namespace = {}
    restored = restore(stores_at(Places(root)), "latest", False, namespace)
    assert restored.checkpoint.id == "step-2" and restored.values["w"].tolist() == [2.0] * 4
    assert any(note.startswith("step-3") and why in note for note in restored.notes), restored.notes


def test_odd_names_links_and_a_manifest_of_another_step_are_not_loaded(tmp_path):
    import json
    import shutil

    from colabkit.checkpoint.checkpointer import restore
    from colabkit.checkpoint.store import stores_at
    from colabkit.storage import Places

    root = tmp_path / "store"
    saved_steps(root, (1, 2))
    shutil.copytree(root / "step-2", root / "step-٩٩")  # Arabic-Indic digits: not step 99
    shutil.copytree(root / "step-2", root / "step-50\n")
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(root / "step-2", elsewhere)
    (root / "step-70").symlink_to(elsewhere, target_is_directory=True)
    (root / "step-60").mkdir()
    shutil.copy(root / "step-2" / "state.json", root / "step-60" / "state.json")
    manifest = json.loads((root / "step-2" / "manifest.json").read_text())
    (root / "step-60" / "manifest.json").write_text(json.dumps({**manifest, "step": 60}))
    (root / "step-60" / "tensors.json").symlink_to(root / "step-2" / "tensors.json")
    shutil.copytree(root / "step-1", root / "step-40")  # a rollback: step-1's manifest under a newer name
    store = CheckpointStore(root)
    assert [c.id for c in store.list()] == ["step-60", "step-2", "step-1"]  # a listing reads manifests only
    namespace = {}
    restored = restore(stores_at(Places(root)), "latest", False, namespace)
    assert restored.checkpoint.id == "step-2"
    notes = " ".join(restored.notes)
    assert "step-70 is a symbolic link, not followed" in notes
    assert "step-60: tensors.json is a symbolic link, not followed" in notes
    assert "step-40: its manifest is of step 1" in notes


def test_a_read_only_store_restores_and_lists_and_refuses_saves_clearly(tmp_path):
    root = tmp_path / "store"
    saved_steps(root, (1, 2))
    script = (
        "import sys, numpy as np\nfrom pathlib import Path\n"
        "from colabkit.checkpoint.checkpointer import Checkpointer\nfrom colabkit.checkpoint.commands import listing\n"
        "from colabkit.storage import Places\n"
        f"ck = Checkpointer(places=Places(Path({str(root)!r})), w=np.zeros(4))\n"
        "print('restored', ck.restore().checkpoint.id, ck.objects['w'].tolist())\n"
        "print(listing(ck.stores()))\n"
        "try:\n    ck.save()\nexcept Exception as exc:\n    print('refused:', exc)\n"
    )
    command = [sys.executable, "-c", script]
    if os.geteuid() == 0:  # root writes through permissions: a read-only bind mount, in a mount namespace of its own
        command = ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(root), *command]
    else:
        for folder in (root, *root.iterdir()):
            folder.chmod(0o555)
    done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert "restored step-2 [2.0, 2.0, 2.0, 2.0]" in done.stdout
    assert "step-1" in done.stdout.split("restored step-2 [")[1]  # listed
    assert "refused: Not saved: colabkit cannot write to" in done.stdout and "read-only" in done.stdout
    assert "--to ANOTHER-FOLDER" in done.stdout


@pytest.mark.parametrize("code, said, todo", [
    ("ENOSPC", "the disk is full", "Free space"),
    ("EDQUOT", "the disk quota is used up", "Free space within your quota"),
    ("EROFS", "the storage folder is on a read-only file system", "Remount it writable"),
    ("EACCES", "permission to write there was denied", "Give yourself write access"),
    ("ENOENT", "the storage folder was removed while it was being written", "saves again into a new one"),
])
def test_a_writer_error_is_worded_by_what_happened(tmp_path, code, said, todo):
    import errno

    from colabkit.checkpoint.checkpointer import _describe_write_error

    exc = OSError(getattr(errno, code), os.strerror(getattr(errno, code)))
    result = {"ok": False, "error": f"OSError: {exc}", "errno": exc.errno, "step": 7}  # as the writer reports it
    message = _describe_write_error(result, tmp_path)
    assert message.startswith(f"Checkpoint step-7 was not saved: {said}") and todo in message
    assert ("Free space" in message) == (code in ("ENOSPC", "EDQUOT"))
    assert ("previous checkpoint is intact" in message) == (code != "ENOENT")


def test_a_script_that_never_closes_hears_at_exit_that_its_last_save_failed(tmp_path):
    """A script saves without waiting and ends without close(): the writer finished the save at
    exit, and its failure was dropped there, unsaid (the script ended as if saved)."""
    import subprocess
    import sys

    script = f"""
import shutil, numpy as np
from colabkit.checkpoint.checkpointer import Checkpointer
ck = Checkpointer(to={str(tmp_path)!r}, w=np.zeros(4))
ck.save(wait=True)
shutil.rmtree({str(tmp_path / 'pool')!r})
open({str(tmp_path / 'pool')!r}, "w").write("not a folder")
ck.step = 1
ck.save()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "colabkit: the last checkpoint, step-1, was not saved (" in done.stderr, done.stderr
    assert f"the checkpoints before it in {tmp_path} are intact" in done.stderr


def test_a_dead_kernels_writer_still_finishing_is_named_as_that_not_as_another_kernel(tmp_path, monkeypatch):
    """The kernel that wrote the store is gone and its writer still holds the lock (a long Drive
    copy) past the wait: the read-only view said the store was in use by another kernel, naming
    a process that no longer runs."""
    from colabkit.checkpoint import lock

    root = tmp_path / "store"
    root.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (root / lock.LOCK).write_text(gone.stdout.strip())  # the kernel that took the lock, ended
    writer = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                               f"fd = os.open({str(root / lock.LOCK)!r}, os.O_RDWR)\n"
                               "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "held\n"
        monkeypatch.setattr(lock, "ORPHAN_WAIT", 0.3)
        claim = lock.claim(root)
    finally:
        writer.kill()
        writer.wait()
    assert not claim.writes and "another kernel" not in claim.refused
    assert f"still being written by the writer of a kernel that ended (process {gone.stdout.strip()}'s)" \
        in claim.refused
