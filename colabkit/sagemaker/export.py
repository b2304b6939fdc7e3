"""`%to_sagemaker` and `colabkit export`: capture the notebook's run, convert it, and run it as a
SageMaker training job: on this machine (--local), as a request to read (--dry-run), or on AWS.

Where it is written: <storage>/sagemaker/<job name>/ holds source/ (the job's source folder),
request.json (what is or would be sent), local/ (the /opt/ml stand-in of a --local run) and
model/ (the model files fetched back from a finished job).
"""

from __future__ import annotations

import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from pathlib import Path

from ..errors import ColabkitError
from ..units import parse_duration
from . import aws, capture, convert, images, local, pricing, request, secrets, upload, validate

DRIVE_CHANNEL = "drive"
PLACEHOLDER_ACCOUNT = "ACCOUNT"  # --dry-run without credentials


@dataclass(frozen=True)
class Options:
    instance_type: str
    local: bool = False
    dry_run: bool = False
    wait: bool = False
    all_cells: bool = False
    allow_secrets: tuple[str, ...] = ()
    instances: int = 1
    volume_gb: int = 30
    max_run: str = "24h"
    max_wait: str | None = None  # Spot: default twice max_run
    on_demand: bool = False
    role: str | None = None
    region: str | None = None
    profile: str | None = None
    bucket: str | None = None
    image: str | None = None


@dataclass(frozen=True)
class Export:
    """The source folder and what the job starts from, before it runs anywhere."""
    name: str
    notebook: str
    folder: Path
    source: convert.SourceFolder
    store: object  # the run's CheckpointStore, or None
    checkpoint: object  # its latest valid Checkpoint, or None
    drive_files: tuple[Path, ...]


def _notebook_store():
    """The checkpoint store the job should start from: the active %checkpoint's, else the default."""
    from .. import storage
    from ..checkpoint import session
    from ..checkpoint.store import CheckpointStore

    active = session.active()
    if active is not None:
        active.wait()  # a save in flight is part of the run
        return active.store
    folder = (storage.current() or storage.mount()) / "checkpoints"
    return CheckpointStore(folder) if folder.is_dir() else None


def prepare(captured: capture.Captured, options: Options, echo=print) -> Export:
    """Check the cells, write the source folder, find the checkpoint and the Drive files."""
    from .. import storage

    if not captured.cells:
        raise ColabkitError("There are no code cells to export before this one.")
    secrets.check(captured.cells, options.allow_secrets)
    name = validate.job_name_for(captured.name, time.time())
    folder = (storage.current() or storage.mount()) / "sagemaker" / name
    source = convert.convert(captured.cells, folder / "source")
    drive_files = tuple(convert.drive_paths(captured.cells, storage.DRIVE_MOUNTPOINT))
    store = _notebook_store()
    # Hashes are checked while the checkpoint uploads (submit), or by the job when it restores.
    checkpoint = store.latest_valid(verify=False)[0] if store is not None else None
    echo(f"[colabkit] exported {len(captured.cells)} cell(s) from {captured.origin} to {source.path}"
         + (f"; requirements: {', '.join(source.requirements)}" if source.requirements else ""))
    if drive_files:
        echo(f"[colabkit] Drive files the cells read go with the job: {', '.join(map(str, drive_files))}")
    return Export(name, captured.name, folder, source, store, checkpoint, drive_files)


def _stage_drive(export: Export, into: Path) -> Path:
    """The Drive files, laid out under `into` as they are under the mount point (a --local run's channel)."""
    import shutil

    from .. import storage

    for path in export.drive_files:
        target = into / path.relative_to(storage.DRIVE_MOUNTPOINT)
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if path.is_dir() else shutil.copyfile)(path, target)
    return into


def _torch_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def usage() -> pricing.Usage | None:
    """What %gpuwatch saw this session (peak GPU memory on the busiest GPU, peak RAM)."""
    from .. import monitor

    active = monitor.active()
    if active is None:
        return None
    peaks, latest = active.watcher.session_peaks, active.watcher.latest
    gpu_peak, gpu_name, gpu_total = None, None, None
    if peaks.gpu_memory_used and latest is not None:
        index, gpu_peak = max(peaks.gpu_memory_used.items(), key=lambda item: item[1])
        reading = next((g for g in latest.gpus if g.index == index), None)
        if reading is not None:
            gpu_name, gpu_total = reading.name, reading.memory_total
    return pricing.Usage(gpu_name, gpu_peak, gpu_total, peaks.ram_used)


