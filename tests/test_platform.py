import pytest

from colabkit import platform as p
from colabkit.errors import ColabkitError


def detect(tmp_path, env, **kw):
    return p.detect(environ=env, root=str(tmp_path), started=1000.0, **kw)


def test_colab_from_its_release_tag_and_from_its_hostname_file(tmp_path):
    assert detect(tmp_path, {"COLAB_RELEASE_TAG": "r"}).name == p.COLAB
    (tmp_path / "var/colab").mkdir(parents=True)
    (tmp_path / "var/colab/hostname").write_text("colab-vm")
    colab = detect(tmp_path, {})
    assert colab.name == p.COLAB and colab.tier == "free"
    assert colab.session_cap == 12 * 3600 and "12 h" in colab.session_cap_source


def test_colab_tiers_change_the_cap(tmp_path):
    assert detect(tmp_path, {"COLAB_RELEASE_TAG": "r"}, tier="pro").session_cap == 24 * 3600
    assert detect(tmp_path, {"COLAB_RELEASE_TAG": "r", "COLABKIT_TIER": "Pro+"}).tier == "pro+"
    with pytest.raises(ColabkitError, match="free, pro, pro\\+"):
        detect(tmp_path, {"COLAB_RELEASE_TAG": "r"}, tier="gold")
    assert detect(tmp_path, {"COLAB_RELEASE_TAG": "r"}, tier="pro").label == "Google Colab (pro)"
    assert detect(tmp_path, {}, tier="pro").tier is None  # tiers are Colab's alone


def test_kaggle_gpu_and_tpu(tmp_path):
    kaggle = detect(tmp_path, {"KAGGLE_KERNEL_RUN_TYPE": "Interactive"})
    assert (kaggle.name, kaggle.session_cap) == (p.KAGGLE, 12 * 3600)
    tpu = detect(tmp_path, {"KAGGLE_KERNEL_RUN_TYPE": "Batch", "TPU_ACCELERATOR_TYPE": "v3-8"})
    assert tpu.session_cap == 9 * 3600 and tpu.accelerator == "TPU (v3-8)"


def test_studio_lab_and_sagemaker_job(tmp_path):
    lab = detect(tmp_path, {"USER": "studio-lab-user"})
    assert (lab.name, lab.session_cap) == (p.STUDIOLAB, 4 * 3600)
    (tmp_path / "opt/ml/input/config").mkdir(parents=True)
    job = detect(tmp_path, {"COLAB_RELEASE_TAG": "r"})  # a job built from a Colab notebook is a job
    assert job.name == p.SAGEMAKER_JOB and job.session_cap is None
    base = tmp_path / "sm"
    (base / "input/config").mkdir(parents=True)
    assert detect(tmp_path / "elsewhere", {"SAGEMAKER_BASE_DIR": str(base)}).name == p.SAGEMAKER_JOB


def test_jupyter_terminal_and_plain_python_from_the_shell(tmp_path):
    class ZMQInteractiveShell: ...
    class TerminalInteractiveShell: ...
    assert detect(tmp_path, {}, shell=ZMQInteractiveShell()).name == p.JUPYTER
    assert detect(tmp_path, {}, shell=TerminalInteractiveShell()).name == p.TERMINAL
    assert detect(tmp_path, {}, shell=object()).name == p.PYTHON  # an embedded or plain shell
    assert p.kind_of_shell(None) == p.PYTHON


def test_idle_limit_is_off_unless_set(tmp_path):
    assert detect(tmp_path, {"COLAB_RELEASE_TAG": "r"}).idle_timeout is None
    assert detect(tmp_path, {"COLABKIT_IDLE_TIMEOUT": "90m"}).idle_timeout == 5400
    assert detect(tmp_path, {}, idle_timeout="0").idle_timeout is None
    with pytest.raises(ColabkitError):
        detect(tmp_path, {}, idle_timeout="soon")


def test_the_session_clock_is_the_machines_on_capped_platforms_and_the_kernels_elsewhere():
    import time

    import psutil

    vm, kernel = psutil.Process(1).create_time(), psutil.Process().create_time()
    assert p.session_start(p.COLAB) == p.session_start(p.KAGGLE) == vm  # a kernel restart gives no time back
    assert p.session_start(p.JUPYTER) == kernel and vm <= kernel <= time.time()


def test_time_left_and_description(tmp_path):
    colab = detect(tmp_path, {"COLAB_RELEASE_TAG": "r"})
    now = 1000.0 + 11 * 3600 + 30 * 60
    assert colab.session_age(now) == 11.5 * 3600
    assert colab.time_left(now) == 1800
    text = colab.describe(now)
    for expected in ("Google Colab (free)", "12h 00m", "Colab FAQ", "11h 30m", "30m 00s", "not set"):
        assert expected in text
    assert detect(tmp_path, {}).time_left(now) is None
