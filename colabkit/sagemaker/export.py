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
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from ..errors import ColabkitError
from ..units import format_bytes, parse_duration
from . import (aws, capture, convert, drive, hardware, images, job_secrets, launch, local, packages, portability,
               pricing, request, results, secrets, summary, upload, validate)

DRIVE_CHANNEL = "drive"
PLACEHOLDER_ACCOUNT = "ACCOUNT"  # --dry-run without credentials
LOCAL, DRY_RUN, SUBMIT = "local", "dry-run", "submit"


@dataclass(frozen=True)
class Options:
    """What the person asked for, checked once when made: a bad option stops the export before
    anything is built, uploaded or run."""
    instance_type: str
    local: bool = False
    dry_run: bool = False
    wait: bool = False
    all_cells: bool = False
    allow_secrets: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()  # given to the job through AWS Secrets Manager (job_secrets.py)
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
    gpus: int | None = None  # per instance, for a type colabkit's table lacks

    def __post_init__(self):
        validate.instance_type(self.instance_type)
        if self.local and self.dry_run:
            raise ColabkitError("Choose one of --local (run the job here) and --dry-run (show the request).")
        if self.instances < 1:
            raise ColabkitError(f"--instances must be 1 or more (got {self.instances}).")
        parse_duration(self.max_run)
        if self.max_wait is not None:
            parse_duration(self.max_wait)
        if self.image is None:
            images.processor(self.instance_type)  # refuses the types no PyTorch image serves
        job_secrets.check_names(self.secrets)

    @property
    def mode(self) -> str:
        return LOCAL if self.local else DRY_RUN if self.dry_run else SUBMIT


@dataclass(frozen=True)
class Export:
    """The source folder and what the job starts from, before it runs anywhere."""
    name: str
    notebook: str
    cells: tuple[capture.Cell, ...]  # as captured, parsed once
    folder: Path
    source: convert.SourceFolder
    framework: images.Framework
    store: object  # the notebook's CheckpointStore: the job starts from it, and its checkpoints come back to it
    checkpoint: object  # its latest valid Checkpoint, or None
    drive_files: tuple[Path, ...]  # files, each within drive.py's bounds
    notebook_folder: Path  # where the files the job's cells write come back to
    secrets: job_secrets.Values = field(default_factory=job_secrets.Values)  # --secret's values, shown by name


def _notebook_store(runtime):
    """The checkpoint store the job starts from: this notebook's (the active %checkpoint's, else
    the one its storage holds), never another notebook's."""
    from ..checkpoint import session
    from ..checkpoint.store import CheckpointStore

    active = session.active(runtime)
    if active is not None:
        active.settle()  # the save in flight, or the live state no checkpoint holds yet, is part of the run
        return active.store
    return CheckpointStore(runtime.checkpoint_places().root)  # where the job's checkpoints come back to


def _own_checkpoint(store, notebook: str):
    """The latest checkpoint of `store`, refused loudly when another notebook wrote it."""
    # Hashes are checked while the checkpoint uploads (submit), or by the job when it restores.
    checkpoint = store.latest_valid(verify=False)[0]
    writer = checkpoint.manifest.get("notebook") if checkpoint is not None else None
    if writer is not None and writer != notebook:
        raise ColabkitError(
            f"The latest checkpoint in {store.root} ({checkpoint.id}) was written by the notebook {writer!r}, "
            f"not {notebook!r}: the job would resume another notebook's run. Export from {writer!r}, or give "
            f"this notebook's own storage (colabkit export --storage PATH, %mount --to PATH).")
    return checkpoint


