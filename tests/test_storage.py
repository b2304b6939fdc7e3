import os

import pytest

from colabkit import platform as p
from colabkit import storage
from colabkit.errors import ColabkitError, ColabkitWarning


def on(name, tmp_path):
    return p.Platform(name, None, "", None, 0.0)


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(storage, "_current", None)


def test_local_default_and_to(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.mount(platform=on(p.JUPYTER, tmp_path)) == tmp_path / "colabkit-storage"
    assert storage.current() == tmp_path / "colabkit-storage"
    target = tmp_path / "runs" / "a"
    assert storage.mount(to=target) == target and target.is_dir()


def test_kaggle_and_sagemaker_job(tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "KAGGLE_WORKING", str(tmp_path / "kaggle/working"))
    assert storage.mount(platform=on(p.KAGGLE, tmp_path)) == tmp_path / "kaggle/working"
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path / "opt/ml"))
    assert storage.mount(platform=on(p.SAGEMAKER_JOB, tmp_path)) == tmp_path / "opt/ml/checkpoints"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file permissions")
def test_unwritable_folder_is_a_clear_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(ColabkitError, match="cannot write to .*%mount --to PATH"):
        storage.mount(to=locked / "x")


def test_unwritable_folder_is_a_clear_error_even_as_root(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ColabkitError, match="cannot write to .*%mount --to PATH"):
        storage.mount(to=blocker / "x")


def test_colab_mounts_drive_in_the_foreground_and_names_the_notebook_folder(fake_colab):
    from google.colab import _message, drive

    _message.FRONTEND["get_ipynb"] = lambda request: {
        "ipynb": {"metadata": {"colab": {"name": "My Training Run.ipynb"}}, "cells": []}}
    colab = p.detect()
    assert colab.name == p.COLAB
    path = storage.mount(platform=colab)
    assert path == fake_colab / "drive/MyDrive/colabkit/My-Training-Run"
    assert path.is_dir()
    assert drive.CALLS == [{"mountpoint": str(fake_colab / "drive"), "force_remount": False,
                            "timeout_ms": 120000, "readonly": False}]
    assert storage.drive_is_mounted(str(fake_colab / "drive"))
    # Mounted already (per the mount table): no second consent prompt.
    storage.mount(platform=colab)
    assert len(drive.CALLS) == 1


def test_colabs_own_check_would_miss_the_mount_but_ours_does_not(fake_colab, capsys):
    from google.colab import drive

    drive.mount(str(fake_colab / "drive"))
    # Colab's check looks for "My Drive": a second drive.mount would try again and fail on files.
    with pytest.raises(ValueError, match="already contain files"):
        drive.mount(str(fake_colab / "drive"))
    assert storage.mount(platform=p.detect()).parent.parent == fake_colab / "drive/MyDrive"


@pytest.mark.parametrize("scenario,says", [
    ("timeout", "did not answer in time"),
    ("denied", "not granted in the browser"),
    ("enterprise", "Colab Enterprise"),
])
def test_drive_failures_fall_back_to_local_with_a_warning(fake_colab, scenario, says):
    from google.colab import drive

    drive.SCENARIO = scenario
    with pytest.warns(ColabkitWarning, match=says) as caught:
        path = storage.mount(platform=p.detect())
    assert path == fake_colab.parent / "colabkit-storage" and path.is_dir()
    assert "deleted when the runtime ends" in str(caught[0].message)


def test_files_in_the_mountpoint_fall_back_with_what_to_do(fake_colab):
    (fake_colab / "drive").mkdir()
    (fake_colab / "drive" / "stray.txt").write_text("x")
    with pytest.warns(ColabkitWarning, match="already holds files.*mv"):
        storage.mount(platform=p.detect())


def test_notebook_name_without_colab(monkeypatch):
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/exp 1/train (v2).ipynb")
    assert storage.notebook_name(p.JUPYTER) == "train-v2"
    monkeypatch.delenv("JPY_SESSION_NAME")
    monkeypatch.delenv("COLABKIT_NOTEBOOK", raising=False)
    assert storage.notebook_name(p.JUPYTER) == "notebook"


def test_drive_mount_table_with_escaped_spaces(tmp_path):
    table = tmp_path / "mounts"
    table.write_text("drive /content/my\\040drive fuse.drive rw 0 0\nsda1 /content/drive ext4 rw 0 0\n")
    assert storage.drive_is_mounted("/content/my drive", str(table))
    assert not storage.drive_is_mounted("/content/drive", str(table))
