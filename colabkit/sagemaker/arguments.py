"""The export's options, declared once for `%to_sagemaker` and `colabkit export` alike."""

from __future__ import annotations

ARGUMENTS = (
    (("--local",), dict(action="store_true", help="Run the exported job on this machine in a SageMaker-like "
                                                   "layout (no Docker, no AWS).")),
    (("--dry-run",), dict(action="store_true", help="Build everything and print the request; send nothing.")),
    (("--wait",), dict(action="store_true", help="Follow the job until it ends, then fetch its results.")),
    (("--all",), dict(action="store_true", help="Export every code cell, not only those above this one.")),
    (("--instances",), dict(type=int, default=1, metavar="N", help="Machines to run on (default 1).")),
    (("--gpus",), dict(type=int, default=None, metavar="N", help="GPUs per machine, for an instance type "
                                                                 "colabkit doesn't know.")),
    (("--volume",), dict(type=int, default=30, metavar="GB", help="Disk per machine in GB (default 30).")),
    (("--max-run",), dict(default="24h", metavar="TIME", help="Stop the job after this long (default 24h).")),
    (("--max-wait",), dict(default=None, metavar="TIME",
                           help="Spot: give up after this long, waiting included (default twice --max-run).")),
    (("--on-demand",), dict(action="store_true", help="Don't use Managed Spot (the default when there is a "
                                                      "checkpoint to resume from).")),
    (("--role",), dict(default=None, metavar="ARN", help="The IAM role the job runs as "
                                                         "(default: $COLABKIT_SAGEMAKER_ROLE).")),
    (("--region",), dict(default=None, help="The AWS region (default: your AWS configuration's).")),
    (("--profile",), dict(default=None, help="The AWS profile to use.")),
    (("--bucket",), dict(default=None, help="The S3 bucket (default sagemaker-<region>-<account>, created "
                                            "if missing).")),
    (("--image",), dict(default=None, metavar="URI", help="A training image instead of the PyTorch one "
                                                          "that matches your torch.")),
    (("--secret",), dict(action="append", default=[], metavar="NAME",
                         help="Give the job this secret (repeatable): its value, from Colab Secrets or this machine's "
                              "environment, goes to AWS Secrets Manager and the job reads it at its start, as "
                              "os.environ[NAME] and userdata.get(NAME).")),
    (("--allow-secret",), dict(action="append", default=[], metavar="NAME",
                               help="Let this named value travel in the cells' text (only for what is not a secret).")),
)


def options_from(args, instance_type: str):
    from .export import Options

    return Options(instance_type=instance_type, local=args.local, dry_run=args.dry_run, wait=args.wait,
                   all_cells=getattr(args, "all", True),  # the terminal's export has no --all: every cell
                   allow_secrets=tuple(args.allow_secret), secrets=tuple(args.secret), instances=args.instances,
                   volume_gb=args.volume, max_run=args.max_run, max_wait=args.max_wait,
                   on_demand=args.on_demand, role=args.role, region=args.region, profile=args.profile,
                   bucket=args.bucket, image=args.image, gpus=args.gpus)
