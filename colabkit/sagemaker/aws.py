"""The AWS session an export uses, and AWS's errors said as one paragraph of what to do.

Credentials come from boto3's normal chain (environment, ~/.aws, --profile, instance roles), and
on Colab from Colab Secrets (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optionally AWS_SESSION_TOKEN
and AWS_DEFAULT_REGION) when the chain has none. They stay in this process: nothing colabkit
writes or sends to the job carries them. `AWS_ENDPOINT_URL` (boto3's own setting) points every
client elsewhere, which is how the tests reach a local AWS-compatible server.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

from .. import settings
from ..errors import ColabkitError

COLAB_SECRET_NAMES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION")
CONFIG_FILE = "~/.config/colabkit/sagemaker.json"  # {"role": "arn:...", "bucket": "...", "region": "..."}


@dataclass
class Aws:
    session: object  # boto3.Session
    region: str
    account: str

    def client(self, service: str):
        """A client for `service`; for S3, every call naming a bucket says the bucket must be this
        account's (ExpectedBucketOwner): S3 refuses it, 403, when another account owns the bucket."""
        from botocore.config import Config

        client = self.session.client(service, region_name=self.region,
                                     config=Config(user_agent_extra="colabkit", retries={"mode": "standard"}))
        if service == "s3":
            client.meta.events.register("before-parameter-build.s3", self._expect_owner)
        return client

    def _expect_owner(self, params, model, **kwargs) -> None:
        if "ExpectedBucketOwner" in model.input_shape.members and "Bucket" in params:
            params["ExpectedBucketOwner"] = self.account


def _colab_secrets() -> dict[str, str]:
    from .. import platform

    if platform.detect_name() != platform.COLAB:
        return {}
    from google.colab import userdata

    found = {}
    for name in COLAB_SECRET_NAMES:
        try:
            found[name] = userdata.get(name)
        except Exception:  # SecretNotFoundError, NotebookAccessError: not granted to this notebook
            continue
    return found


def config() -> dict:
    import json
    from pathlib import Path

    path = Path(settings.get("COLABKIT_CONFIG") or CONFIG_FILE).expanduser()
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ColabkitError(f"{path} is not valid JSON ({exc}); fix or remove it.") from None


def connect(profile: str | None = None, region: str | None = None) -> Aws:
    """A session with credentials and a region, and the account they belong to."""
    import boto3
    import botocore.exceptions

    with errors("reading your AWS credentials"):
        try:
            session = boto3.Session(profile_name=profile)
        except botocore.exceptions.ProfileNotFound:
            raise ColabkitError(f"There is no AWS profile named {profile!r} in ~/.aws/config or ~/.aws/credentials. "
                                "Run `aws configure --profile NAME`, or leave out --profile.") from None
        if session.get_credentials() is None:
            secrets = _colab_secrets()
            if secrets.get("AWS_ACCESS_KEY_ID") and secrets.get("AWS_SECRET_ACCESS_KEY"):
                session = boto3.Session(aws_access_key_id=secrets["AWS_ACCESS_KEY_ID"],
                                        aws_secret_access_key=secrets["AWS_SECRET_ACCESS_KEY"],
                                        aws_session_token=secrets.get("AWS_SESSION_TOKEN"),
                                        region_name=secrets.get("AWS_DEFAULT_REGION"))
        if session.get_credentials() is None:
            raise ColabkitError(
                "No AWS credentials were found. On Colab, add AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "in Secrets (the key icon on the left) and allow this notebook to read them; elsewhere run "
                "`aws configure` or set AWS_PROFILE. To see the job without an account, use --dry-run or --local.")
        region = region or session.region_name or config().get("region")
        if not region:
            raise ColabkitError("No AWS region is set. Pass --region (for example --region us-east-1), or set "
                                "AWS_DEFAULT_REGION.")
        account = session.client("sts", region_name=region).get_caller_identity()["Account"]
    return Aws(session, region, account)


def role_arn(given: str | None, account: str | None = None) -> str:
    role = given or settings.get("COLABKIT_SAGEMAKER_ROLE") or config().get("role")
    if not role:
        raise ColabkitError(
            "SageMaker needs an IAM role to run the job as. Pass --role ARN, set COLABKIT_SAGEMAKER_ROLE, or put "
            f'{{"role": "ARN"}} in {CONFIG_FILE}. To make one: IAM console > Roles > Create role > AWS service: '
            "SageMaker, which attaches AmazonSageMakerFullAccess; its ARN looks like "
            f"arn:aws:iam::{account or '123456789012'}:role/SageMakerExecution.")
    if not role.startswith("arn:"):
        if account is None:
            raise ColabkitError(f"{role!r} is not a role ARN: give it as arn:aws:iam::ACCOUNT:role/NAME.")
        role = f"arn:aws:iam::{account}:role/{role}"  # a bare role name, as the console shows it
    return role