def plan(export: Export, options: Options, connection=None, echo=print) -> request.Plan:
    """The job as it will be sent; without a connection (--dry-run, no credentials) with placeholders."""
    from .. import storage

    region = options.region or (connection.region if connection else None) or _default_region(options.profile)
    account = connection.account if connection else PLACEHOLDER_ACCOUNT
    if options.image:
        image = images.Image(options.image)
    else:
        image = images.training_image(region, options.instance_type, _torch_version())
        if image.note:
            echo(f"[colabkit] note: {image.note}")
    try:
        role = aws.role_arn(options.role, account)
    except ColabkitError:
        if connection is not None:
            raise
        role = f"arn:aws:iam::{account}:role/YOUR-SAGEMAKER-ROLE"
        echo("[colabkit] note: no role given (--role ARN or COLABKIT_SAGEMAKER_ROLE); the request shows a placeholder")
    max_run = int(parse_duration(options.max_run))
    spot = not options.on_demand and export.checkpoint is not None
    if not options.on_demand and not spot:
        echo("[colabkit] on demand: the run has no checkpoint to resume from after a Spot interruption "
             "(use %checkpoint to make one, and Spot costs less)")
    max_wait = int(parse_duration(options.max_wait)) if options.max_wait else 2 * max_run
    gpus = pricing.INSTANCE_TYPES[options.instance_type].gpus if options.instance_type in pricing.INSTANCE_TYPES else 0
    bucket = options.bucket or aws.config().get("bucket") or upload.default_bucket(region, account)
    prefix = f"colabkit/{validate.slug(export.notebook)}/{export.name}"
    built = request.Plan(
        job_name=export.name, notebook=export.notebook, region=region, role=role, image=image.uri,
        instance_type=options.instance_type, instances=options.instances, volume_gb=options.volume_gb,
        max_run=max_run, spot=spot, max_wait=max_wait if spot else None, bucket=bucket, prefix=prefix,
        gpus_per_instance=gpus)
    if export.drive_files:
        built = _with_drive(built, storage.DRIVE_MOUNTPOINT)
    return built


def _with_drive(built: request.Plan, mount_point: str) -> request.Plan:
    return replace(built, channels={**built.channels, DRIVE_CHANNEL: built.s3("input", DRIVE_CHANNEL)},
                   environment={**built.environment, "COLABKIT_DRIVE_MOUNT": mount_point})


def _default_region(profile: str | None) -> str:
    import boto3
    import botocore.exceptions

    try:
        return boto3.Session(profile_name=profile).region_name or aws.config().get("region") or "us-east-1"
    except botocore.exceptions.ProfileNotFound:
        return "us-east-1"


def _cost(built: request.Plan, export: Export, echo, connection: aws.Aws | None = None) -> pricing.Estimate:
    """Say the cost estimate (the run's pace is in its checkpoint's manifest) and the instance advice."""
    pace = export.checkpoint.manifest if export.checkpoint is not None else None
    estimate = pricing.estimate(built.instance_type, built.instances, built.spot, pace,
                                connection.session if connection else None, built.region)
    for line in estimate.lines() + pricing.advise(usage(), built.instance_type):
        echo(f"[colabkit] {line}")
    return estimate


def run_local(export: Export, echo=print) -> local.LocalRun:
    from .. import storage

    with tempfile.TemporaryDirectory() as temp:
        channels = {DRIVE_CHANNEL: _stage_drive(export, Path(temp) / DRIVE_CHANNEL)} if export.drive_files else {}
        environment = {"COLABKIT_DRIVE_MOUNT": storage.DRIVE_MOUNTPOINT} if export.drive_files else {}
        return local.run(export.source, export.store, export.folder / "local", export.name, channels=channels,
                         environment=environment, echo=echo)


def submit(export: Export, options: Options, connection: aws.Aws, echo=print):
    """Upload what the job reads, send CreateTrainingJob, and return the job to follow."""
    from .. import storage
    from .job import TrainingJob

    built = plan(export, options, connection, echo)
    body = request.check(request.build(built))
    estimate = _cost(built, export, echo, connection)
    (export.folder / "request.json").write_text(json.dumps(body, indent=1))
    s3 = connection.client("s3")
    upload.ensure_bucket(s3, built.bucket, built.region, create=options.bucket is None)
    with tempfile.TemporaryDirectory() as temp, ThreadPoolExecutor(1) as checker:
        checked = checker.submit(_valid_or_older, export) if export.checkpoint is not None else None
        upload.put_file(s3, upload.source_archive(export.source.path, Path(temp) / "sourcedir.tar.gz"),
                        built.source_uri)
        if checked is not None:
            size = upload.put_checkpoint(s3, export.checkpoint.path, built.checkpoint_uri)
            message, older = checked.result()
            echo(f"[colabkit] uploaded {export.checkpoint.id} ({size / 2**20:.1f} MiB); {message}")
            if older is not None:
                upload.put_checkpoint(s3, older.path, built.checkpoint_uri)
        for path in export.drive_files:  # straight from Drive, laid out as under its mount point
            uri = f"{built.channels[DRIVE_CHANNEL]}/{path.relative_to(storage.DRIVE_MOUNTPOINT).as_posix()}"
            if path.is_dir():
                upload.put_folder(s3, path, uri)
            else:
                upload.put_file(s3, path, uri)
    with aws.errors(f"creating the training job {built.job_name}"):
        connection.client("sagemaker").create_training_job(**body)
    echo(f"[colabkit] submitted {built.job_name} ({built.instances} x {built.instance_type}"
         f"{', Spot' if built.spot else ''}) in {built.region}")
    job = TrainingJob(connection, built.job_name, export.folder, export.store, estimate.on_demand_per_hour)
    job.describe()
    return job