def prepare(captured: capture.Captured, options: Options, runtime, echo=print) -> Export:
    """Check the cells, say what behaves differently in a job, write the source folder, find the
    checkpoint and the Drive files."""
    from .. import platform, storage

    if not captured.cells:
        raise ColabkitError("There are no code cells to export before this one.")
    given = job_secrets.resolve(options.secrets)
    for note in secrets.check(captured.cells, options.allow_secrets, options.secrets, given):
        echo(f"[colabkit] WARNING: {note}")
    in_kernel = runtime.shell is not None  # the notebook's own kernel: the versions it ran with
    version_of = _kernel_version if in_kernel else packages.colab_versions().get
    framework = images.framework_for({i.module for i in packages.imports(captured.cells)},
                                     lambda name: version_of(packages.normalize(name)), options.instance_type)
    needs = packages.requirements(captured.cells, framework.provides, in_kernel)
    name = validate.job_name_for(captured.name, time.time())
    folder = runtime.storage_root() / "sagemaker" / name
    source = convert.convert(captured.cells, folder / "source", needs.pins)
    drive_files = drive.select(captured.cells, storage.DRIVE_MOUNTPOINT)
    store = _notebook_store(runtime)
    checkpoint = _own_checkpoint(store, captured.name)
    echo(f"[colabkit] exported {len(captured.cells)} cell(s) from {captured.origin} to {source.path}")
    if captured.left_out:
        echo(f"[colabkit] left out the cells that raised: {', '.join(captured.left_out)}. If the job needs one, "
             "run it again without the error first.")
    echo(f"[colabkit] image: {framework.reason}")
    if source.requirements:
        versions = "this kernel's" if in_kernel else f"Colab's ({packages.COLAB_LIST_DATE})"
        echo(f"[colabkit] the job installs what the cells import and don't install, at {versions} versions: "
             + ", ".join(source.requirements))
    for note in needs.notes:
        echo(f"[colabkit] WARNING: {note}")
    for finding in portability.findings(captured.cells, options.secrets, gpu=hardware.has_gpu(options.instance_type)):
        echo(f"[colabkit] {'WARNING: ' if finding.fails else ''}{finding}")
    for line in drive_files.lines(Path(storage.DRIVE_MOUNTPOINT)):
        echo(f"[colabkit] {line}")
    echo(f"[colabkit] {results.RULE}")
    notebook_folder = runtime.notebook.folder if platform.detect_name() != platform.COLAB else Path.cwd()
    return Export(name, captured.name, captured.cells, folder, source, framework, store, checkpoint,
                  drive_files.files, notebook_folder, given)


