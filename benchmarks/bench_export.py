"""Submitting a notebook with a --gib checkpoint, against a bare multipart upload of the same bytes.

Both talk to the same AWS-compatible server: moto's server, started here as its own process on
127.0.0.1 (so it does not share this process's GIL) and stopped by its PID. The export side is
the whole `%to_sagemaker` submit path: source folder and wheel, bucket, sourcedir.tar.gz, the
checkpoint (multipart, its hashes checked meanwhile) and CreateTrainingJob. The baseline is
boto3's `upload_file` of the checkpoint's files with its default transfer settings. Rounds
alternate the two. Goal: export <= 1.2x the baseline.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

GOAL = 1.2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("moto's server did not start")


def reset(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=30).read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    os.environ.update({"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                       "COLABKIT_SAGEMAKER_ROLE": "arn:aws:iam::123456789012:role/SageMakerExecution"})
    import boto3

    from colabkit import runtime
    from colabkit.checkpoint.checkpointer import Checkpointer
    from colabkit.sagemaker import capture, export

    server = start_server(port)
    try:
        with tempfile.TemporaryDirectory() as temp:
            runtime.mount(to=temp)
            weights = np.random.default_rng(0).standard_normal(int(args.gib * (1 << 30) / 4), dtype=np.float32)
            checkpointer = Checkpointer(weights=weights)  # in the storage's checkpoints, where the export looks
            checkpointer.save(wait=True)
            checkpointer.close()
            del weights
            checkpoint = checkpointer.store.latest_valid()[0].path
            files = sorted(p for p in checkpoint.iterdir() if p.is_file())
            size = sum(p.stat().st_size for p in files)
            cells = capture.Captured((capture.Cell(1, "import numpy as np"), capture.Cell(2, "w = np.zeros(3)")),
                                     "benchmark", runtime.current().notebook.name)
            exports, bare = [], []
            for _ in range(args.rounds):
                reset(url)
                s3 = boto3.client("s3")
                s3.create_bucket(Bucket="bare-upload")
                start = time.perf_counter()
                for path in files:
                    s3.upload_file(str(path), "bare-upload", f"checkpoint/{path.name}")
                bare.append(time.perf_counter() - start)
                reset(url)
                start = time.perf_counter()
                export.run(export.Options("ml.g5.xlarge"), cells, echo=lambda line: None)
                exports.append(time.perf_counter() - start)
    finally:
        server.terminate()
        server.wait(timeout=30)
    ratio = statistics.median(exports) / statistics.median(bare)
    print(f"checkpoint: {size / 2**30:.2f} GiB in {len(files)} files")
    for label, times in (("bare multipart upload", bare), ("export + upload", exports)):
        print(f"{label:22} median {statistics.median(times):.2f} s  ({', '.join(f'{t:.2f}' for t in times)})")
    print(f"ratio {ratio:.2f}x (goal <= {GOAL}x): {'met' if ratio <= GOAL else 'MISSED'}")


if __name__ == "__main__":
    main()
