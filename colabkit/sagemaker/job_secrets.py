"""The secrets a job needs (`--secret HF_TOKEN`), given the safe way.

- Here: each value comes from Colab Secrets on Colab, else from this machine's environment.
- On AWS: the values are kept in one AWS Secrets Manager secret per notebook,
  `colabkit/<notebook>` (a JSON object of name -> value), tagged as colabkit's, with a resource
  policy that lets the job's role read it (secretsmanager:GetSecretValue, and nothing else). Each
  export writes a new version, and the job reads exactly that version.
- The request carries only names and where to read them (COLABKIT_SECRETS, COLABKIT_SECRETS_ARN,
  COLABKIT_SECRETS_VERSION in its Environment): never a value, in the source, hyperparameters,
  Environment, tags or logs.
- In the job: `load()` runs before the first cell and puts each value in os.environ, so
  os.environ[NAME], userdata.get(NAME) (the stand-in reads the environment), and the logins of
  huggingface_hub (HF_TOKEN) and wandb (WANDB_API_KEY) work unchanged. A --local run is given the
  same values by its process's environment, and `load()` checks they are all there.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace

from ..errors import ColabkitError

NAMES, ARN, VERSION = "COLABKIT_SECRETS", "COLABKIT_SECRETS_ARN", "COLABKIT_SECRETS_VERSION"
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RESERVED = ("AWS_", "SM_", "SAGEMAKER_", "COLABKIT_", "TRAINING_JOB_", "PYTHON", "LD_")  # prefixes the job's own
RESERVED_NAMES = {"PATH", "HOME", "TMPDIR", "LANG", "USER", "SHELL"}


class Unavailable(Exception):
    """The job could not read its secrets; the message says what to do."""


def check_names(names) -> None:
    """Refuse a --secret the job must not be given (its AWS access is its role's) or can't be named."""
    for name in names:
        if not NAME_PATTERN.fullmatch(name):
            raise ColabkitError(f"--secret {name!r} is not an environment variable's name: use letters, digits and "
                                "underscores, as in --secret HF_TOKEN.")
        if name.upper().startswith(RESERVED) or name.upper() in RESERVED_NAMES:
            why = ("the job gets its AWS access from its IAM role (--role), and a key of yours would outlive it"
                   if name.upper().startswith("AWS_") else "the job's platform sets that variable itself")
            raise ColabkitError(f"--secret {name} can't be given to the job: {why}. Remove it from the export "
                                "(and read it in the cells only where it is set).")


class Values(dict):
    """name -> value; shown by names only, so no value ends up in a log or a traceback."""

    def __repr__(self) -> str:
        return f"<secrets {', '.join(self) or 'none'}>"

    __str__ = __repr__


def resolve(names) -> Values:
    """The value of each name: from Colab Secrets on Colab, else from the environment."""
    from .. import platform

    check_names(names)
    values = Values()
    on_colab = platform.detect_name() == platform.COLAB
    for name in names:
        value = _colab_secret(name) if on_colab else None
        value = value if value is not None else os.environ.get(name)
        if not value:
            where = ("in Colab Secrets (the key icon on the left), with this notebook allowed to read it"
                     if on_colab else f"to this machine's environment (export {name}=... in the shell that starts "
                     "Jupyter or runs colabkit export)")
            raise ColabkitError(f"--secret {name}: there is no value for {name} to give the job. Add it {where}, "
                                "then export again.")
        values[name] = value
    return values


def _colab_secret(name: str) -> str | None:
    from google.colab import userdata

    try:
        return userdata.get(name)
    except Exception:  # SecretNotFoundError, NotebookAccessError: then the environment's
        return None


def secret_name(notebook: str) -> str:
    from .validate import slug

    return f"colabkit/{slug(notebook)}"


def environment(names, arn: str | None = None, version: str | None = None) -> dict[str, str]:
    """What the request's Environment says about the secrets: their names, and where they are."""
    if not names:
        return {}
    found = {NAMES: ",".join(names)}
    if arn:
        found.update({ARN: arn, VERSION: version})
    return found


def _policy(role: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "ColabkitTrainingJobReads", "Effect": "Allow", "Principal": {"AWS": role},
        "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]})


def store(connection, notebook: str, role: str, values: Values) -> tuple[str, str]:
    """Keep the values in Secrets Manager for the job's role to read; returns (ARN, version id)."""
    from .. import __version__
    from . import aws
    from .request import tag

    client = connection.client("secretsmanager")
    name = secret_name(notebook)
    body = json.dumps(dict(values))
    where = f"the job's secrets in AWS Secrets Manager ({name})"
    with aws.errors(f"storing {where}: secretsmanager:CreateSecret"):
        try:
            created = client.create_secret(
                Name=name, SecretString=body, Description=f"colabkit: the secrets the notebook {notebook!r} gives its "
                f"SageMaker jobs (--secret {' --secret '.join(values)})",
                Tags=[{"Key": "colabkit", "Value": __version__}, {"Key": "colabkit:notebook", "Value": tag(notebook)}])
            arn, version = created["ARN"], created["VersionId"]
        except client.exceptions.ResourceExistsException:
            arn = version = None
    if arn is None:
        with aws.errors(f"updating {where}: secretsmanager:PutSecretValue"):
            put = client.put_secret_value(SecretId=name, SecretString=body)
        arn, version = put["ARN"], put["VersionId"]
    with aws.errors(f"letting the job's role {role} read {where}: secretsmanager:PutResourcePolicy"):
        client.put_resource_policy(SecretId=arn, ResourcePolicy=_policy(role), BlockPublicPolicy=True)
    return arn, version


def give(plan, values: Values, connection=None, echo=print):
    """The plan with its secrets' names (and, when submitting through `connection`, where the job
    reads them) in its Environment; the values are stored first."""
    if not values:
        return plan
    arn = version = None
    if connection is not None:
        arn, version = store(connection, plan.notebook, plan.role, values)
        echo(f"[colabkit] secrets for the job ({', '.join(values)}): kept in AWS Secrets Manager as "
             f"{secret_name(plan.notebook)}, readable by the job's role; the job reads them at its start")
    else:
        echo(f"[colabkit] secrets for the job ({', '.join(values)}): the job reads them at its start (a submitted "
             f"one from AWS Secrets Manager, as {secret_name(plan.notebook)}); never in the request or the source")
    return replace(plan, environment={**plan.environment, **environment(list(values), arn, version)})


def load(environ=os.environ) -> list[str]:
    """In the job, before its cells: put each secret's value in `environ`. Returns the names."""
    names = [n for n in environ.get(NAMES, "").split(",") if n]
    if not names:
        return []
    if environ.get(ARN):
        values = _read(environ[ARN], environ.get(VERSION))
        for name in names:
            if name not in values:
                raise Unavailable(f"The secret {environ[ARN]} has no {name} in the version this job was given "
                                  f"({environ.get(VERSION)}): export again with --secret {name}.")
            environ[name] = values[name]
    missing = [n for n in names if not environ.get(n)]
    if missing:
        raise Unavailable(f"The job was given no value for {', '.join(missing)}: export again with "
                          f"{' '.join('--secret ' + n for n in missing)}.")
    return names


def given(environ=os.environ) -> dict[str, str]:
    """In a job (or a --local run): name -> value of each secret it was given; elsewhere nothing.
    Its checkpoints go to S3, so the checkpointer leaves out a variable that holds one."""
    return {name: environ[name] for name in environ.get(NAMES, "").split(",") if name and environ.get(name)}


def _read(arn: str, version: str | None) -> dict:
    import boto3
    import botocore.exceptions

    region = arn.split(":")[3]
    arguments = {"SecretId": arn, **({"VersionId": version} if version else {})}
    try:
        reply = boto3.client("secretsmanager", region_name=region).get_secret_value(**arguments)
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("AccessDeniedException", "AccessDenied"):
            raise Unavailable(
                f"The job's role may not read its secrets: it needs secretsmanager:GetSecretValue on {arn} (and "
                "kms:Decrypt on the secret's key, when that is a customer managed key). colabkit grants it with a "
                "resource policy on the secret; an explicit Deny, a permissions boundary or a service control "
                "policy on the role overrides that: allow that action for the role, then export again.") from None
        raise Unavailable(f"The job could not read its secrets from {arn} ({code}: "
                          f"{exc.response.get('Error', {}).get('Message', exc)}).") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise Unavailable(f"The job could not reach AWS Secrets Manager to read its secrets ({exc}).") from None
    return json.loads(reply["SecretString"])