def _kernel_version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _stage_drive(export: Export, into: Path) -> Path:
    """The Drive files, laid out under `into` as they are under the mount point (a --local run's channel)."""
    import shutil

    from .. import storage

    for path in export.drive_files:
        target = into / path.relative_to(storage.DRIVE_MOUNTPOINT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return into


def usage(runtime) -> pricing.Usage | None:
    """What this kernel's watch saw this session (peak GPU memory on the busiest GPU, peak RAM)."""
    if runtime.watch is None:
        return None
    peaks, latest = runtime.watch.watcher.session_peaks, runtime.watch.watcher.latest
    gpu_peak, gpu_name, gpu_total = None, None, None
    if peaks.gpu_memory_used and latest is not None:
        index, gpu_peak = max(peaks.gpu_memory_used.items(), key=lambda item: item[1])
        reading = next((g for g in latest.gpus if g.index == index), None)
        if reading is not None:
            gpu_name, gpu_total = reading.name, reading.memory_total
    return pricing.Usage(gpu_name, gpu_peak, gpu_total, peaks.ram_used)


def plan(export: Export, options: Options, connection=None, echo=print) -> request.Plan:
    """The job as it will be sent; without a connection (--dry-run, no credentials) with placeholders."""
    region = options.region or (connection.region if connection else None) or _default_region(options.profile)
    account = connection.account if connection else PLACEHOLDER_ACCOUNT
    if options.image:
        image = images.Image(options.image)
    else:
        image = images.training_image(region, options.instance_type, export.framework)
        if image.note:
            echo(f"[colabkit] note: {image.note}")
    try:
        role = aws.role_arn(options.role, account)
    except ColabkitError:
        if connection is not None:
            raise
        role = f"arn:aws:iam::{account}:role/YOUR-SAGEMAKER-ROLE"
        if options.mode == DRY_RUN:
            echo("[colabkit] note: no role given (--role ARN or COLABKIT_SAGEMAKER_ROLE); the request shows a "
                 "placeholder")
    max_run = int(parse_duration(options.max_run))
    spot = not options.on_demand and export.checkpoint is not None
    if not options.on_demand and not spot:
        echo("[colabkit] on demand: the run has no checkpoint to resume from after a Spot interruption "
             "(use %checkpoint to make one, and Spot costs less)")
    max_wait = int(parse_duration(options.max_wait)) if options.max_wait else 2 * max_run
    started = launch.decide(options.instance_type, options.instances, export.cells, options.gpus)
    if started.note:
        echo(f"[colabkit] {started.note}")
    bucket = options.bucket or aws.config().get("bucket") or upload.default_bucket(region, account)
    prefix = f"colabkit/{validate.slug(export.notebook)}/{export.name}"
    built = request.Plan(
        job_name=export.name, notebook=export.notebook, region=region, role=role, image=image.uri,
        instance_type=options.instance_type, instances=options.instances, volume_gb=options.volume_gb,
        max_run=max_run, spot=spot, max_wait=max_wait if spot else None, bucket=bucket, prefix=prefix,
        distributed=started.distributed, environment=_job_environment(export))
    if export.drive_files:
        built = _with_drive(built)
    return built


def _job_environment(export: Export) -> dict[str, str]:
    """What the job's colabkit needs to know: which notebook it runs (its checkpoints say so), and
    where the notebook mounted Drive when Drive files come along."""
    from .. import storage

    environment = {"COLABKIT_NOTEBOOK": export.notebook}
    if export.drive_files:
        environment["COLABKIT_DRIVE_MOUNT"] = storage.DRIVE_MOUNTPOINT
    return environment


def _with_drive(built: request.Plan) -> request.Plan:
    return replace(built, channels={**built.channels, DRIVE_CHANNEL: built.s3("input", DRIVE_CHANNEL)})


def _default_region(profile: str | None) -> str:
    import boto3
    import botocore.exceptions

    try:
        return boto3.Session(profile_name=profile).region_name or aws.config().get("region") or "us-east-1"
    except botocore.exceptions.ProfileNotFound:
        return "us-east-1"


def _cost(built: request.Plan, export: Export, runtime, echo, connection: aws.Aws | None = None) -> pricing.Estimate:
    """Say the cost estimate (the run's pace is in its checkpoint's manifest) and the instance advice."""
    pace = export.checkpoint.manifest if export.checkpoint is not None else None
    estimate = pricing.estimate(built.instance_type, built.instances, built.spot, pace,
                                connection.session if connection else None, built.region)
    for line in estimate.lines() + pricing.advise(usage(runtime), built.instance_type):
        echo(f"[colabkit] {line}")
    return estimate


def run_local(export: Export, body: dict, echo=print) -> local.LocalRun:
    """The request a submit would send, run on this machine (see local.py)."""
    with tempfile.TemporaryDirectory() as temp:
        channels = {DRIVE_CHANNEL: _stage_drive(export, Path(temp) / DRIVE_CHANNEL)} if export.drive_files else {}
        return local.run(body, export.source, export.store, export.folder / "local",
                         export.folder.parent / "environments", channels=channels,
                         notebook_folder=export.notebook_folder, secrets=export.secrets, echo=echo)


def submit(export: Export, built: request.Plan, body: dict, estimate: pricing.Estimate, connection: aws.Aws,
           create_bucket: bool, echo=print):
    """Upload what the job reads, send CreateTrainingJob, and return the job to follow."""
    from .. import storage
    from .job import TrainingJob

    s3 = connection.client("s3")
    upload.ensure_bucket(s3, built.bucket, built.region, create_bucket, connection.account)
    with tempfile.TemporaryDirectory() as temp, ThreadPoolExecutor(1) as checker:
        checked = checker.submit(_valid_or_older, export) if export.checkpoint is not None else None
        archive = upload.source_archive(export.source.path, Path(temp) / "sourcedir.tar.gz")
        going = [archive, *export.drive_files] + (upload.files_in(export.checkpoint.path) if checked else [])
        packs = upload.packs_of(export.checkpoint.path).values() if checked else ()
        progress = upload.Progress(sum(path.stat().st_size for path in going) + sum(p["size"] for p in packs), echo)
        if checked is not None:  # first: a checkpoint holding a token stops the export before anything goes
            size = upload.put_checkpoint(s3, export.checkpoint.path, built.checkpoint_uri, export.secrets, progress)
            message, older = checked.result()
            echo(f"[colabkit] uploaded {export.checkpoint.id} ({format_bytes(size)}); {message}")
            if older is not None:
                upload.put_checkpoint(s3, older.path, built.checkpoint_uri, export.secrets)
        upload.put_file(s3, archive, built.source_uri, progress)
        for path in export.drive_files:  # straight from Drive, laid out as under its mount point
            upload.put_file(s3, path, f"{built.channels[DRIVE_CHANNEL]}/"
                                      f"{path.relative_to(storage.DRIVE_MOUNTPOINT).as_posix()}", progress)
    with aws.errors(f"creating the training job {built.job_name}"):
        connection.client("sagemaker").create_training_job(**body)
    echo(f"[colabkit] submitted {built.job_name} ({built.instances} x {built.instance_type}"
         f"{', Spot' if built.spot else ''}) in {built.region}")
    job = TrainingJob(connection, built.job_name, export.folder, export.store, estimate.on_demand_per_hour,
                      export.notebook_folder)
    try:
        job.describe()
    except ColabkitError as exc:  # the job exists: it is returned all the same, to follow once AWS answers
        echo(f"[colabkit] WARNING: {exc}")
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


@dataclass(frozen=True)
class Outcome:
    """What an export did, in one shape for every mode: the request it built (sent, run here, or
    shown) and how it went: True/False, or None while a submitted job still runs."""
    mode: str  # LOCAL, DRY_RUN or SUBMIT
    export: Export
    request: dict
    succeeded: bool | None
    job: object = None  # the TrainingJob, when submitted
    ran: local.LocalRun | None = None  # the run, with --local


def inside_job() -> bool:
    """Whether this runs inside a SageMaker job, where the notebook's own export cell must not
    export again (it would submit a job from the job)."""
    from .. import platform

    if platform.detect_name() != platform.SAGEMAKER_JOB:
        return False
    print("[colabkit] the export cell does not run inside the job", flush=True)
    return True


def run(options: Options, captured: capture.Captured, runtime=None, echo=print) -> Outcome:
    """Build the export and run it as `options.mode` says: here (--local), as a request to read
    (--dry-run), or on SageMaker."""
    from .. import runtime as runtimes

    runtime = runtime or runtimes.current()
    connection = None
    if options.mode == SUBMIT:  # credentials and role first: no export to throw away
        connection = aws.connect(options.profile, options.region)
        aws.role_arn(options.role, connection.account)
    export = prepare(captured, options, runtime, echo)
    built = job_secrets.give(plan(export, options, connection, echo), export.secrets, connection, echo)
    body = request.check(request.build(built))
    (export.folder / "request.json").write_text(json.dumps(body, indent=1))
    if options.mode == LOCAL:
        if built.distributed:
            echo("[colabkit] --local runs one training process on this machine; the job starts one per GPU and host")
        ran = run_local(export, body, echo)
        return Outcome(LOCAL, export, body, ran.succeeded, ran=ran)
    estimate = _cost(built, export, runtime, echo, connection)
    if options.mode == DRY_RUN:
        summary.dry_run(body, export.folder / "request.json", export.source.path, echo)
        return Outcome(DRY_RUN, export, body, True)
    job = submit(export, built, body, estimate, connection, create_bucket=options.bucket is None, echo=echo)
    return Outcome(SUBMIT, export, body, None, job=job)


def finish(outcome: Outcome, wait: bool, in_notebook: bool, echo=print) -> Outcome:
    """What follows an export: a failed local run is said as an error; a submitted job is followed to
    its end when `wait` (its results brought back, its failure said as an error)."""
    if outcome.mode == LOCAL:
        ran = outcome.ran
        if not ran.succeeded:
            raise ColabkitError(f"The job failed (exit code {ran.exit_code}); its log is above and in "
                                f"{ran.base / 'output' / 'failure'}.")
        if ran.final_checkpoint:
            echo(f"colabkit: {ran.final_checkpoint} from the job is in your checkpoints: %checkpoint restore loads it.")
    elif outcome.mode == SUBMIT and wait:
        follow(outcome.job, echo=echo, in_notebook=in_notebook)
        return replace(outcome, succeeded=outcome.job.status == "Completed")
    return outcome


def to_sagemaker(instance_type: str, notebook: str | None = None, **options) -> Outcome | None:
    """The Python API of `%to_sagemaker`: export this notebook's cells above the calling one (or
    every cell of the .ipynb file `notebook`); options as Options' fields (local=True, dry_run=True,
    wait=True, role=..., ...). Returns the Outcome (its .job is the TrainingJob once submitted)."""
    from .. import platform
    from .. import runtime as runtimes
    from ..notebook import from_file

    if inside_job():
        return None
    known = {f.name for f in fields(Options)} - {"instance_type"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ColabkitError(f"to_sagemaker() has no option {', '.join(unknown)}; it takes {', '.join(sorted(known))}.")
    settings = Options(instance_type=instance_type, **options)
    if notebook is not None:  # that file's run, with its own storage beside it
        runtime = runtimes.Runtime(notebook=from_file(notebook))
        captured = capture.read_notebook(notebook)
    else:
        runtime = runtimes.current()
        captured = capture.capture(runtime, capture.calling_cell(runtime.shell), settings.all_cells)
    return finish(run(settings, captured, runtime), settings.wait, in_notebook=platform.in_kernel())


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
    models, checkpoint = job.fetch(echo)
    if models:
        echo(f"[colabkit] model files in {job.folder / 'model'}: {', '.join(p.name for p in models)}")
    if checkpoint:
        echo(f"[colabkit] {checkpoint} from the job is in your checkpoints: %checkpoint restore loads it.")
    if status == "Failed":
        raise ColabkitError(f"The SageMaker job {job.name} failed: {job.last.get('FailureReason', 'no reason given')}. "
                            "Its log lines are above; what it saved before failing was brought back.")
    return job
