"""The Drive files that go with a job: those the cells name, within stated bounds.

The cells name Drive files and folders in string literals (`'/content/drive/MyDrive/data'`); each
that exists goes with the job as its "drive" channel, laid out as under the mount point. Bounds,
said before anything is sent:
- never the whole Drive: a cell naming the mount point, MyDrive, Shareddrives or one whole shared
  drive (`os.chdir("/content/drive/MyDrive")`) stops the export, naming cell and line;
- never a known credential file (kaggle.json, .netrc, *.pem, credentials ...), wherever it is:
  the job gets its secrets with --secret;
- at most LIMIT in all; over it the export stops, listing the largest files.
The file list is shown before anything is uploaded.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ColabkitError
from ..units import format_bytes

LIMIT = 10 << 30
ROOTS = ("", "MyDrive", "My Drive", "Shareddrives", "Shared drives", ".shortcut-targets-by-id", ".Trash")
SHARED = ("Shareddrives", "Shared drives")
CREDENTIAL_FILES = frozenset({"kaggle.json", ".netrc", "_netrc", "credentials", ".git-credentials", ".pypirc",
                              "client_secrets.json", "client_secret.json", "application_default_credentials.json",
                              "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", ".env", "secrets.toml"})
CREDENTIAL_SUFFIXES = (".pem", ".key", ".p12", ".pfx", ".jks", ".keystore", ".ppk")
SHOWN = 20


@dataclass(frozen=True)
class DriveFiles:
    files: tuple[Path, ...]  # every file that goes, each one a file
    left_out: tuple[tuple[Path, str], ...]  # (path, why)
    total: int  # bytes

    def lines(self, mount: Path) -> list[str]:
        """What to say before anything is sent: the files that go, and what was left out and why."""
        said = []
        if self.files:
            shown = ", ".join(f"{p.relative_to(mount)} ({format_bytes(p.stat().st_size)})" for p in self.files[:SHOWN])
            more = f" and {len(self.files) - SHOWN} more" if len(self.files) > SHOWN else ""
            said.append(f"Drive files that go with the job ({len(self.files)}, {format_bytes(self.total)} of at most "
                        f"{format_bytes(LIMIT)}): {shown}{more}")
        said += [f"WARNING: left out of the job: {path}: {why}" for path, why in self.left_out]
        return said


def named(cells, mount: str) -> dict[Path, str]:
    """The existing files and folders under the Drive mount that the cells name in string literals,
    each with where it is first named ("cell 2, line 3")."""
    root, found = Path(mount), {}
    for cell in cells:
        for node in ast.walk(cell.tree) if cell.tree is not None else ():
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(f"{root}/"):
                path = Path(node.value.rstrip("/"))
                if path.exists() and path not in found:
                    found[path] = f"cell {cell.number}, line {cell.raw_line(node.lineno)}"
    return found


def _whole_drive(path: Path, mount: Path) -> bool:
    relative = path.relative_to(mount).as_posix() if path != mount else ""
    return relative in ROOTS or (relative.count("/") == 1 and relative.split("/")[0] in SHARED)


def credential_file(path: Path) -> bool:
    return path.name in CREDENTIAL_FILES or path.name.lower().endswith(CREDENTIAL_SUFFIXES)


def select(cells, mount: str, limit: int | None = None) -> DriveFiles:
    """The files that go with the job, by the bounds above (`limit`: LIMIT unless given)."""
    root, limit = Path(mount), LIMIT if limit is None else limit
    files: dict[Path, int] = {}
    left_out: list[tuple[Path, str]] = []
    paths = named(cells, mount)
    whole = [(path, where) for path, where in paths.items() if _whole_drive(path, root)]
    if whole:
        listed = "; ".join(f"{where} names {path}" for path, where in whole)
        raise ColabkitError(
            f"The export stopped: {listed}, the whole Drive, and a job never gets a whole Drive (it would upload "
            "every file there: other notebooks, kaggle.json, your documents). Name the folder or the files the job "
            f"needs instead (for example os.chdir('{root}/MyDrive/project') or '{root}/MyDrive/project/data.csv'), "
            "and export again.")
    for path in paths:
        for file in _files(path):
            if credential_file(file):
                left_out.append((file, "a credential file never goes with a job: give the job what it needs with "
                                       "--secret NAME"))
            elif file not in files:
                files[file] = file.stat().st_size
    total = sum(files.values())
    if total > limit:
        largest = sorted(files.items(), key=lambda item: -item[1])[:5]
        listed = ", ".join(f"{p.relative_to(root)} ({format_bytes(size)})" for p, size in largest)
        raise ColabkitError(
            f"The Drive files the cells name come to {format_bytes(total)} in {len(files)} files, more than the "
            f"{format_bytes(limit)} that go with a job (the largest: {listed}). Name only the files the job needs, or "
            "copy the data to S3 and read it from there.")
    return DriveFiles(tuple(sorted(files)), tuple(left_out), total)


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    found = []
    for folder, subfolders, names in os.walk(path):  # links to folders are not entered
        subfolders.sort()
        found += [Path(folder) / name for name in sorted(names)
                  if (Path(folder) / name).is_file() and not (Path(folder) / name).is_symlink()]
    return found
