"""A submitted training job, followed from the notebook: status, time, cost so far, log lines,
stop, and the results brought back (the model files, and the final checkpoint into the run's
store so `%checkpoint restore` and `resumable()` continue from it).
"""

from __future__ import annotations

import datetime as dt
import html
import re
import tarfile
import tempfile
import time
from pathlib import Path

from .. import storage
from ..checkpoint.mirror import copy_checkpoint
from ..checkpoint import codec
from ..checkpoint.codec import newest_first
from ..checkpoint.store import CheckpointStore
from ..errors import ColabkitError
from ..units import format_duration
from . import aws, results, upload

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colour codes a tool in the job may still print
ENDED = ("Completed", "Failed", "Stopped")


class TrainingJob:
    def __init__(self, connection: aws.Aws, name: str, folder: Path, store: CheckpointStore | None = None,
                 price_per_hour: float | None = None, notebook_folder: Path | None = None):
        """`notebook_folder`: where the files the cells wrote land (results.py)."""
        self.aws, self.name, self.folder, self.store = connection, name, Path(folder), store
        self.notebook_folder = notebook_folder
        self.price_per_hour = price_per_hour  # on demand, one instance
        self.sagemaker, self.s3, self.logs_client = (connection.client(s) for s in ("sagemaker", "s3", "logs"))
        self.last: dict = {}
        self._log_tokens: dict[str, str | None] = {}
        self.exists = aws.job_exists(name, connection.region)  # what every failure from here on says

    # -- reading -------------------------------------------------------------------------
    def describe(self) -> dict:
        with aws.errors(f"reading the status of training job {self.name}", self.exists):
            self.last = self.sagemaker.describe_training_job(TrainingJobName=self.name)
        return self.last

    @property
    def status(self) -> str | None:
        return self.last.get("TrainingJobStatus")

    @property
    def secondary_status(self) -> str | None:
        return self.last.get("SecondaryStatus")

    @property
    def elapsed(self) -> float | None:
        start = self.last.get("TrainingStartTime") or self.last.get("CreationTime")
        if start is None:
            return None
        end = self.last.get("TrainingEndTime") or dt.datetime.now(dt.timezone.utc)
        return (end - start).total_seconds()

    @property
    def cost_so_far(self) -> float | None:
        """Billable seconds (Spot already discounted by SageMaker in them) x instances x the rate."""
        billable = self.last.get("BillableTimeInSeconds")
        if billable is None or self.price_per_hour is None:
            return None
        instances = self.last.get("ResourceConfig", {}).get("InstanceCount", 1)
        return billable * instances * self.price_per_hour / 3600

    def new_log_lines(self) -> list[str]:
        """CloudWatch lines written since the last call, from every stream of the job (one per host)."""
        lines = []
        with aws.errors(f"reading the logs of training job {self.name}", self.exists):
            try:
                streams = self.logs_client.describe_log_streams(
                    logGroupName=LOG_GROUP, logStreamNamePrefix=f"{self.name}/").get("logStreams", [])
            except self.logs_client.exceptions.ResourceNotFoundException:
                return []  # the group appears with the job's first log line
            for stream in sorted(s["logStreamName"] for s in streams):
                arguments = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
                if self._log_tokens.get(stream):
                    arguments["nextToken"] = self._log_tokens[stream]
                reply = self.logs_client.get_log_events(**arguments)
                self._log_tokens[stream] = reply.get("nextForwardToken")
                host = stream.split("/", 1)[-1].rsplit("-", 1)[0]  # <job>/algo-1-<epoch seconds>
                prefix = f"[{host}] " if len(streams) > 1 else ""
                lines += [prefix + ANSI.sub("", event["message"]) for event in reply.get("events", [])]
        return lines

    def summary(self) -> str:
        parts = [f"{self.name}: {self.status or 'unknown'}"]
        if self.secondary_status and self.secondary_status != self.status:
            parts.append(self.secondary_status)
        parts.append(f"elapsed {format_duration(self.elapsed)}")
        if self.last.get("BillableTimeInSeconds") is not None:
            parts.append(f"billable {format_duration(self.last['BillableTimeInSeconds'])}")
        if self.cost_so_far is not None:
            parts.append(f"cost so far ${self.cost_so_far:.2f}")
        if self.last.get("FailureReason"):
            parts.append(f"reason: {self.last['FailureReason']}")
        return " · ".join(parts)

    def __repr__(self) -> str:
        return f"<colabkit TrainingJob {self.summary() if self.last else self.name}>"

    def _repr_html_(self) -> str:
        region = self.aws.region
        link = (f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}"
                f"#/jobs/{html.escape(self.name)}")
        return (f"<div class='colabkit-job'><b>SageMaker job</b> {html.escape(self.summary())} "
                f"(<a href='{link}' target='_blank'>console</a>)</div>")

    # -- acting --------------------------------------------------------------------------
    def wait(self, poll: float = 30.0, echo=print, show=None) -> str:
        """Follow the job until it ends: new log lines through `echo`, the status through `show`."""
        while True:
            self.describe()
            for line in self.new_log_lines():
                echo(line)
            if show is not None:
                show(self)
            if self.status in ENDED:
                return self.status
            time.sleep(poll)

    def stop(self) -> None:
        with aws.errors(f"stopping training job {self.name}", self.exists):
            self.sagemaker.stop_training_job(TrainingJobName=self.name)

    def fetch(self, echo=print) -> tuple[list[Path], str | None]:
        """Bring the model files into <folder>/model, the files the cells wrote to where the notebook
        expects them, and the newest checkpoint into the run's store."""
        self.describe()
        with tempfile.TemporaryDirectory() as temp:
            models, checkpoint = self._fetch_model(Path(temp)), self._fetch_checkpoint(Path(temp))
        if self.notebook_folder is not None:
            placed, kept_apart = results.place(self.folder / "model", self.notebook_folder)
            for line in results.describe_placed(placed, kept_apart, self.notebook_folder):
                echo(line)
        return models, checkpoint

    def _fetch_model(self, temp: Path) -> list[Path]:
        artifact = self.last.get("ModelArtifacts", {}).get("S3ModelArtifacts")
        if not artifact:
            return []
        bucket, key = upload.split_uri(artifact)
        archive = temp / "model.tar.gz"
        with aws.errors(f"downloading {artifact}", self.exists):
            try:
                self.s3.download_file(bucket, key, str(archive))
            except self.s3.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey"):
                    raise
                return []  # the job wrote no model files
        target = self.folder / "model"
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):  # refuses members outside the folder, links out, devices
                try:
                    tar.extractall(target, filter="data")
                except tarfile.FilterError as exc:
                    raise ColabkitError(f"{artifact} holds a file that would be written outside {target} ({exc}), "
                                        f"so it was not unpacked. {self.exists}") from None
            else:
                for member in tar.getmembers():
                    upload.inside(target, member.name, f"{artifact}: {member.name}", self.exists)
                    if member.issym() or member.islnk() or not (member.isfile() or member.isdir()):
                        raise ColabkitError(f"{artifact} holds {member.name}, which is not a plain file or folder, so "
                                            f"nothing more was unpacked. {self.exists}")
                tar.extractall(target)
        return sorted(p for p in target.rglob("*") if p.is_file())

    def _fetch_checkpoint(self, temp: Path) -> str | None:
        """The newest checkpoint the job left that verifies, copied into the run's store. Step
        folders are downloaded newest first, and only until one verifies."""
        uri = self.last.get("CheckpointConfig", {}).get("S3Uri")
        if not uri or self.store is None:
            return None
        job_store = CheckpointStore(temp / "job")
        stored = f"{uri}/{storage.CHECKPOINTS}"  # the job's storage is /opt/ml/checkpoints, synced with `uri`
        for name in newest_first(upload.subfolders(self.s3, stored, self.exists)):
            upload.inside(job_store.root, name, f"{stored}/{name}", self.exists)
            upload.get_prefix(self.s3, f"{stored}/{name}", job_store.root / name, self.exists)
            upload.get_packs(self.s3, stored, job_store.root, job_store.root / name, self.exists)
            final, _ = job_store.latest_valid()  # the damaged ones downloaded before are skipped
            if final is not None:
                for file in codec.read_manifest(final.path)["files"]:  # the names the copy writes
                    upload.inside(final.path, file, f"{stored}/{final.id}/{codec.MANIFEST} (a file named {file!r})",
                                  self.exists)
                return final.id if copy_checkpoint(final.path, self.store) else None
        return None
