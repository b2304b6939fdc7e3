"""Look-alike secrets in notebook cells, for the scanner's recall (benchmarks/bench_secrets.py and
tests/test_sagemaker_secrets.py).

Every value is made here from a seeded random generator in the shape of a real credential (the
shapes follow gitleaks' rules and the services' own documentation): none is a real key. Each is
placed in a cell the way people write them: assignments, comments, bytes, %env, os.environ,
os.putenv, %%bash and %%writefile bodies, keyword arguments, dict values, URLs with passwords,
`pip install git+https://TOKEN@...`, headers, and cells that don't parse.
"""

from __future__ import annotations

import base64
import json
import random
import string
from dataclasses import dataclass

SEED = 20261124
LOWER, UPPER, DIGITS = string.ascii_lowercase, string.ascii_uppercase, string.digits
ALNUM, HEX = LOWER + UPPER + DIGITS, "0123456789abcdef"


@dataclass(frozen=True)
class Planted:
    category: str
    placement: str
    cells: tuple[str, ...]  # the notebook's code cells; the secret is in the last one
    value: str


def _pick(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _jwt(rng):
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": _pick(rng, DIGITS, 10), "name": "svc", "iat": rng.randrange(1_600_000_000, 1_800_000_000)}
    payload = _b64url(json.dumps(claims).encode())
    return f"{header}.{payload}.{_b64url(rng.randbytes(32))}"


def _pem(rng, kind="RSA PRIVATE KEY"):
    body = base64.b64encode(rng.randbytes(360)).decode()
    lines = "\n".join(body[i:i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN {kind}-----\n{lines}\n-----END {kind}-----"


def _password(rng):
    return _pick(rng, ALNUM, rng.randrange(6, 10)) + rng.choice("!%^&*-_~") + _pick(rng, ALNUM, rng.randrange(3, 7))


# category -> (make a value, the environment variable people keep it in, the keyword argument
# a library takes it as, which placements suit it)
GENERAL = ("assign", "assign_single", "comment", "bytes", "env_magic", "env_magic_space", "environ", "environ_update",
           "setdefault", "putenv", "bash", "writefile_env", "kwarg", "dict", "dict_multiline", "broken_cell",
           "fstring_header", "curl_header")
NAMED = tuple(p for p in GENERAL if p not in ("fstring_header", "curl_header")) + ("comment_named",)
CATEGORIES = {
    "aws-access-key-id": (lambda r: "AKIA" + _pick(r, UPPER + "234567", 16), "AWS_ACCESS_KEY_ID",
                          "aws_access_key_id", GENERAL),
    "aws-secret-access-key": (lambda r: _pick(r, ALNUM + "/+", 40), "AWS_SECRET_ACCESS_KEY",
                              "aws_secret_access_key", NAMED + ("aws_credentials_file",)),
    "github-token": (lambda r: r.choice(["ghp_", "gho_", "ghs_"]) + _pick(r, ALNUM, 36), "GITHUB_TOKEN", "token",
                     GENERAL + ("pip_git_url", "automagic_git_url", "git_clone")),
    "github-fine-grained-token": (lambda r: "github_pat_" + _pick(r, ALNUM, 22) + "_" + _pick(r, ALNUM, 59),
                                  "GH_TOKEN", "token", GENERAL + ("pip_git_url",)),
    "gitlab-token": (lambda r: "glpat-" + _pick(r, ALNUM + "_-", 20), "GITLAB_TOKEN", "private_token",
                     GENERAL + ("gitlab_oauth_url",)),
    "hugging-face-token": (lambda r: "hf_" + _pick(r, LOWER + UPPER, 34), "HF_TOKEN", "token",
                           GENERAL + ("hf_cli_login", "login_positional")),
    "openai-api-key": (lambda r: r.choice([
        "sk-proj-" + _pick(r, ALNUM + "_-", 74) + "T3BlbkFJ" + _pick(r, ALNUM + "_-", 74),
        "sk-" + _pick(r, ALNUM, 20) + "T3BlbkFJ" + _pick(r, ALNUM, 20)]), "OPENAI_API_KEY", "api_key", GENERAL),
    "anthropic-api-key": (lambda r: "sk-ant-api03-" + _pick(r, ALNUM + "_-", 93) + "AA", "ANTHROPIC_API_KEY",
                          "api_key", GENERAL),
    "google-api-key": (lambda r: "AIza" + _pick(r, ALNUM + "_-", 35), "GOOGLE_API_KEY", "api_key", GENERAL),
    "google-oauth-client-secret": (lambda r: "GOCSPX-" + _pick(r, ALNUM + "_-", 28), "GOOGLE_CLIENT_SECRET",
                                   "client_secret", GENERAL),
    "slack-token": (lambda r: f"xoxb-{_pick(r, DIGITS, 13)}-{_pick(r, DIGITS, 13)}-{_pick(r, ALNUM, 24)}",
                    "SLACK_BOT_TOKEN", "token", GENERAL),
    "slack-app-token": (lambda r: f"xapp-1-A{_pick(r, UPPER + DIGITS, 10)}-{_pick(r, DIGITS, 13)}-{_pick(r, HEX, 64)}",
                        "SLACK_APP_TOKEN", "app_token", GENERAL),
    "slack-webhook": (lambda r: f"https://hooks.slack.com/services/T{_pick(r, UPPER + DIGITS, 10)}/"
                                f"B{_pick(r, UPPER + DIGITS, 10)}/{_pick(r, ALNUM, 24)}", "SLACK_WEBHOOK_URL",
                      "webhook_url", ("assign", "comment", "environ", "dict", "kwarg", "bash", "broken_cell")),
    "discord-webhook": (lambda r: f"https://discord.com/api/webhooks/{_pick(r, DIGITS, 19)}/"
                                  f"{_pick(r, ALNUM + '_-', 68)}",
                        "DISCORD_WEBHOOK", "url", ("assign", "comment", "environ", "kwarg", "broken_cell")),
    "stripe-key": (lambda r: "sk_live_" + _pick(r, ALNUM, 24), "STRIPE_API_KEY", "api_key", GENERAL),
    "sendgrid-key": (lambda r: f"SG.{_pick(r, ALNUM + '_-', 22)}.{_pick(r, ALNUM + '_-', 43)}", "SENDGRID_API_KEY",
                     "api_key", GENERAL),
    "twilio-key": (lambda r: "SK" + _pick(r, HEX, 32), "TWILIO_API_KEY", "api_key", GENERAL),
    "telegram-bot-token": (lambda r: f"{r.randrange(10**8, 10**10)}:AA{_pick(r, ALNUM + '_-', 33)}",
                           "TELEGRAM_BOT_TOKEN", "token", GENERAL),
    "jwt": (_jwt, "API_JWT", "token", GENERAL),
    "private-key": (_pem, "PRIVATE_KEY", "private_key", ("triple_quoted", "writefile_pem", "service_account_json")),
    "pgp-private-key": (lambda r: _pem(r, "PGP PRIVATE KEY BLOCK"), "PGP_KEY", "key",
                        ("triple_quoted", "writefile_pem")),
    "password-in-url": (_password, "DATABASE_URL", "url", ("db_url", "db_url_env", "db_url_kwarg", "redis_url",
                                                            "mongo_url", "broken_db_url")),
    "pip-index-password": (_password, "PIP_INDEX_URL", "index_url", ("pip_index_url", "pip_extra_index_url",
                                                                    "pip_conf")),
    "wandb-api-key": (lambda r: _pick(r, HEX, 40), "WANDB_API_KEY", "key",
                      ("wandb_login_kwarg", "wandb_login_positional", "wandb_cli", "assign", "environ", "env_magic",
                       "bash", "dict", "comment_named", "netrc", "comment")),
    "kaggle-key": (lambda r: _pick(r, HEX, 32), "KAGGLE_KEY", "key",
                   ("kaggle_json_dict", "kaggle_json_echo", "environ", "env_magic_space", "assign", "writefile_kaggle",
                    "comment")),
    "database-password": (_password, "DB_PASSWORD", "password", ("assign", "kwarg", "dict", "environ", "env_magic",
                                                                 "bash", "dict_multiline", "comment")),
    "generic-api-key": (lambda r: _pick(r, ALNUM, 40), "COHERE_API_KEY", "api_key",
                        ("assign", "kwarg", "dict", "environ", "env_magic", "client_positional", "writefile_yaml",
                         "comment_named", "comment")),
    "databricks-token": (lambda r: "dapi" + _pick(r, HEX, 32), "DATABRICKS_TOKEN", "token", GENERAL),
    "npm-token": (lambda r: "npm_" + _pick(r, ALNUM, 36), "NPM_TOKEN", "token", ("assign", "bash", "comment",
                                                                                 "writefile_env")),
    "pypi-token": (lambda r: "pypi-AgEIcHlwaS5vcmc" + _pick(r, ALNUM + "_-", 70), "TWINE_PASSWORD", "password",
                   ("bash", "env_magic", "assign", "writefile_env")),
    "groq-api-key": (lambda r: "gsk_" + _pick(r, ALNUM, 52), "GROQ_API_KEY", "api_key", GENERAL),
    "replicate-token": (lambda r: "r8_" + _pick(r, ALNUM, 37), "REPLICATE_API_TOKEN", "api_token", GENERAL),
    "langsmith-key": (lambda r: f"lsv2_pt_{_pick(r, HEX, 32)}_{_pick(r, HEX, 10)}", "LANGCHAIN_API_KEY", "api_key",
                      GENERAL),
    "azure-storage-key": (lambda r: "DefaultEndpointsProtocol=https;AccountName=data" + _pick(r, LOWER, 6)
                                    + ";AccountKey=" + base64.b64encode(r.randbytes(64)).decode()
                                    + ";EndpointSuffix=core.windows.net", "AZURE_STORAGE_CONNECTION_STRING",
                          "conn_str", ("assign", "environ", "kwarg", "comment")),
}
PER_CATEGORY = 7


def _cells(placement: str, value: str, env: str, kwarg: str, rng: random.Random) -> tuple[str, ...]:
    """The notebook cells for one planted value."""
    user = rng.choice(["admin", "ml", "svc_train", "alice"])
    host = rng.choice(["db.internal.example.net", "10.0.3.7", "pg.prod.company.io"])
    before = ("import os, json\nimport torch",)
    one = {
        "assign": f'{env} = "{value}"',
        "assign_single": f"{env.lower()} = '{value}'",
        "comment": f"# the key I used last time: {value}\nmodel = train()",
        "comment_named": f"# {env}={value}\nlr = 3e-4",
        "bytes": f'{env.lower()} = b"{value}"',
        "env_magic": f"%env {env}={value}",
        "env_magic_space": f"%env {env} {value}",
        "environ": f'os.environ["{env}"] = "{value}"',
        "environ_update": f'os.environ.update({{"{env}": "{value}", "EPOCHS": "3"}})',
        "setdefault": f'os.environ.setdefault("{env}", "{value}")',
        "putenv": f'os.putenv("{env}", "{value}")',
        "bash": f"%%bash\nexport {env}={value}\npython train.py --epochs 3",
        "writefile_env": f"%%writefile .env\n{env}={value}\nEPOCHS=3",
        "writefile_yaml": f"%%writefile config.yaml\nmodel: command-r\n{kwarg}: {value}\nepochs: 3",
        "kwarg": f'client = Client(base_url="https://api.example.net", {kwarg}="{value}")',
        "dict": f'config = {{"model": "gpt2", "{kwarg}": "{value}", "epochs": 3}}',
        "dict_multiline": (f'settings = dict(\n    lr=3e-4,\n    **{{\n        "{kwarg}":\n'
                           f'            "{value}",\n    }},\n)'),
        "broken_cell": f'print("starting"\n{env} = "{value}"',
        "fstring_header": f'headers = {{"Authorization": f"Bearer {value}"}}',
        "curl_header": f'!curl -s -H "Authorization: Bearer {value}" https://api.example.net/v1/models',
        "pip_git_url": f"!pip install -q git+https://{value}@github.com/acme/private-trainer.git",
        "automagic_git_url": f"pip install git+https://{value}@github.com/acme/private-trainer.git",
        "git_clone": f"!git clone https://{value}@github.com/acme/datasets.git",
        "gitlab_oauth_url": f"!git clone https://oauth2:{value}@gitlab.com/acme/data.git",
        "hf_cli_login": f"!huggingface-cli login --token {value}",
        "login_positional": f'from huggingface_hub import login\nlogin("{value}")',
        "triple_quoted": f'key_pem = """{value}"""\nopen("key.pem", "w").write(key_pem)',
        "writefile_pem": f"%%writefile deploy_key\n{value}",
        "service_account_json": "sa = {\"type\": \"service_account\", \"project_id\": \"acme-ml\", \"private_key\": "
                                + json.dumps(value) + "}",
        "db_url": f'engine = create_engine("postgresql://{user}:{value}@{host}:5432/features")',
        "db_url_env": f'os.environ["DATABASE_URL"] = "mysql+pymysql://{user}:{value}@{host}/runs"',
        "db_url_kwarg": f'conn = psycopg2.connect(dsn="postgres://{user}:{value}@{host}/ml")',
        "redis_url": f'cache = redis.from_url("redis://:{value}@{host}:6379/0")',
        "mongo_url": f'client = MongoClient("mongodb+srv://{user}:{value}@cluster0.abcd.mongodb.net/?w=majority")',
        "broken_db_url": f'url = "postgresql://{user}:{value}@{host}/db"\nfor x in range(3)\n    print(x)',
        "pip_index_url": f"!pip install -q --index-url https://{user}:{value}@pypi.acme.dev/simple acme-models",
        "pip_extra_index_url": f"!pip install --extra-index-url=https://{user}:{value}@pkgs.acme.dev/simple/ trainer",
        "pip_conf": f"%%writefile /etc/pip.conf\n[global]\nindex-url = https://{user}:{value}@pypi.acme.dev/simple",
        "aws_credentials_file": f"%%writefile /root/.aws/credentials\n[default]\naws_access_key_id = AKIA"
                                f"{_pick(rng, UPPER + '234567', 16)}\naws_secret_access_key = {value}",
        "wandb_login_kwarg": f'import wandb\nwandb.login(key="{value}")',
        "wandb_login_positional": f'import wandb\nwandb.login("{value}")',
        "wandb_cli": f"!wandb login {value}",
        "netrc": f"%%writefile /root/.netrc\nmachine api.wandb.ai\n  login user\n  password {value}",
        "kaggle_json_dict": f'creds = {{"username": "{user}", "key": "{value}"}}\n'
                            'json.dump(creds, open(os.path.expanduser("~/.kaggle/kaggle.json"), "w"))',
        "kaggle_json_echo": f"!mkdir -p ~/.kaggle && echo '{{\"username\":\"{user}\",\"key\":\"{value}\"}}' > "
                            "~/.kaggle/kaggle.json",
        "writefile_kaggle": f'%%writefile /root/.kaggle/kaggle.json\n{{"username": "{user}", "key": "{value}"}}',
        "client_positional": f'import cohere\nco = cohere.Client("{value}")',
    }[placement]
    return before + (one,)


def corpus(seed: int = SEED, per_category: int = PER_CATEGORY) -> list[Planted]:
    """The same look-alike secrets on every run: `per_category` of each, each in another placement."""
    rng = random.Random(seed)
    planted = []
    for category, (make, env, kwarg, placements) in CATEGORIES.items():
        order = list(placements)
        rng.shuffle(order)
        for i in range(per_category):
            value = make(rng)
            placement = order[i % len(order)]
            planted.append(Planted(category, placement, _cells(placement, value, env, kwarg, rng), value))
    return planted
