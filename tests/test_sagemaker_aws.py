"""The one test against real AWS: a tiny CPU job submitted, followed to its end and fetched.
It costs a few cents, so it runs only when asked (`pytest -m aws`) and when AWS credentials and
COLABKIT_SAGEMAKER_ROLE are set; otherwise it is skipped.
"""

import os

import pytest

pytestmark = pytest.mark.aws


@pytest.fixture
def real_aws():
    import boto3

    if boto3.Session().get_credentials() is None or not os.environ.get("COLABKIT_SAGEMAKER_ROLE"):
        pytest.skip("needs AWS credentials and COLABKIT_SAGEMAKER_ROLE")


def test_a_tiny_job_runs_on_sagemaker_and_comes_back(real_aws, tmp_path):
    import nbformat

    import colabkit

    notebook = tmp_path / "tiny.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("%load_ext colabkit"),
        nbformat.v4.new_code_cell("import os\nopen(os.path.join(os.environ['SM_MODEL_DIR'], 'done.txt'), 'w')"
                                  ".write('ok')"),
    ]), notebook)
    job = colabkit.to_sagemaker("ml.m5.large", notebook=str(notebook), on_demand=True, max_run="15m", wait=True)
    assert job.status == "Completed", job.summary()
    assert (job.folder / "model" / "done.txt").read_text() == "ok"
