"""Shared test set-up: the fakes folder on the path, and fresh fake Colab state per test."""

import sys
from pathlib import Path

import pytest

FAKES = Path(__file__).parent / "fakes"
sys.path.insert(0, str(FAKES))


AWS_SETTINGS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_DEFAULT_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL",
                "COLABKIT_SAGEMAKER_ROLE")


@pytest.fixture(autouse=True)
def no_aws(request, tmp_path_factory, monkeypatch):
    """No test reaches the developer's AWS account: no credentials, profiles, instance metadata or
    colabkit config; tests that talk to AWS start their own server (tests/helpers/aws.py). Only
    tests marked `aws` (run with `pytest -m aws`) see the real settings."""
    if request.node.get_closest_marker("aws"):
        return
    empty = tmp_path_factory.getbasetemp() / "no-aws"
    for name in AWS_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("COLABKIT_CONFIG", str(empty / "colabkit.json"))


@pytest.fixture
def fake_colab(tmp_path, monkeypatch):
    """A Colab-like machine: COLAB_RELEASE_TAG set, /content/drive under tmp, an empty mount table."""
    from google.colab import _message, drive, userdata

    from colabkit import storage

    content = tmp_path / "content"
    content.mkdir()
    mounts = tmp_path / "mounts"
    mounts.write_text("overlay / overlay rw,relatime 0 0\n")
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab-20261120-060000-RC00")
    monkeypatch.setattr(storage, "DRIVE_MOUNTPOINT", str(content / "drive"))
    monkeypatch.setattr(storage, "MOUNTS_FILE", str(mounts))
    monkeypatch.setattr(drive, "MOUNTS_FILE", str(mounts))
    monkeypatch.setattr(drive, "SCENARIO", "ok")
    drive.CALLS.clear()
    _message.SENT.clear()
    _message.FRONTEND.clear()
    _message.FRONTEND["GetSecret"] = userdata._answer
    monkeypatch.chdir(tmp_path)
    return content


@pytest.fixture(autouse=True)
def own_history_folder(tmp_path_factory, monkeypatch):
    """Each test's watches keep their history files apart (they are keyed by machine and notebook,
    which every test here shares)."""
    from colabkit import history

    folder = tmp_path_factory.mktemp("history")
    monkeypatch.setattr(history, "folder", lambda: folder)
    return folder


@pytest.fixture(autouse=True)
def fresh_runtime():
    """Each test starts with no colabkit Runtime (no storage, watch or checkpoints) and leaves none."""
    from colabkit import runtime

    runtime.close()
    yield
    runtime.close()


@pytest.fixture
def nvml():
    """Installs fake_nvml for one test and always puts the real pynvml back."""
    import fake_nvml

    yield fake_nvml
    fake_nvml.uninstall()


@pytest.fixture
def shell(tmp_path, monkeypatch):
    """A real IPython shell with colabkit loaded, in a fresh folder, nothing mounted yet."""
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.chdir(tmp_path)
    ip = InteractiveShell.instance()
    ip.reset(new_session=True)  # the instance is shared: no variables or In[] from an earlier test
    ip.run_line_magic("load_ext", "colabkit")
    yield ip
    ip.run_line_magic("unload_ext", "colabkit")


def run(ip, cell, store_history=False):
    """Run a cell as a user would; returns IPython's result and what it printed. An export needs
    store_history=True: a kernel stores every cell's raw text in the history before it runs it."""
    from IPython.utils.capture import capture_output

    with capture_output() as out:
        result = ip.run_cell(cell, store_history=store_history)
    return result, out


@pytest.fixture(scope="session")
def moto_url():
    """moto's server on 127.0.0.1 for the whole run; each test that uses `aws` gets it reset."""
    pytest.importorskip("moto.server", reason="moto is in the test extra: pip install -e '.[test]'")
    from helpers.aws import moto_server

    with moto_server() as url:
        yield url


@pytest.fixture
def aws(moto_url, monkeypatch):
    """boto3 pointed at a freshly reset moto, with dummy credentials and a SageMaker role."""
    from helpers import aws as helper

    helper.reset(moto_url)
    for name, value in helper.environment(moto_url).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("COLABKIT_SAGEMAKER_ROLE", helper.ROLE)
    return helper


@pytest.fixture
def toolkit():
    """SageMaker's container toolkit in the venv that tests/run makes (it stands for the job's image)."""
    import os
    import subprocess

    venv = os.environ.get("COLABKIT_TOOLKIT_VENV")
    if not venv:
        pytest.skip("COLABKIT_TOOLKIT_VENV is not set: run the suite with `bash tests/run`, which makes it")
    venv = Path(venv)
    # colabkit must come from the job's own wheel, as in a fresh container.
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-q", "-y", "colabkit"],
                   capture_output=True, check=False)
    return venv
