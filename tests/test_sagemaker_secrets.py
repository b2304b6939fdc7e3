"""The secret scanner: what it catches where people write secrets, what it lets through in real
notebooks, and its two figures on the corpora (benchmarks/bench_secrets.py prints them).

No value here is a real key: each is made from a seeded random generator in a real key's shape.
"""

import gzip
import json
import random
import string
from pathlib import Path

import pytest
from helpers.secret_corpus import CATEGORIES, corpus

from colabkit.errors import ColabkitError
from colabkit.sagemaker import secrets
from colabkit.sagemaker.capture import Cell

PUBLIC = Path(__file__).parent / "corpus" / "public-notebooks.jsonl.gz"
rng = random.Random(7)
ALNUM = string.ascii_letters + string.digits


def fake(alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


HF = "hf_" + fake(string.ascii_letters, 34)
PAT = "github_pat_" + fake(ALNUM, 22) + "_" + fake(ALNUM, 59)
HEX40, HEX32 = fake("0123456789abcdef", 40), fake("0123456789abcdef", 32)
AWS_SECRET = fake(ALNUM + "/+", 40)
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIx" + fake(ALNUM, 20) + "." + fake(ALNUM + "-_", 43)
PASSWORD = fake(ALNUM, 8) + "!" + fake(ALNUM, 5)


def findings(*sources):
    return [f for i, source in enumerate(sources, 1) for f in secrets.scan_cell(Cell(i, source))]


@pytest.mark.parametrize("source,line,what", [
    (f"# my old token {HF}\nmodel = train()", 1, "a Hugging Face token"),  # comments
    (f'token = b"{HF}"', 1, "a Hugging Face token"),  # bytes
    (f'print("start"\nGH = "{PAT}"', 2, "a GitHub fine-grained token"),  # a cell that doesn't parse
    (f"pip install git+https://{PAT}@github.com/acme/trainer.git", 1, "a GitHub fine-grained token"),  # automagic
    (f'headers = {{"Authorization": "Bearer {JWT}"}}', 1, "a JSON Web Token"),
    (f'engine = create_engine("postgresql://ml:{PASSWORD}@db.acme.net/runs")', 1, "a password in a URL"),
    (f"!pip install --index-url https://ml:{PASSWORD}@pypi.acme.dev/simple trainer", 1, "a password in a URL"),
    (f'import wandb\nwandb.login(key="{HEX40}")', 2, "a secret-looking value in 'key'"),
    (f"!wandb login {HEX40}", 1, "a Weights & Biases API key"),
    (f'creds = {{"username": "ann", "key": "{HEX32}"}}', 1, "a secret-looking value in 'key'"),  # kaggle.json
    (f's3 = boto3.client("s3", aws_secret_access_key="{AWS_SECRET}")', 1,
     "a secret-looking value in 'aws_secret_access_key'"),
    (f'cfg = {{\n    "aws_secret_access_key":\n        "{AWS_SECRET}",\n}}', 3,
     "a secret-looking value in 'aws_secret_access_key'"),
    (f"%env WANDB_API_KEY {HEX40}", 1, "a credential set with %env WANDB_API_KEY"),
    (f'import os\nos.putenv("KAGGLE_KEY", "{HEX32}")', 2, "a secret-looking value in 'KAGGLE_KEY'"),
    (f'os.environ["DB_PASSWORD"] = "{PASSWORD}"', 1, "a credential set in os.environ['DB_PASSWORD']"),
    (f"%%bash\nexport HF_TOKEN={HF}\npython train.py", 2, "a Hugging Face token"),
    (f"%%writefile config.yaml\nepochs: 3\napi_key: {fake(ALNUM, 40)}", 3, "a secret-looking value in 'api_key'"),
])
def test_secrets_are_found_where_people_write_them(source, line, what):
    [found] = findings(source)
    assert (found.cell, found.line, found.what) == (1, line, what)


@pytest.mark.parametrize("source", [
    "%env TOKENIZERS_PARALLELISM=false\nos.environ['TOKENIZERS_PARALLELISM'] = 'false'",
    "%time tokenized_dataset = dataset.map(tokenize, batched=True)",
    "token_embeddings = model_output[0]\nself.token_mixer = Qwen3_5GatedDeltaNet(cfg, layer_idx)",
    'HF_TOKEN = ""\nOPENAI_API_KEY = "YOUR_API_KEY"\nhf_token = "hf_..."\napi_key = "<your key>"',
    "aws_access_key_id = 'AKIAIOSFODNN7EXAMPLE'\naws_secret_access_key = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'",
    'tokenizer.pad_token = "<|endoftext|>"\nspecial = dict(sep_token="[SEP]", max_new_tokens=256)',
    's3.put_object(Bucket="b", Key="output/llama-3-2-1b-instruct-sft-20251114104310/model/config.json")',
    'client = InferenceClient("meta-llama/Llama-3.1-70B-Instruct")\nsecret_name = "my-sagemaker-secret-2"',
    'url = "postgresql://postgres:postgres@localhost:5432/db"\nuri = f"mongodb://{user}:{password}@host"',
    "key = jax.random.PRNGKey(0)\nkey, subkey = jax.random.split(key)",
    f'tokenizer_revision = "{HEX40}"\nmonkey_patch_id = "{fake(ALNUM, 24)}"',  # "token", "key" inside other words
])
def test_what_real_notebooks_write_is_not_a_secret(source):
    assert findings(source) == []


def test_a_secret_stops_the_export_and_says_the_safe_way():
    cells = [Cell(1, "import os"), Cell(2, f'os.environ["HF_TOKEN"] = "{HF}"')]
    with pytest.raises(ColabkitError) as stopped:
        secrets.check(cells)
    said = str(stopped.value)
    assert "cell 2, line 1: a Hugging Face token (in HF_TOKEN)" in said and "--secret HF_TOKEN" in said
    assert "AWS Secrets Manager" in said and "\n" not in said
    assert secrets.check(cells, allow=("HF_TOKEN",)) == []  # named: the person said it is not a secret


def test_colab_secrets_read_by_any_name_stop_until_given_to_the_job():
    cells = [Cell(1, "from google.colab import userdata as ud"), Cell(2, "import os\ntok = ud.get('HF_TOKEN')"),
             Cell(3, "os.environ['WANDB_API_KEY'] = ud.get('WANDB_API_KEY')")]
    with pytest.raises(ColabkitError) as stopped:
        secrets.check(cells)
    said = str(stopped.value)
    assert "cell 2, line 2 reads HF_TOKEN from Colab Secrets" in said
    assert "--secret HF_TOKEN --secret WANDB_API_KEY" in said and "still travels" not in said
    assert secrets.check(cells, given=("HF_TOKEN", "WANDB_API_KEY")) == []


def test_credentials_read_from_the_environment_are_offered_to_the_job():
    cells = [Cell(1, "import os\nkey = os.environ['OPENAI_API_KEY']\nn = os.getenv('NUM_WORKERS')")]
    assert secrets.check(cells) == [
        "cell 1, line 2 reads OPENAI_API_KEY from the environment: the job has it only when given with "
        "--secret OPENAI_API_KEY"]
    assert secrets.check(cells, given=("OPENAI_API_KEY",)) == []


def test_the_value_of_a_given_secret_is_never_in_a_cell():
    value = "correct-horse-battery"  # no token's shape: found because it is the --secret's value
    cells = [Cell(1, f"# {value}")]
    with pytest.raises(ColabkitError, match="cell 1, line 1: the value of --secret DB_PASS"):
        secrets.check(cells, given=("DB_PASS",), values={"DB_PASS": value})


def test_a_checkpoint_holding_a_token_never_goes(tmp_path):
    folder = tmp_path / "step-3"
    folder.mkdir()
    (folder / "state.json").write_text(json.dumps({"structure": {"objects": {"token": {"value": HF}, "lr": 0.1}}}))
    with pytest.raises(ColabkitError, match=r"step-3 holds a Hugging Face token at structure\.objects\.token\.value"):
        secrets.check_state(folder)
    (folder / "state.json").write_text(json.dumps({"structure": {"objects": {"run": {"value": "plain-words"}}}}))
    secrets.check_state(folder)
    with pytest.raises(ColabkitError, match="the value of --secret RUN_KEY"):
        secrets.check_state(folder, {"RUN_KEY": "plain-words"})


def test_in_a_job_a_tracked_variable_holding_a_given_secret_is_not_saved(tmp_path, monkeypatch, capsys):
    """The job's checkpoints go to S3 as they are written (/opt/ml/checkpoints): a notebook that
    reads its token into a tracked variable, as a string or inside a pickled object, keeps it out."""
    import numpy as np

    from colabkit.checkpoint.checkpointer import Checkpointer

    value = CATEGORIES["hugging-face-token"][0](random.Random(5))  # a look-alike
    monkeypatch.setenv("COLABKIT_SECRETS", "HF_TOKEN")
    monkeypatch.setenv("HF_TOKEN", value)
    checkpointer = Checkpointer(to=tmp_path, w=np.ones(3), token=value, run={"login": {value}, "lr": 0.1})
    checkpointer.save(wait=True)
    checkpointer.close()
    saved = b"".join(path.read_bytes() for path in tmp_path.rglob("*") if path.is_file())
    assert value.encode() not in saved and b"tensors" in saved  # w is saved
    said = capsys.readouterr().err
    assert "not saved: token (it holds the value of the secret HF_TOKEN" in said and "not saved: run (" in said


# -- the two figures (benchmarks/bench_secrets.py prints them for the README) ----------------------
def caught(planted) -> bool:
    cells = [Cell(i, source) for i, source in enumerate(planted.cells, 1)]
    return any(f.cell == len(cells) for cell in cells for f in secrets.scan_cell(cell))


def test_recall_on_look_alike_secrets_is_at_least_95_percent():
    planted = corpus()
    assert len(planted) >= 150 and len(CATEGORIES) >= 15
    missed = [p for p in planted if not caught(p)]
    assert 1 - len(missed) / len(planted) >= 0.95, [(p.category, p.placement) for p in missed]
    per_category = {c: sum(caught(p) for p in planted if p.category == c) for c in CATEGORIES}
    assert all(n > 0 for n in per_category.values()), per_category


def test_false_refusals_on_real_public_notebooks_are_at_most_0_2_percent():
    notebooks = [json.loads(line) for line in gzip.open(PUBLIC, "rt", encoding="utf-8")]
    assert len(notebooks) >= 1000 and all({"repo", "path", "commit", "licence"} <= set(n) for n in notebooks)
    refused = []
    for notebook in notebooks:
        cells = [Cell(i, source) for i, source in enumerate(notebook["cells"], 1)]
        found = [f for cell in cells for f in secrets.scan_cell(cell)]
        if found:
            refused.append((notebook["repo"], notebook["path"], str(found[0])))
    assert len(refused) / len(notebooks) <= 0.002, refused

