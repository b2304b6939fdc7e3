"""What `%load_ext colabkit` adds to a notebook's start, as a ratio to a bare `import IPython`.

Each run is a fresh interpreter (imports are cached after the first), timed from inside:
import IPython; then import colabkit and its magics and register them on a shell. Goal: <= 1.10.
"""

import argparse
import json
import statistics
import subprocess
import sys

PROBE = r"""
import json, time
t0 = time.perf_counter()
import IPython
t1 = time.perf_counter()
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
t2 = time.perf_counter()
shell.run_line_magic("load_ext", "colabkit")
t3 = time.perf_counter()
heavy = [m for m in ("boto3", "botocore", "torch", "ipywidgets", "nbformat", "psutil", "pynvml") if m in sys.modules]
print(json.dumps({"ipython": t1 - t0, "load_ext": t3 - t2, "heavy": heavy}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    results = [json.loads(subprocess.run([sys.executable, "-c", "import sys\n" + PROBE], capture_output=True,
                                         text=True, check=True).stdout) for _ in range(args.runs)]
    ipython = statistics.median(r["ipython"] for r in results)
    load = statistics.median(r["load_ext"] for r in results)
    ratio = (ipython + load) / ipython
    print(f"import IPython (baseline): {ipython * 1000:.1f} ms (median of {args.runs} fresh interpreters)")
    print(f"%load_ext colabkit:        {load * 1000:.2f} ms")
    print(f"ratio (IPython + load_ext) / IPython: {ratio:.3f}  (goal <= 1.10)")
    print(f"heavy modules imported by load_ext: {results[0]['heavy'] or 'none'}")
    return 0 if ratio <= 1.10 and not results[0]["heavy"] else 1


if __name__ == "__main__":
    sys.exit(main())