def _valid_or_older(export: Export):
    """Checks the hashes of the checkpoint being uploaded, while it uploads. When it is damaged,
    also the newest one that verifies: the job's restore skips the damaged one, as the notebook's
    would. Returns what to say, and that older checkpoint or None."""
    from ..checkpoint.store import CheckpointDamaged

    try:
        export.store.verify(export.checkpoint)
        return "verified: the job resumes from it", None
    except CheckpointDamaged as exc:
        older = export.store.latest_valid()[0]
        return f"{exc} The job resumes from {older.id if older else 'the start'} instead.", older


def dry_run(export: Export, options: Options, echo=print) -> dict:
    """Everything but sending: the request as JSON, and the cost estimate with the table's price."""
    built = plan(export, options, None, echo)
    body = request.check(request.build(built))
    _cost(built, export, echo)
    text = json.dumps(body, indent=1)
    (export.folder / "request.json").write_text(text)
    echo(text)
    echo(f"[colabkit] dry run: nothing was sent. The source folder is {export.source.path}; the request is "
         f"in {export.folder / 'request.json'}.")
    return body


def run_export(options: Options, captured: capture.Captured, echo=print):
    """Run the export as the options say: a LocalRun, the request dict (--dry-run) or a TrainingJob."""
    validate.instance_type(options.instance_type)
    if options.local and options.dry_run:
        raise ColabkitError("Choose one of --local (run the job here) and --dry-run (show the request).")
    if options.instances < 1:
        raise ColabkitError(f"--instances must be 1 or more (got {options.instances}).")
    parse_duration(options.max_run)
    if options.image is None:
        images.processor(options.instance_type)  # refuses the types no PyTorch image serves
    connection = None
    if not (options.local or options.dry_run):  # credentials and role first: no export to throw away
        connection = aws.connect(options.profile, options.region)
        aws.role_arn(options.role, connection.account)
    export = prepare(captured, options, echo)
    if options.local:
        return run_local(export, echo)
    if options.dry_run:
        return dry_run(export, options, echo)
    return submit(export, options, connection, echo)


def to_sagemaker(instance_type: str, notebook: str | None = None, **options):
    """The Python API of `%to_sagemaker`: export this notebook's cells above the calling one (or
    every cell of the .ipynb file `notebook`); options as Options' fields (local=True, dry_run=True,
    wait=True, role=..., ...). Returns a LocalRun, the request, or the TrainingJob."""
    from .. import platform

    known = {f.name for f in fields(Options)} - {"instance_type"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ColabkitError(f"to_sagemaker() has no option {', '.join(unknown)}; it takes {', '.join(sorted(known))}.")
    settings = Options(instance_type=instance_type, **options)
    if notebook is not None:
        captured = capture.read_notebook(notebook)
    else:
        shell = platform.current_shell()
        history = shell.user_ns.get("In") if shell is not None else None
        captured = capture.capture(shell, history[-1] if history else None, settings.all_cells)
    result = run_export(settings, captured)
    if settings.wait and not isinstance(result, (dict, local.LocalRun)):
        follow(result, in_notebook=platform.current_shell() is not None)
    return result


def follow(job, poll: float = 30.0, echo=print, in_notebook: bool = True):
    """Follow a submitted job to its end (its log lines, and a status line that updates in place
    in a notebook), then bring back its model files and final checkpoint."""
    show = lambda j: echo(f"[colabkit] {j.summary()}")  # noqa: E731
    if in_notebook:
        from IPython.display import display

        handle = display(job, display_id=True)
        if handle is not None:
            show = handle.update
    status = job.wait(poll, echo=echo, show=show)
    models, checkpoint = job.fetch()
    if models:
        echo(f"[colabkit] model files in {job.folder / 'model'}: {', '.join(p.name for p in models)}")
    if checkpoint:
        echo(f"[colabkit] {checkpoint} from the job is in your checkpoints: %checkpoint restore loads it.")
    if status == "Failed":
        raise ColabkitError(f"The SageMaker job {job.name} failed: {job.last.get('FailureReason', 'no reason given')}. "
                            "Its log lines are above; what it saved before failing was brought back.")
    return job
