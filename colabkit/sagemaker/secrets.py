"""Secrets never leave the notebook: an export that would carry one stops, naming cell and line.

Looked for in the cells' Python (after IPython's own transformers turn magics and `!` lines into
Python): AWS access keys and token-like strings in string literals, values read from Colab
Secrets (`userdata.get`), and credentials assigned into os.environ.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from ..errors import ColabkitError
from .capture import Cell

# Shapes of well-known credentials (AWS access key ids; GitHub, Hugging Face, OpenAI, Slack,
# Google API tokens; private key blocks).
TOKEN_SHAPES = {
    "an AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "a GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),
    "a Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),
    "an OpenAI-style API key": re.compile(r"\bsk-[A-Za-z0-9_-]{20,}\b"),
    "a Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"),
    "a Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "a private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
}
CREDENTIAL_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
AWS_SECRET_SHAPE = re.compile(r"^[A-Za-z0-9/+]{40}$")


@dataclass(frozen=True)
class Finding:
    cell: int
    line: int
    what: str
    name: str | None = None  # the variable or key involved, which --allow-secret can name


def _target_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return str(node.slice.value)
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _is_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ" or (
        isinstance(node, ast.Name) and node.id == "environ")


def scan_cell(cell: Cell) -> list[Finding]:
    tree = cell.tree
    if tree is None:
        return []  # it would fail in the job anyway; nothing to leak from text that isn't Python
    findings = []
    assigned_names: dict[int, str | None] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                name = _target_name(target)
                if isinstance(node.value, ast.Constant):
                    assigned_names[id(node.value)] = name
                if (isinstance(target, ast.Subscript) and _is_environ(target.value)
                        and name and CREDENTIAL_NAME.search(name) and isinstance(node.value, ast.Constant)):
                    findings.append(Finding(cell.number, node.lineno, f"a credential set in os.environ[{name!r}]", name))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id == "userdata":
                key = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
                findings.append(Finding(cell.number, node.lineno, "a value read from Colab Secrets (userdata.get)", key))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = assigned_names.get(id(node))
            for what, shape in TOKEN_SHAPES.items():
                if shape.search(node.value):
                    findings.append(Finding(cell.number, node.lineno, what, name))
            if name and CREDENTIAL_NAME.search(name) and AWS_SECRET_SHAPE.match(node.value):
                findings.append(Finding(cell.number, node.lineno, f"a secret-looking value in {name!r}", name))
            key, equals, value = node.value.partition("=")  # %env NAME=value, export NAME=value
            key = key.split()[-1] if key.split() else ""
            if equals and value.strip() and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) and CREDENTIAL_NAME.search(key):
                findings.append(Finding(cell.number, node.lineno, f"a credential set for {key}", key))
    return sorted(set(findings), key=lambda f: (f.line, f.what))


def check(cells: list[Cell] | tuple[Cell, ...], allow: tuple[str, ...] = ()) -> None:
    """Stop the export if any cell carries a secret not named in `allow`."""
    findings = [f for cell in cells for f in scan_cell(cell) if not (f.name and f.name in allow)]
    if not findings:
        return
    first = findings[0]
    lines = "; ".join(f"cell {f.cell}, line {f.line}: {f.what}" for f in findings[:5])
    more = f" (and {len(findings) - 5} more)" if len(findings) > 5 else ""
    raise ColabkitError(
        f"The export stopped: the cells would carry secrets into the job ({lines}{more}). Credentials "
        "must not travel with the code, and the job gets its AWS access from its IAM role. Remove them "
        "from the cells you export; if the job really needs one, export with --allow-secret "
        f"{first.name or 'NAME'} (it still travels in the cell's text).")
