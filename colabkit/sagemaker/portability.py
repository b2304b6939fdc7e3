"""What in the cells behaves differently in a job, found before anything is sent.

Each use of google.colab is either given a stand-in in the job (colab_standin.py) or fails there
at once; each interactive call (input, getpass, notebook_login, a login or init that prompts)
fails there at once, since a job has nobody to answer. The export says each one, with its cell
and line, what happens in the job and what to do, before it uploads or runs anything.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

# google.colab calls the job's stand-in does something useful for: what happens in the job.
STAND_INS = {
    "drive.mount": "the Drive files the cells name are uploaded with the job and appear at the same path",
    "drive.flush_and_unmount": "nothing to do",
    "files.download": "the file comes back with the job's results",
    "userdata.get": "the value of the secret of that name given with --secret, which the job reads at its start",
    "runtime.unassign": "nothing: the job ends when its cells end",
    "output": "nothing to show in a job's log",
}
# Calls that wait for a person: what to do instead.
INTERACTIVE = {
    "input": "give the value in the code",
    "getpass": "give the value to the job with --secret NAME and read it from os.environ[NAME] instead",
    "notebook_login": "export with --secret HF_TOKEN and leave this call out: huggingface_hub reads HF_TOKEN from the "
                      "environment",
    "files.upload": "put the files on Drive and read them by their /content/drive/... path",
    "auth.authenticate_user": "give the job's IAM role access to the data, or copy the data to S3 or Drive",
}
# Logins that prompt unless they are given their key.
PROMPTS_WITHOUT = {"login": ("key", "token", "api_key"), "init": ("api_key", "key")}
# The environment variable each login reads its key from: given with --secret, the login doesn't prompt.
LOGIN_MODULES = {"wandb": "WANDB_API_KEY", "comet_ml": "COMET_API_KEY", "huggingface_hub": "HF_TOKEN",
                 "neptune": "NEPTUNE_API_TOKEN", "mlflow": "MLFLOW_TRACKING_TOKEN", "clearml": "CLEARML_API_SECRET_KEY"}


@dataclass(frozen=True)
class Finding:
    cell: int
    line: int
    call: str  # as the cells spell it, e.g. "files.upload()"
    in_job: str  # what happens in the job
    todo: str | None = None  # what to do; None when the stand-in does the job's equivalent

    def __str__(self) -> str:
        text = f"cell {self.cell}, line {self.line}: {self.call}: {self.in_job}"
        return text + (f". {self.todo[0].upper()}{self.todo[1:]}." if self.todo else "")

    @property
    def fails(self) -> bool:
        return self.todo is not None


def colab_names(tree: ast.AST) -> dict[str, str]:
    """Local name -> google.colab API it stands for ("files" -> "files", "gdrive" -> "drive")."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "google.colab":
            names.update({alias.asname or alias.name: alias.name for alias in node.names})
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("google.colab."):
            api = node.module.split(".")[2]
            names.update({alias.asname or alias.name: f"{api}.{alias.name}" for alias in node.names})
        elif isinstance(node, ast.Import):
            for alias in node.names:  # `import google.colab` is used by its full dotted name
                if alias.asname and (alias.name == "google.colab" or alias.name.startswith("google.colab.")):
                    names[alias.asname] = alias.name[len("google.colab."):]
    return names


def dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        owner = dotted(node.value)
        return f"{owner}.{node.attr}" if owner else None
    return None


def colab_api(called: str, names: dict[str, str]) -> str | None:
    """The google.colab API a call names ("files.upload"), or None."""
    if called.startswith("google.colab."):
        return called[len("google.colab."):]
    head, _, rest = called.partition(".")
    if head not in names:
        return None
    api = names[head]
    if not api:  # import google.colab as gc; gc.files.upload()
        return rest or None
    return f"{api}.{rest}" if rest else api


def findings(cells, secrets: tuple[str, ...] = (), gpu: bool = True) -> list[Finding]:
    """What behaves differently in the job, given the secrets named with --secret and whether the
    job's instance has a GPU."""
    found = []
    names: dict[str, str] = {}
    for cell in cells:
        if cell.tree is None:
            found.append(_syntax_error(cell))
            continue
        names.update(colab_names(cell.tree))
        for node in ast.walk(cell.tree):
            if not isinstance(node, ast.Call):
                continue
            line = cell.raw_line(node.lineno)
            called = dotted(node.func)
            finding = _finding(cell.number, line, node, called, names, secrets) if called is not None else None
            if finding is None and not gpu:
                finding = _needs_gpu(cell.number, line, node)
            if finding is not None:
                found.append(finding)
    return sorted(found, key=lambda f: (f.cell, f.line))


def _needs_gpu(cell: int, line: int, node: ast.Call) -> Finding | None:
    """`!nvidia-smi` on an instance without a GPU: the command fails, and a failed command fails the job."""
    func = node.func
    if not (isinstance(func, ast.Attribute) and func.attr == "system" and node.args
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        return None
    command = node.args[0].value.strip()
    if not command.startswith("nvidia-smi") or "||" in command:
        return None
    return Finding(cell, line, f"!{command}", "the instance has no GPU, so nvidia-smi fails, and a failed command "
                   "fails the job there", "choose a GPU instance, remove the line, or end it with `|| true`")


def _syntax_error(cell) -> Finding:
    try:
        compile(cell.python, f"cell {cell.number}", "exec")
        line, why = 1, "it doesn't parse"
    except SyntaxError as exc:
        line, why = exc.lineno or 1, exc.msg
    return Finding(cell.number, line, "the cell", f"is not valid Python after IPython's transforms ({why}): it fails "
                   "in the job as it would here", "fix the cell, or leave it out of the cells you export")


def _finding(cell: int, line: int, node: ast.Call, called: str, names: dict[str, str],
             secrets: tuple[str, ...] = ()) -> Finding | None:
    spelled = f"{called}()"
    api = colab_api(called, names)
    if api is not None:
        if api in INTERACTIVE:
            return Finding(cell, line, spelled, "waits for someone at the browser: in the job it fails at once",
                           INTERACTIVE[api])
        stand_in = STAND_INS.get(api) or STAND_INS.get(api.split(".")[0])
        if stand_in:
            return Finding(cell, line, spelled, f"in the job, {stand_in}")
        return Finding(cell, line, spelled, f"google.colab's {api} has no equivalent in a job: it fails there "
                       "at once", "remove it from the cells you export, or skip it when TRAINING_JOB_NAME is set")
    last = called.split(".")[-1]
    if called in ("input", "getpass", "getpass.getpass") or last == "notebook_login":
        key = "getpass" if last == "getpass" else last
        return Finding(cell, line, spelled, "waits for someone to type: in the job it fails at once",
                       INTERACTIVE[key])
    module = called.split(".")[0]
    if module in LOGIN_MODULES and last in PROMPTS_WITHOUT and LOGIN_MODULES[module] not in secrets:
        given = {k.arg for k in node.keywords} | ({"positional"} if node.args else set())
        if not given & set(PROMPTS_WITHOUT[last]) and "positional" not in given:
            return Finding(cell, line, spelled, "asks for an API key when none is configured: in the job it "
                           "fails at once", f"export with --secret {LOGIN_MODULES[module]} ({module} reads it from "
                           "the environment)")
    return None
