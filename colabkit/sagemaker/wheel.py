"""colabkit as a wheel, built from the installed package, to travel inside the job's source folder.

The PyPI name `colabkit` belongs to an unrelated 2023 package: the job must install this one from
the file next to its code, never by name. Built by hand (a zip with dist-info), so it works offline
and from an editable install.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import zipfile
from pathlib import Path

PACKAGE_FILES = ("*.py", "*.html", "*.txt")


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build(folder: Path) -> Path:
    """Write colabkit-<version>-py3-none-any.whl into `folder`; returns its path."""
    import colabkit

    version = colabkit.__version__
    package = Path(colabkit.__file__).resolve().parent
    dist_info = f"colabkit-{version}.dist-info"
    try:
        metadata = importlib.metadata.distribution("colabkit").read_text("METADATA")
    except importlib.metadata.PackageNotFoundError:
        metadata = None
    if not metadata:  # running from a source tree that was never installed
        metadata = f"Metadata-Version: 2.1\nName: colabkit\nVersion: {version}\n"
    entries: dict[str, bytes] = {}
    for pattern in PACKAGE_FILES:
        for path in sorted(package.rglob(pattern)):
            if "__pycache__" not in path.parts:
                entries[f"colabkit/{path.relative_to(package).as_posix()}"] = path.read_bytes()
    entries[f"{dist_info}/METADATA"] = metadata.encode()
    entries[f"{dist_info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: colabkit\nRoot-Is-Purelib: true\n"
                                     b"Tag: py3-none-any\n")
    record = "".join(f"{name},{_digest(data)},{len(data)}\n" for name, data in entries.items())
    entries[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    wheel = Path(folder) / f"colabkit-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            # A fixed date: the same colabkit gives the same bytes (a --local run's cached env is keyed by them).
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
    return wheel
