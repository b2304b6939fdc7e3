import os
import sys
from pathlib import Path

import pytest

from colabkit import notebook as nb
from colabkit import platform as p
from colabkit import runtime, storage
from colabkit.errors import ColabkitError, ColabkitWarning


def notebook_at(path):
    path = Path(path)
    return nb.Notebook(nb.safe_name(path.name), path, path.parent, "JPY_SESSION_NAME")


def test_each_notebook_keeps_its_own_storage_beside_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, second = notebook_at(tmp_path / "exp" / "a.ipynb"), notebook_at(tmp_path / "exp" / "b.ipynb")
    assert storage.mount(first, platform_name=p.JUPYTER) == tmp_path / "exp" / "colabkit-storage" / "a"
    assert storage.mount(second, platform_name=p.JUPYTER) == tmp_path / "exp" / "colabkit-storage" / "b"
    target = tmp_path / "runs" / "a"
    assert storage.mount(first, to=target) == target and target.is_dir()


def test_the_runtime_remembers_the_storage_and_the_panel_shows_its_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLABKIT_NOTEBOOK", "train.ipynb")
    kernel = runtime.current()
    assert kernel.storage is None and "storage" not in kernel.disk_paths()
    assert runtime.mount() == tmp_path / "colabkit-storage" / "train" == kernel.storage
    assert kernel.disk_paths()["storage"] == str(tmp_path / "colabkit-storage" / "train")


def test_kaggle_and_sagemaker_job(tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "KAGGLE_WORKING", str(tmp_path / "kaggle/working"))
    any_notebook = notebook_at(tmp_path / "x.ipynb")
    assert storage.mount(any_notebook, platform_name=p.KAGGLE) == tmp_path / "kaggle/working"
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path / "opt/ml"))
    assert storage.mount(any_notebook, platform_name=p.SAGEMAKER_JOB) == tmp_path / "opt/ml/checkpoints"


def test_checkpoints_commit_locally_and_mirror_to_drive_only_when_the_storage_is_on_drive(fake_colab, tmp_path):
    local = storage.checkpoint_places(tmp_path / "colabkit-storage" / "run")
    assert local == storage.Places(tmp_path / "colabkit-storage" / "run" / "checkpoints")
    drive = storage.mount(notebook_at(tmp_path / "run.ipynb"), platform_name=p.COLAB)
    assert drive == fake_colab / "drive" / "MyDrive" / "colabkit" / "run"
    places = storage.checkpoint_places(drive)
    assert places.mirror == drive / "checkpoints"
    assert places.root == Path.cwd() / ".colabkit-local" / "run" / "checkpoints"
    assert storage.checkpoint_places(drive, to=tmp_path / "mine") == storage.Places(tmp_path / "mine")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file permissions")
def test_unwritable_folder_is_a_clear_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(ColabkitError, match="cannot write to .*%mount --to PATH"):
        storage.mount(notebook_at(tmp_path / "n.ipynb"), to=locked / "x")


def test_unwritable_folder_is_a_clear_error_even_as_root(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ColabkitError, match="cannot write to .*%mount --to PATH"):
        storage.mount(notebook_at(tmp_path / "n.ipynb"), to=blocker / "x")


def test_colab_mounts_drive_in_the_foreground_and_names_the_notebook_folder(fake_colab):
    from google.colab import _message, drive

    _message.FRONTEND["get_ipynb"] = lambda request: {
        "ipynb": {"metadata": {"colab": {"name": "My Training Run.ipynb"}}, "cells": []}}
    assert p.detect().name == p.COLAB
    path = runtime.mount()
    assert path == fake_colab / "drive/MyDrive/colabkit/My-Training-Run"
    assert path.is_dir()
    assert drive.CALLS == [{"mountpoint": str(fake_colab / "drive"), "force_remount": False,
                            "timeout_ms": 120000, "readonly": False}]
    assert storage.drive_is_mounted(str(fake_colab / "drive"))
    # Mounted already (per the mount table): no second consent prompt.
    runtime.mount()
    assert len(drive.CALLS) == 1


