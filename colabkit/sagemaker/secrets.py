"""Secrets never leave the notebook in its text: an export that would carry one stops, naming cell
and line, and says how to give the job the value the safe way (--secret NAME, job_secrets.py).

Two passes over every cell:
- Its raw text, as the person typed it (comments, bytes, magics, `!` commands, the bodies of
  %%bash and %%writefile, cells that don't parse): the shapes of well-known tokens, passwords in
  URLs, tokens as a URL's user, `NAME=value` / `NAME: value` lines whose name is a credential's,
  `%env NAME value` and `wandb login KEY`.
- Its Python (after IPython's own transforms), when it parses: literals given to credential-named
  variables, attributes, keyword arguments and dict keys, environment writes (os.environ[...],
  os.environ.update/setdefault, os.putenv), and keys given to login calls.

Names are matched by their parts (`hf_token`, `apiKey`, `AWS_SECRET_ACCESS_KEY`), so
TOKENIZERS_PARALLELISM or `token_embeddings` are not credentials; values must look like secrets
(long, random, letters and digits), and placeholders ("", "hf_...", "YOUR_API_KEY", "<token>",
the AWS documentation's example keys, xxxx) are recognised as such.

What the cells read by name is not in their text, so it is not refused: a read from Colab Secrets
(`userdata.get`, however imported) stops the export until the job is given that name with
--secret, since the job has no Colab Secrets; a credential read from the environment is said, with
the same offer.
"""

from __future__ import annotations

import ast
import bisect
import functools
import json
import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..errors import ColabkitError
from .capture import Cell
from .portability import colab_api, colab_names, dotted

