"""What `--dry-run` shows: the job in a few lines a person reads (instance, image, Spot, limits,
where it starts from and what comes back), with the request's JSON folded away: in a notebook as
a collapsed block to open, elsewhere as the file it was written to. The cost and the instance
advice are said just before, by the export's cost step.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from ..units import format_duration


def lines(body: dict, request_path: Path, source: Path) -> list[str]:
    resources, stopping = body["ResourceConfig"], body["StoppingCondition"]
    spot = body.get("EnableManagedSpotTraining")
    checkpoints = body.get("CheckpointConfig", {}).get("S3Uri")
    out = [
        "[colabkit] dry run: nothing was sent. The job as it would run:",
        f"  instance     {resources['InstanceCount']} x {resources['InstanceType']}, "
        f"{resources['VolumeSizeInGB']} GB disk",
        f"  image        {body['AlgorithmSpecification']['TrainingImage']}",
        "  Spot         " + (f"yes: waits at most {format_duration(stopping['MaxWaitTimeInSeconds'])} for capacity, "
                             "and resumes from its checkpoint after an interruption" if spot else "no (on demand)"),
        f"  limits       runs at most {format_duration(stopping['MaxRuntimeInSeconds'])}",
    ]
    if checkpoints:
        out.append(f"  checkpoints  {checkpoints} (synced both ways with /opt/ml/checkpoints)")
    if body.get("Environment", {}).get("COLABKIT_SECRETS"):
        out.append(f"  secrets      {body['Environment']['COLABKIT_SECRETS']} (names only: the values wait in "
                   "Secrets Manager and reach the job when it starts)")
    for channel in body.get("InputDataConfig", []):
        out.append(f"  input        {channel['ChannelName']}: {channel['DataSource']['S3DataSource']['S3Uri']}")
    out += [
        f"  comes back   the model ({body['OutputDataConfig']['S3OutputPath']}) into the export's model/ folder, "
        "the files the cells write under /content beside the notebook, the final checkpoint into your checkpoints",
        f"  source       {source}",
        f"  request      {request_path} (the full CreateTrainingJob request)",
    ]
    return out


def dry_run(body: dict, request_path: Path, source: Path, echo=print) -> None:
    """Say the summary; in a notebook, add the request's JSON as a block that opens on click."""
    for line in lines(body, request_path, source):
        echo(line)
    from .. import platform

    if platform.in_kernel():
        from IPython.display import display

        text = json.dumps(body, indent=1)
        display({"text/html": f"<details><summary>The request (CreateTrainingJob JSON)</summary>"
                              f"<pre>{html.escape(text)}</pre></details>",
                 "text/plain": f"The request: {request_path}"}, raw=True)