def _explain(code: str, message: str, doing: str) -> tuple[str, str, bool] | None:
    """For the errors a person can act on: what happened, what to do, and whether running it again
    then helps. None for the rest."""
    if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "403"):
        return (f"AWS refused {doing}: {message}", "Give your user (or the role in --role) that permission in IAM "
                "(AmazonSageMakerFullAccess covers SageMaker, S3 and CloudWatch Logs; --secret also needs "
                "secretsmanager:CreateSecret, PutSecretValue and PutResourcePolicy).", True)
    if code == "ResourceLimitExceeded":
        return (f"Your account's SageMaker quota stops {doing}: {message}", "New accounts have a quota of 0 for "
                "most GPU training instances. Ask for more in the Service Quotas console: AWS services > Amazon "
                "SageMaker > '<instance type> for training job usage' (and '... for spot training job usage' "
                "for Spot), or choose another instance type.", False)
    if code in ("ValidationException", "InvalidParameterValue", "InvalidRequest"):
        return f"AWS did not accept the request while {doing}: {message}", "", False
    if code in ("ThrottlingException", "Throttling", "TooManyRequestsException", "SlowDown",
                "RequestLimitExceeded", "ServiceUnavailable", "503"):
        return f"AWS is throttling requests ({doing}): {message}", "Wait a minute.", True
    if code == "NoSuchBucket":
        return (f"The S3 bucket does not exist ({doing}): {message}", "Leave out --bucket to use "
                "sagemaker-<region>-<account>, which colabkit creates, or create the bucket first.", False)
    if code in ("ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "UnrecognizedClientException",
                "SignatureDoesNotMatch", "InvalidAccessKeyId", "AuthFailure"):
        return (f"AWS did not accept your credentials ({doing}): {message}", "Check the access key and secret "
                "(renew them if they are temporary).", True)
    return None


def _paragraph(said: str, todo: str, again: bool, job: str | None) -> str:
    """One paragraph. After a job was created, never "run it again" (that submits a second, billed
    job): `job` says that it exists and how to follow it."""
    if job:
        return " ".join(part for part in (said, todo, job) if part)
    return " ".join(part for part in (said, todo, "Then run it again." if again else "") if part)


def job_exists(name: str, region: str) -> str:
    """What every failure after a successful CreateTrainingJob says."""
    console = f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/jobs/{name}"
    return (f"The training job {name} exists on SageMaker (it was created): don't export again, which would start a "
            "second, billed job. Follow it with job.wait() and job.fetch() (the job %to_sagemaker returned: `_` "
            f"in the next cell), `aws sagemaker describe-training-job --training-job-name {name}`, or the console: "
            f"{console}")


TRANSFER_ERROR = re.compile(r"An error occurred \((?P<code>[\w.]+)\)[^:]*: (?P<message>.*)", re.S)


@contextlib.contextmanager
def errors(doing: str, job: str | None = None):
    """Turn AWS and connection errors raised inside into one clear ColabkitError. `job` (from
    job_exists()): the job was created already, and the paragraph says so instead of "run it again"."""
    import boto3.exceptions
    import botocore.exceptions as bx
    import s3transfer.exceptions

    try:
        yield
    except bx.ClientError as exc:
        info = exc.response.get("Error", {})
        raise _said(str(info.get("Code", "")), str(info.get("Message", "") or exc), doing, job) from None
    except boto3.exceptions.S3UploadFailedError as exc:  # upload_file wraps S3's answer in its text
        found = TRANSFER_ERROR.search(str(exc))
        code, message = (found.group("code"), found.group("message")) if found else ("", str(exc))
        raise _said(code, message, doing, job) from None
    except (boto3.exceptions.RetriesExceededError, s3transfer.exceptions.RetriesExceededError) as exc:
        raise ColabkitError(_paragraph(f"The transfer failed while {doing}, again after retries ({exc}).",
                                       "Check the network connection.", True, job)) from None
    except bx.NoCredentialsError:
        raise ColabkitError(_paragraph("No AWS credentials were found: run `aws configure`, or on Colab add them in "
                                       "Secrets.", "", False, job)) from None
    except bx.NoRegionError:
        raise ColabkitError("No AWS region is set: pass --region, or set AWS_DEFAULT_REGION.") from None
    except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError) as exc:
        raise ColabkitError(_paragraph(f"AWS could not be reached while {doing} ({exc}).",
                                       "Check the network connection.", True, job)) from None
    except bx.ParamValidationError as exc:
        raise ColabkitError(f"The request for {doing} is not valid: {exc}") from None


def _said(code: str, message: str, doing: str, job: str | None) -> ColabkitError:
    message = message.strip()
    if message and not message.endswith("."):
        message += "."
    said, todo, again = _explain(code, message, doing) or (f"AWS answered {code} while {doing}: {message}", "", False)
    return ColabkitError(_paragraph(said, todo, again, job))