# The shapes of well-known credentials (after gitleaks' rules), by what a person calls them, each
# with the words that must be in a text for its shape to be looked for there.
TOKEN_SHAPES = {
    "an AWS access key id": (("AKIA", "ASIA", "ABIA", "ACCA"), r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"),
    "a GitHub token": (("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), r"\bgh[pousr]_[0-9A-Za-z]{36,}\b"),
    "a GitHub fine-grained token": (("github_pat_",), r"\bgithub_pat_[0-9A-Za-z_]{60,}"),
    "a GitLab token": (("glpat-", "gldt-", "glptt-", "glrt-", "glcbt-"),
                       r"\bgl(?:pat|dt|ptt|rt|cbt)-[0-9A-Za-z_-]{20,}"),
    "a Hugging Face token": (("hf_", "api_org_"), r"\b(?:hf|api_org)_[A-Za-z0-9]{30,}\b"),
    "an OpenAI API key": (("sk-",), r"\bsk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,}"
                                    r"|\bsk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}\b|\bsk-[A-Za-z0-9]{48}\b"),
    "an Anthropic API key": (("sk-ant-",), r"\bsk-ant-(?:api|admin|oat|ort)\d\d-[A-Za-z0-9_-]{40,}"),
    "a Google API key": (("AIza",), r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"),
    "a Google OAuth client secret": (("GOCSPX-",), r"\bGOCSPX-[0-9A-Za-z_-]{28}(?![0-9A-Za-z_-])"),
    "a Slack token": (("xox",), r"\bxox[abposer]-[0-9A-Za-z-]{10,}"),
    "a Slack app token": (("xapp-",), r"\bxapp-\d-[A-Z0-9]+-\d+-[a-z0-9]+"),
    "a Slack webhook": (("hooks.slack.com",),
                        r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/+-]{30,}"),
    "a Discord webhook": (("/api/webhooks/",), r"discord(?:app)?\.com/api/webhooks/\d{15,25}/[A-Za-z0-9_-]{50,}"),
    "a Stripe key": (("_live_", "_test_", "_prod_"), r"\b(?:sk|rk)_(?:live|test|prod)_[0-9A-Za-z]{20,}\b"),
    "a SendGrid key": (("SG.",), r"\bSG\.[A-Za-z0-9_-]{20,24}\.[A-Za-z0-9_-]{39,50}\b"),
    "a Twilio key": (("SK",), r"\bSK[0-9a-f]{32}\b"),
    "a Telegram bot token": ((":AA",), r"\b\d{8,10}:AA[0-9A-Za-z_-]{33}(?![0-9A-Za-z_-])"),
    "a JSON Web Token": (("eyJ",), r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    "a private key": (("PRIVATE KEY",), r"-----BEGIN[A-Z0-9 ]{0,30} PRIVATE KEY(?: BLOCK)?-----(?:\\[nr]|[\s\"'+,])*"
                                        r"(?:[A-Za-z0-9+/=:-]|\\[nr]|[\s\"'+,]){60,}"),
    "an npm token": (("npm_",), r"\bnpm_[A-Za-z0-9]{36}\b"),
    "a PyPI token": (("pypi-AgEI",), r"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}"),
    "a Databricks token": (("dapi",), r"\bdapi[a-f0-9]{32}(?:-\d)?\b"),
    "a DigitalOcean token": (("_v1_",), r"\bdo[por]_v1_[a-f0-9]{64}\b"),
    "a Groq API key": (("gsk_",), r"\bgsk_[A-Za-z0-9]{48,}\b"),
    "a Replicate token": (("r8_",), r"\br8_[A-Za-z0-9]{37}\b"),
    "a LangSmith key": (("lsv2_",), r"\blsv2_(?:pt|sk)_[a-f0-9]{32}_[a-f0-9]{10}\b"),
    "a Shopify token": (("shpat_", "shpca_", "shppa_", "shpss_"), r"\bshp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}\b"),
    "an Azure storage key": (("AccountKey=",), r"AccountKey=[A-Za-z0-9+/]{86}=="),
    "a Pinecone API key": (("pcsk_",), r"\bpcsk_[A-Za-z0-9_]{40,}"),
    "a Tavily, Perplexity or Notion key": (("tvly-", "pplx-", "ntn_", "secret_"),
                                           r"\b(?:tvly-|pplx-|ntn_|secret_)[A-Za-z0-9]{32,}\b"),
}
SHAPES = [(what, words, re.compile(shape)) for what, (words, shape) in TOKEN_SHAPES.items()]
# Only text with one of these words can hold a credential by name: lines and cells without any skip
# the slower rules (a speed-up only: every name those rules accept holds one of them).
CREDENTIAL_HINT = re.compile(r"(?i)token|secret|pass|pwd|key|auth|cred|pat|login|client|bearer")
READ_HINT = re.compile(r"userdata|environ|getenv|google")

# A credential's name, by its parts: any of these words, or a key qualified as a credential's.
CREDENTIAL_WORDS = {"token", "tokens", "secret", "secrets", "password", "passwd", "passphrase", "pwd", "apikey",
                    "credential", "credentials", "authorization", "pat"}
KEY_QUALIFIERS = {"api", "access", "secret", "private", "auth", "client", "account", "app", "license", "master",
                  "signing", "encryption", "service", "subscription", "consumer", "openai", "wandb", "kaggle"}
# ... unless the name is about the credential rather than holding it (secret_name, token_id, max_tokens).
NOT_THE_VALUE = {"name", "names", "id", "ids", "arn", "path", "paths", "file", "files", "dir", "url", "uri", "type",
                 "types", "len", "length", "size", "count", "prefix", "suffix", "field", "env", "var", "header",
                 "scope", "region", "version", "column", "col", "label", "labels", "index", "idx", "pos", "position",
                 "max", "min", "num", "n", "limit", "budget", "per", "special", "pad", "bos", "eos", "unk", "sep",
                 "cls", "mask", "start", "end", "new", "dim", "embedding", "embeddings", "ratio", "rate", "used",
                 "usage", "tokenizer", "vocab", "map", "mapping", "list", "dict", "template", "format", "pattern",
                 "regex", "placeholder", "hint", "help", "prompt", "description", "location", "store", "manager"}
PLACEHOLDER_WORDS = ("your", "example", "xxxx", "placeholder", "redacted", "insert", "replace", "changeme",
                     "change_me", "dummy", "todo", "fixme", "enter_", "_here", "here_", "sample", "<", ">", "{", "}",
                     "$", "...", "***", "…", "%s", "%(")
COMMON_PASSWORDS = {"password", "passwd", "pass", "secret", "admin", "root", "postgres", "mysql", "changeme", "test",
                    "guest", "user", "username", "default", "pwd", "1234", "12345", "123456", "12345678", "qwerty",
                    "letmein", "mysecretpassword", "minioadmin", "neo4j", "airflow", "jupyter"}
PYTHON_PREFIX = re.compile(r"^[rRbBuU]{0,2}['\"]")

# Raw-text rules: `NAME = value`, `"NAME": "value"`, `NAME: value` (YAML), `export NAME=value`, `--name value`.
ASSIGNED = re.compile(r"""(?P<name>[A-Za-z_][\w.-]*)["']?\]?\s*(?::=|=>|[=:])\s*(?P<value>[rRbBuU]{0,2}"[^"\n]*"|"""
                      r"""[rRbBuU]{0,2}'[^'\n]*'|[^\s"'`,;()\[\]{}]+)""")
CLI_FLAG = re.compile(r"--(?P<name>[A-Za-z][\w-]*)[= ](?P<value>[\"']?[^\s\"']+)")
ENV_MAGIC = re.compile(r"^\s*%env\s+(?P<name>[A-Za-z_]\w*)(?:\s*=\s*|\s+)(?P<value>\S.*?)\s*$")
URL_PASSWORD = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://(?P<user>[^\s:/@'\"]*):(?P<password>[^\s@/'\"]+)@[\w.-]")
URL_TOKEN_USER = re.compile(r"\bhttps?://(?P<user>[^\s:/@'\"]{20,})@[\w.-]")
WANDB_LOGIN = re.compile(r"\bwandb\s+login\s+(?:--?\w[\w-]*\s+)*(?P<value>[0-9a-f]{40})\b")
KEY_CALLS = ("login", "Login", "authenticate", "auth", "set_api_key", "Client")  # calls given a key positionally
BEARER = re.compile(r"(?i)\b(?:bearer|token)\s+([A-Za-z0-9._~+/=-]{16,})")  # Authorization headers
SPACED_PASSWORD = re.compile(r"(?i)\b(?:password|passwd)\s+(?P<value>[^\s'\"]+)\s*$")  # .netrc, pip.conf
ENVIRON_READS = ("os.environ.get", "environ.get", "os.getenv", "getenv")


@dataclass(frozen=True)
class Finding:
    """A secret in a cell's text."""
    cell: int
    line: int
    what: str
    name: str | None = None  # the variable or key involved, which --allow-secret can name

    def __str__(self) -> str:
        return f"cell {self.cell}, line {self.line}: {self.what}" + (f" (in {self.name})" if self.name else "")


@dataclass(frozen=True)
class Read:
    """A secret the cells read by name: from Colab Secrets, or a credential from the environment."""
    cell: int
    line: int
    name: str | None  # None: the name is computed, not written in the cell
    source: str  # COLAB_SECRETS or ENVIRONMENT

    def __str__(self) -> str:
        return f"cell {self.cell}, line {self.line} reads {self.name or 'a secret'} from {self.source}"


COLAB_SECRETS, ENVIRONMENT = "Colab Secrets", "the environment"


# -- what a credential's name and value look like ---------------------------------------------
@functools.lru_cache(maxsize=4096)
def name_parts(name: str) -> tuple[str, ...]:
    """hfToken -> [hf, token]; AWS_SECRET_ACCESS_KEY -> [aws, secret, access, key]."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", name))
    return tuple(part for part in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if part)


def credential_name(name: str | None) -> bool:
    """Whether a variable, key or argument of this name holds a credential."""
    parts = name_parts(name or "")
    if not parts or parts[-1] in NOT_THE_VALUE:
        return False
    if any(part in CREDENTIAL_WORDS for part in parts):
        return True
    keys = [i for i, part in enumerate(parts) if part in ("key", "keys")]
    return parts == ("key",) or any(i > 0 and parts[i - 1] in KEY_QUALIFIERS for i in keys)


def password_name(name: str | None) -> bool:
    return any(part in ("password", "passwd", "pwd", "passphrase", "pass") for part in name_parts(name or ""))


def entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values()) if text else 0.0


def placeholder(value: str) -> bool:
    """'', 'hf_...', 'YOUR_API_KEY', '<token>', '${TOKEN}', the AWS docs' example keys, 'xxxxxxxx'."""
    text = value.strip().strip("\"'")
    lowered = text.lower()
    if len(text) < 6 or any(word in lowered for word in PLACEHOLDER_WORDS):
        return True
    if re.search(r"(.)\1{5,}", text):  # XXXXXX, 000000, ******
        return True
    body = re.sub(r"^[a-z]{2,8}[_-]", "", text)  # the token's prefix says nothing about its randomness
    return len(body) >= 8 and entropy(body) < 2.5


def looks_secret(value: str, password: bool = False) -> bool:
    """A value given to a credential's name that is a real secret, not a placeholder, word or code."""
    text = value.strip()
    if placeholder(text) or any(c.isspace() for c in text):
        return False
    if password:
        return (len(text) >= 8 and text.lower() not in COMMON_PASSWORDS and bool(re.search(r"[A-Za-z]", text))
                and bool(re.search(r"[^A-Za-z]", text)) and entropy(text) >= 2.5)
    if len(text) < 16 or not re.fullmatch(r"[\w+/=.~:-]+", text):
        return False
    mixed_case = re.search(r"[a-z]", text) and re.search(r"[A-Z]", text) and len(text) >= 20
    if not (re.search(r"[A-Za-z]", text) and re.search(r"\d", text)) and not mixed_case:
        return False
    if re.fullmatch(r"(?:[A-Z][a-z]+)+", text):  # AutoModelForCausalLM-like names
        return False
    if re.search(r"/.*\.[A-Za-z]\w{0,4}$", text):  # a file's path
        return False
    words = [w for w in re.split(r"[-_./:]+", text) if w]  # Qwen/Qwen2.5-72B-Instruct, net/l1/kernel: words
    if len(words) > 1 and all(re.fullmatch(r"[A-Za-z]{1,12}|[A-Z]?[a-z]+|[A-Z]+|[A-Za-z]*\d+[A-Za-z]{0,2}", w)
                              for w in words):
        return False
    return entropy(text) >= 3.0


def _unquoted(value: str) -> tuple[str, bool]:
    """A value as written (maybe a Python literal) -> its text, and whether it was quoted."""
    match = PYTHON_PREFIX.match(value)
    if match and len(value) >= len(match.group()) + 1:
        return value[len(match.group()):-1] if value[-1] in "\"'" else value[len(match.group()):], True
    return value, False


def _given(name: str, value: str) -> bool:
    """Whether `value`, given to `name`, is a secret (a bearer or basic header counts by its credential)."""
    if not credential_name(name):
        return False
    scheme = re.match(r"(?i)(?:bearer|token|basic)\s+(\S+)$", value.strip())
    if scheme:
        value = scheme.group(1)
    return looks_secret(value, password=password_name(name))


# -- the raw text ------------------------------------------------------------------------------
def _shape_hits(text: str) -> list[tuple[int, str]]:
    """(offset, what) for every well-known token shape in `text` that is not a placeholder."""
    hits = []
    for what, words, shape in SHAPES:
        if any(word in text for word in words):
            hits += [(match.start(), what) for match in shape.finditer(text)
                     if what == "a private key" or not placeholder(match.group())]
    return hits


def scan_text(source: str, python: bool = False) -> list[tuple[int, str, str | None]]:
    """(line, what, name) for the secrets in a cell's raw text. `python`: the cell parses as Python,
    so an unquoted word after `name =` on a code line is a Python name, not a value."""
    found = []
    hits = _shape_hits(source)
    starts = [0] + [match.end() for match in re.finditer("\n", source)] if hits else []
    found += [(bisect.bisect_right(starts, offset), what, None) for offset, what in hits]
    for number, line in enumerate(source.splitlines(), 1):
        if "@" in line:
            for match in URL_PASSWORD.finditer(line):
                user, password = match.group("user"), match.group("password")
                if password != user and password.lower() not in COMMON_PASSWORDS and not placeholder(password):
                    found.append((number, "a password in a URL", None))
            found += [(number, "a token in a URL", None) for match in URL_TOKEN_USER.finditer(line)
                      if looks_secret(match.group("user"))]
        if "wandb" in line and WANDB_LOGIN.search(line):
            found.append((number, "a Weights & Biases API key", None))
        if not CREDENTIAL_HINT.search(line):
            continue
        env = ENV_MAGIC.match(line)
        if env and _given(env.group("name"), _unquoted(env.group("value"))[0]):
            found.append((number, f"a credential set with %env {env.group('name')}", env.group("name")))
            continue
        spaced = SPACED_PASSWORD.search(line)
        if spaced and looks_secret(spaced.group("value"), password=True):
            found.append((number, "a password", None))
        found += [(number, "a bearer token", None) for match in BEARER.finditer(line) if looks_secret(match.group(1))]
        code = python and not line.lstrip().startswith(("#", "!", "%"))
        comment = line.find("#") if code else -1
        for pattern in (ASSIGNED, CLI_FLAG):
            for match in pattern.finditer(line):
                value, quoted = _unquoted(match.group("value"))
                if not quoted and code and (comment < 0 or match.start() < comment):
                    continue  # `token_mixer = Qwen3Mixer(...)`: code, read from the parsed cell instead
                if _given(match.group("name"), value):
                    name = match.group("name").split(".")[-1]
                    found.append((number, f"a secret-looking value in {name!r}", name))
    return found


# -- the parsed code ---------------------------------------------------------------------------
def _text(node: ast.AST) -> str | None:
    """The text of a str or bytes literal (an f-string's literal parts joined), else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
        return node.value if isinstance(node.value, str) else node.value.decode("latin-1")
    if isinstance(node, ast.JoinedStr):
        return "".join(_text(part) or "{}" for part in node.values)
    return None


def _name_of(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript):
        return _text(node.slice)
    return None


def scan_code(tree: ast.AST) -> list[tuple[int, str, str | None]]:
    """(Python line, what, name) for credentials given literally in parsed code."""
    found = []

    def given(line: int, name: str | None, value_node: ast.AST | None, what: str | None = None) -> None:
        value = _text(value_node) if value_node is not None else None
        if name and value is not None and _given(name, value):
            found.append((line, what or f"a secret-looking value in {name!r}", name))

    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for element in target.elts if isinstance(target, ast.Tuple) else [target]:
                    environ = isinstance(element, ast.Subscript) and (dotted(element.value) or "").endswith("environ")
                    given(node.lineno, _name_of(element), node.value,
                          f"a credential set in os.environ[{_name_of(element)!r}]" if environ else None)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                given(value.lineno, _text(key) if key is not None else None, value)
        elif isinstance(node, ast.Call):
            called = dotted(node.func) or ""
            for keyword in node.keywords:
                given(keyword.value.lineno, keyword.arg, keyword.value)
            if len(node.args) >= 2 and _text(node.args[0]) is not None:  # putenv, setdefault, config.set
                given(node.lineno, _text(node.args[0]), node.args[1])
            if called.split(".")[-1].endswith(KEY_CALLS):
                for argument in node.args:
                    value = _text(argument)  # a key, not a model's id (org/name) or an address
                    if value is not None and re.fullmatch(r"[\w-]+", value) and looks_secret(value):
                        found.append((node.lineno, f"a key given to {called}()", None))
    return found


def scan_cell(cell: Cell) -> list[Finding]:
    """The secrets in one cell, one per line: a token's own shape named first, then what the parsed
    code says, then the raw text's rules."""
    by_line: dict[int, Finding] = {}
    tree, raw_line = _parsed(cell) if CREDENTIAL_HINT.search(cell.source) else (None, None)
    text = scan_text(cell.source, python=tree is not None and _python_body(cell))
    code = [(raw_line(line), what, name) for line, what, name in scan_code(tree)] if tree is not None else []
    found = [hit for hit in text if hit[1] in TOKEN_SHAPES] + code + [hit for hit in text if hit[1] not in TOKEN_SHAPES]
    for line, what, name in found:
        known = by_line.get(line)
        if known is None:
            by_line[line] = Finding(cell.number, line, what, name)
        elif known.name is None and name is not None:
            by_line[line] = Finding(cell.number, line, known.what, name)
    return [by_line[line] for line in sorted(by_line)]


def _parsed(cell: Cell):
    """The cell's parsed Python and how its lines map to the cell's: plain Python is parsed as it
    is (IPython's transforms leave it unchanged, and they are the slow part), the rest as
    IPython runs it. (None, None) when it doesn't parse."""
    try:
        with warnings.catch_warnings():  # a notebook's "\d" is the notebook's business, not the export's
            warnings.simplefilter("ignore")
            return ast.parse(cell.source), lambda line: line
    except (SyntaxError, ValueError):
        return (cell.tree, cell.raw_line) if cell.tree is not None else (None, None)


def _python_body(cell: Cell) -> bool:
    """Whether the cell's lines are Python (not the body of %%bash, %%writefile...)."""
    from .capture import CODE_CELL_MAGICS

    first = cell.source.lstrip("\n").split("\n", 1)[0].split()
    return not (first and first[0].startswith("%%") and first[0] not in CODE_CELL_MAGICS)


def values_in(cells, values: dict[str, str]) -> list[Finding]:
    """Where the value of a --secret is written in a cell."""
    found = []
    for cell in cells:
        for number, line in enumerate(cell.source.splitlines(), 1):
            found += [Finding(cell.number, number, f"the value of --secret {name}", name)
                      for name, value in values.items() if value and value in line]
    return found


# -- what the cells read by name -----------------------------------------------------------------
def reads(cells) -> list[Read]:
    """Each read from Colab Secrets (however google.colab.userdata is imported) and each credential
    read from the environment."""
    found, names = [], {}
    for cell in cells:
        aliases = any(alias in cell.source for alias in names)
        tree, raw_line = _parsed(cell) if aliases or READ_HINT.search(cell.source) else (None, None)
        if tree is None:
            continue
        names.update(colab_names(tree))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                called = dotted(node.func) or ""
                key = _text(node.args[0]) if node.args else None
                if colab_api(called, names) == "userdata.get":
                    found.append(Read(cell.number, raw_line(node.lineno), key, COLAB_SECRETS))
                elif called in ENVIRON_READS and credential_name(key):
                    found.append(Read(cell.number, raw_line(node.lineno), key, ENVIRONMENT))
            elif (isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load)
                  and (dotted(node.value) or "").endswith("environ") and credential_name(_text(node.slice))):
                found.append(Read(cell.number, raw_line(node.lineno), _text(node.slice), ENVIRONMENT))
    return found


# -- the decision --------------------------------------------------------------------------------
def check(cells, allow: tuple[str, ...] = (), given: tuple[str, ...] = (), values: dict[str, str] | None = None
          ) -> list[str]:
    """Stop the export if a cell carries a secret (unless its name is in `allow`) or reads a Colab
    secret that is not `given` to the job; return what to say about credentials the cells read from
    the environment without giving them."""
    findings = [f for cell in cells for f in scan_cell(cell) if not (f.name and f.name in allow)]
    findings += values_in(cells, values or {})
    if findings:
        named = next((f.name for f in findings if f.name), None)
        listed = "; ".join(map(str, findings[:5])) + (f" (and {len(findings) - 5} more)" if len(findings) > 5 else "")
        allowed = (f" If it is not a secret, export with --allow-secret {named} (it then travels in the cell's "
                   "text).") if named else ""
        raise ColabkitError(
            f"The export stopped: the cells would carry secrets into the job ({listed}). Everything in a cell "
            "travels in the job's source to S3. Keep the value in Colab Secrets (or this machine's environment) "
            f"under a name, read it there (userdata.get('{named or 'NAME'}') or os.environ['{named or 'NAME'}']), "
            f"and export with --secret {named or 'NAME'}: the job then reads it from AWS Secrets Manager at its "
            f"start.{allowed}")
    read = [r for r in reads(cells) if r.name not in given]
    colab = [r for r in read if r.source == COLAB_SECRETS and r.name is not None]
    if colab:
        flags = " ".join(f"--secret {name}" for name in dict.fromkeys(r.name for r in colab))
        raise ColabkitError(
            f"The export stopped: {'; '.join(map(str, colab[:5]))}, and a job has no Colab Secrets. Export with "
            f"{flags}: colabkit keeps the value in AWS Secrets Manager, the job reads it at its start, and "
            "userdata.get() and os.environ work there unchanged; the value never travels in the cells, request, "
            "tags or logs. Or remove the read from the cells you export.")
    notes = []
    for r in read:
        if r.source == COLAB_SECRETS:  # the name is computed in the cell
            notes.append(f"{r}: the job has the Colab secrets given with --secret NAME, and no others")
        else:
            notes.append(f"{r}: the job has it only when given with --secret {r.name}")
    return notes


def check_state(checkpoint_path: Path, values: dict[str, str] | None = None) -> None:
    """Stop before a checkpoint's state.json goes to S3 with a token in it (a variable %checkpoint
    tracks that holds one the notebook read at run time, say)."""
    from ..checkpoint.codec import STATE

    path = Path(checkpoint_path) / STATE
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # a damaged checkpoint: its hash check says so, and the job skips it
    found = []

    def walk(node, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{where}.{key}" if where else str(key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}[{index}]")
        elif isinstance(node, str):
            hits = [what for _, what in _shape_hits(node)]
            hits += [f"the value of --secret {name}" for name, value in (values or {}).items()
                     if value and value in node]
            found.extend(f"{what} at {where}" for what in dict.fromkeys(hits))

    walk(document, "")
    if found:
        raise ColabkitError(
            f"The export stopped: the checkpoint {Path(checkpoint_path).name} holds {'; '.join(found[:3])} in its "
            f"{STATE}, which would go to S3 with it. A variable %checkpoint tracks holds a secret: stop tracking it "
            "(name only the training state in %checkpoint), save a new checkpoint (%checkpoint now), and export "
            "again; give the job the secret with --secret NAME.")
