"""The export on real public notebooks people run on Colab (tests/corpus: each one's source,
commit and licence in index.json), not on notebooks written here.

Every notebook: the dry run exports it or refuses with one clear paragraph; each exported cell
is valid Python after IPython's transforms or the export says it isn't; requirements.txt parses
as pip requirements; each google.colab use and interactive call is stood in for or reported.
The ones that run offline on small data run through SageMaker's real container toolkit, and on
this machine with --local, and both agree; what they write comes back.
"""

import json
import os
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from colabkit.errors import ColabkitError
from colabkit.notebook import from_file
from colabkit.runtime import Runtime
from colabkit.sagemaker import capture, export

CORPUS = Path(__file__).parent / "corpus"
INDEX = json.loads((CORPUS / "index.json").read_text())
REPORT = Path(__file__).resolve().parent.parent / "artifacts" / "corpus-report.json"
COLAB_CALL = re.compile(r"\b(drive\.mount|files\.upload|files\.download|userdata\.get|runtime\.unassign|"
                        r"auth\.authenticate_user)\(")
INTERACTIVE_CALL = re.compile(r"(?<![\w.])(input|getpass|notebook_login)\(")
seen: dict[str, str] = {}  # notebook -> "unchanged", "warned" or "refused", for the report


def kernel_for(path: Path, storage: Path, shell=None) -> Runtime:
    kernel = Runtime(shell, notebook=from_file(path))
    kernel.mount(to=storage)
    return kernel


@pytest.fixture
def in_kernel(shell):
    """Runtimes for notebook files, exported as from their own kernel (its versions pin the
    requirements); closed after the test, so their cell hooks leave the shared shell."""
    made = []

    def make(path, storage):
        made.append(kernel_for(path, storage, shell))
        return made[-1]

    yield make
    for kernel in made:
        kernel.close()


def code_lines(cell):
    """(line number, text) of a cell's code lines, as a person reads them: not comments, not the
    body of a cell magic (a %%writefile'd script or a %%bash body is not the notebook's Python)."""
    if cell.source.lstrip().startswith("%%"):
        return []
    return [(n, line) for n, line in enumerate(cell.source.splitlines(), 1) if not line.strip().startswith("#")]


@pytest.mark.parametrize("entry", INDEX, ids=[Path(e["file"]).stem for e in INDEX])
def test_every_corpus_notebook_exports_or_is_refused_clearly(entry, tmp_path):
    path = CORPUS / entry["file"]
    captured = capture.read_notebook(path)
    lines = []
    try:
        outcome = export.run(export.Options("ml.g5.xlarge", dry_run=True, region="us-east-1"), captured,
                             kernel_for(path, tmp_path / "storage"), echo=lines.append)
    except ColabkitError as refused:
        text = str(refused)
        assert "\n" not in text and re.search(r"cell \d+", text), text  # one paragraph, naming where
        seen[entry["file"]] = "refused"
        return
    log = "\n".join(lines)
    assert outcome.mode == export.DRY_RUN and outcome.request["TrainingJobName"].startswith("colabkit-")
    for cell in captured.cells:
        if cell.tree is None:  # the export said so, naming the cell
            assert f"cell {cell.number}, line" in log and "is not valid Python" in log
    requirements = (outcome.export.source.path / "requirements.txt").read_text().splitlines()
    assert requirements[0].startswith("./colabkit-")
    for line in requirements[1:]:
        Requirement(line)
    # Found here by text, independently of the export's own reading of the code: each use is reported.
    colab = any("google.colab" in cell.source for cell in captured.cells)
    for cell in captured.cells:
        for number, line in code_lines(cell):
            calls = [m.group(1) for m in INTERACTIVE_CALL.finditer(line)]
            calls += [m.group(1) for m in COLAB_CALL.finditer(line)] if colab else []
            for call in calls:
                assert re.search(rf"cell {cell.number}, line {number}: [\w.]*{re.escape(call)}\(\)", log), \
                    (entry["file"], cell.number, number, line)
    seen[entry["file"]] = "warned" if "WARNING" in log else "unchanged"


