"""Google Drive mounting (colabtools: google/colab/drive.py), with the real checks and messages.

The real mount runs the DriveFS binary; here SCENARIO says how that goes:
"ok" mounts (creates <mountpoint>/MyDrive and a fuse.drive line in MOUNTS_FILE), "timeout",
"denied" (the user refused consent in the browser), or "enterprise" (/var/colab/mp exists).
"""

import os

from google.colab import _message

__all__ = ["flush_and_unmount", "mount"]

SCENARIO = "ok"
MOUNTS_FILE = None  # a file standing in for /proc/mounts; set by tests
CALLS = []


def _enterprise():
    return SCENARIO == "enterprise"


def flush_and_unmount(timeout_ms=24 * 60 * 60 * 1000):
    """Unmount Google Drive and flush any outstanding writes to it."""
    if _enterprise():
        raise NotImplementedError(__name__ + " is unsupported in this environment.")
    table = open(MOUNTS_FILE).read() if MOUNTS_FILE and os.path.exists(MOUNTS_FILE) else ""
    if "fuse.drive" not in table:
        print("Drive not mounted, so nothing to flush and unmount.")
        return
    with open(MOUNTS_FILE, "w") as f:
        f.write("".join(line + "\n" for line in table.splitlines() if "fuse.drive" not in line))


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    """Mount your Google Drive at the specified mountpoint path."""
    CALLS.append({"mountpoint": mountpoint, "force_remount": force_remount,
                  "timeout_ms": timeout_ms, "readonly": readonly})
    if _enterprise():
        raise NotImplementedError(__name__ + " is unsupported in this environment.")
    if " " in mountpoint:
        raise ValueError("Mountpoint must not contain a space.")
    mountpoint = os.path.expanduser(mountpoint)
    # Colab's own check: it looks for "My Drive", but the folder is "MyDrive".
    if not force_remount and os.path.isdir(os.path.join(mountpoint, "My Drive")):
        print('Drive already mounted at {mnt}; to attempt to forcibly remount, '
              'call drive.mount("{mnt}", force_remount=True).'.format(mnt=mountpoint))
        return
    if os.path.islink(mountpoint):
        raise ValueError("Mountpoint must not be a symlink")
    if os.path.isdir(mountpoint) and os.listdir(mountpoint):
        raise ValueError("Mountpoint must not already contain files")
    if not os.path.isdir(mountpoint) and os.path.exists(mountpoint):
        raise ValueError("Mountpoint must either be a directory or not exist")
    normed = os.path.normpath(mountpoint)
    if "/" in normed and not os.path.exists(os.path.dirname(normed)):
        raise ValueError("Mountpoint must be in a directory that exists")
    if SCENARIO == "denied":
        raise _message.MessageError("Error: credential propagation was unsuccessful")
    if SCENARIO == "timeout":
        raise ValueError("mount failed: timeout during initial read of root folder; for more info: "
                         "https://research.google.com/colaboratory/faq.html#drive-timeout")
    os.makedirs(os.path.join(mountpoint, "MyDrive"), exist_ok=True)
    if MOUNTS_FILE:
        with open(MOUNTS_FILE, "a") as f:
            f.write(f"drive {mountpoint} fuse.drive rw,nosuid,nodev,relatime,user_id=0,group_id=0 0 0\n")
    print("Mounted at {}".format(mountpoint))