def test_colabs_own_check_would_miss_the_mount_but_ours_does_not(fake_colab, capsys):
    from google.colab import drive

    drive.mount(str(fake_colab / "drive"))
    # Colab's check looks for "My Drive": a second drive.mount would try again and fail on files.
    with pytest.raises(ValueError, match="already contain files"):
        drive.mount(str(fake_colab / "drive"))
    assert runtime.mount().parent.parent == fake_colab / "drive/MyDrive"


@pytest.mark.parametrize("scenario,says", [
    ("timeout", "did not answer in time"),
    ("denied", "not granted in the browser"),
    ("enterprise", "Colab Enterprise"),
])
def test_drive_failures_fall_back_to_local_with_a_warning(fake_colab, scenario, says):
    from google.colab import drive

    drive.SCENARIO = scenario
    with pytest.warns(ColabkitWarning, match=says) as caught:
        path = storage.mount(notebook_at(fake_colab / "run.ipynb"), platform_name=p.detect().name)
    assert path == fake_colab.parent / "colabkit-storage" / "run" and path.is_dir()
    assert "deleted when the runtime ends" in str(caught[0].message)


def test_files_in_the_mountpoint_fall_back_with_what_to_do(fake_colab):
    (fake_colab / "drive").mkdir()
    (fake_colab / "drive" / "stray.txt").write_text("x")
    with pytest.warns(ColabkitWarning, match="already holds files.*mv"):
        storage.mount(notebook_at(fake_colab / "run.ipynb"), platform_name=p.detect().name)


def test_which_notebook_this_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("JPY_SESSION_NAME", "COLABKIT_NOTEBOOK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/exp 1/train (v2).ipynb")  # JupyterLab: the full path
    found = nb.identify(None)
    assert (found.name, found.path, found.folder) == ("train-v2", Path("/home/me/exp 1/train (v2).ipynb"), tmp_path)
    (tmp_path / "exp").mkdir()
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "exp" / "a.ipynb"))
    assert nb.identify(None).folder == tmp_path / "exp"
    monkeypatch.setenv("COLABKIT_NOTEBOOK", "my run")  # the user's word wins
    assert (nb.identify(None).name, nb.identify(None).source) == ("my-run", "COLABKIT_NOTEBOOK")
    monkeypatch.delenv("COLABKIT_NOTEBOOK")
    monkeypatch.delenv("JPY_SESSION_NAME")

    class ZMQInteractiveShell:
        user_ns = {"__vsc_ipynb_file__": str(tmp_path / "exp" / "vs.ipynb")}

    assert (nb.identify(ZMQInteractiveShell()).name, nb.identify(ZMQInteractiveShell()).source) == ("vs", "VS Code")
    ZMQInteractiveShell.user_ns = {}
    assert nb.identify(ZMQInteractiveShell()).source == "unnamed"  # nbclient, papermill

    class TerminalInteractiveShell:
        user_ns = {}

    assert nb.identify(TerminalInteractiveShell()).name == "ipython"
    monkeypatch.setattr(sys.modules["__main__"], "__file__", str(tmp_path / "train.py"), raising=False)
    assert nb.identify(None) == nb.Notebook("train", tmp_path / "train.py", tmp_path, "script")


def test_an_unnamed_notebook_is_told_loudly_where_its_files_go(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    kernel = runtime.Runtime(notebook=nb.Notebook(nb.UNNAMED, None, tmp_path, "unnamed"))
    assert kernel.mount() == tmp_path / "colabkit-storage" / "notebook"
    said = capsys.readouterr().err
    assert "has no name colabkit can read" in said and "COLABKIT_NOTEBOOK" in said
    kernel.mount(to=tmp_path / "chosen")
    assert capsys.readouterr().err == ""  # a folder the user chose needs no word


def test_drive_mount_table_with_escaped_spaces(tmp_path):
    table = tmp_path / "mounts"
    table.write_text("drive /content/my\\040drive fuse.drive rw 0 0\nsda1 /content/drive ext4 rw 0 0\n")
    assert storage.drive_is_mounted("/content/my drive", str(table))
    assert not storage.drive_is_mounted("/content/drive", str(table))