def test_the_corpus_report():
    """How many of the corpus would run unchanged; kept in artifacts/ for the notes."""
    if len(seen) < len(INDEX):
        pytest.skip("runs after the whole corpus")
    counts = {kind: sorted(name for name, got in seen.items() if got == kind) for kind in ("unchanged", "warned", "refused")}
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps({"notebooks": len(seen), **{k: len(v) for k, v in counts.items()}, **counts}, indent=1))
    assert len(seen) >= 20


OFFLINE = ["pytorch__tutorials__polynomial_autograd", "mrdbourke__pytorch-deep-learning__01_pytorch_workflow",
           "ageron__handson-ml3__04_training_linear_models"]


def submit_and_run(path, in_kernel, aws, toolkit, tmp_path):
    """Submit the notebook to moto from a kernel, and play SageMaker's part with the real toolkit."""
    kernel = in_kernel(path, tmp_path / "storage")
    lines = []
    outcome = export.run(export.Options("ml.m5.xlarge"), capture.read_notebook(path), kernel, echo=lines.append)
    described = aws.client("sagemaker").describe_training_job(TrainingJobName=outcome.job.name)
    done = aws.run_in_container(described, outcome.request, tmp_path / "opt-ml", toolkit,
                                os.environ["AWS_ENDPOINT_URL"], timeout=240)
    return outcome, done, lines


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_corpus_notebooks_run_in_the_toolkit_and_their_files_come_back(name, in_kernel, aws, toolkit,
                                                                                tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    path = notebooks / f"{name}.ipynb"
    path.write_bytes((CORPUS / "notebooks" / f"{name}.ipynb").read_bytes())
    outcome, done, lines = submit_and_run(path, in_kernel, aws, toolkit, tmp_path)
    log = done.stdout + done.stderr
    assert done.returncode == 0 and (tmp_path / "opt-ml" / "output" / "success").exists(), log[-3000:]
    assert "\x1b[" not in log
    followed = []
    export.follow(outcome.job, poll=0, echo=followed.append, in_notebook=False)
    written = sorted(p.relative_to(notebooks).as_posix() for p in notebooks.rglob("*")
                     if p.is_file() and "colabkit-storage" not in p.parts and p != path)
    expected = {"pytorch__tutorials__polynomial_autograd": [],
                "mrdbourke__pytorch-deep-learning__01_pytorch_workflow": ["models/01_pytorch_workflow_model_0.pth",
                                                                          "models/01_pytorch_workflow_model_1.pth"],
                "ageron__handson-ml3__04_training_linear_models": "images/training_linear_models/"}[name]
    if isinstance(expected, str):
        assert written and all(w.startswith(expected) and w.endswith(".png") for w in written), written
    else:
        assert written == expected, written
    if written:
        assert any("the job's files are in" in line for line in followed), followed


def test_a_failing_command_ends_the_container_job_in_failure_naming_it(in_kernel, aws, toolkit, tmp_path):
    path = tmp_path / "broken.ipynb"
    import nbformat

    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in (
        "print('preparing')", "!python does_not_exist.py", "print('trained')")]), path)
    outcome, done, _ = submit_and_run(path, in_kernel, aws, toolkit, tmp_path)
    assert done.returncode != 0 and "trained" not in done.stdout
    failure = (tmp_path / "opt-ml" / "output" / "failure").read_text()
    assert failure.startswith("ExecuteUserScriptError:")
    assert "cell 2, line 1 failed with CommandFailed: the command `!python does_not_exist.py` exited with status 2" \
        in done.stdout + done.stderr


@pytest.mark.parametrize("name,succeeds", [("pytorch__tutorials__polynomial_autograd", True), ("broken", False)])
def test_local_and_the_toolkit_agree(name, succeeds, in_kernel, aws, toolkit, tmp_path):
    path = tmp_path / f"{name}.ipynb"
    if name == "broken":
        import nbformat

        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("!pip install -r missing.txt")]),
                       path)
    else:
        path.write_bytes((CORPUS / "notebooks" / f"{name}.ipynb").read_bytes())
    _, done, _ = submit_and_run(path, in_kernel, aws, toolkit, tmp_path)
    here = export.run(export.Options("ml.m5.xlarge", local=True), capture.read_notebook(path),
                      in_kernel(path, tmp_path / "storage"), echo=lambda line: None)
    assert (done.returncode == 0) == here.succeeded == succeeds
