"""What `%checkpoint ...` does, on a notebook's variables: every, now, list, restore, keep, off."""

from __future__ import annotations

import difflib
import time

from ..errors import ColabkitError
from ..units import format_bytes
from . import session
from .checkpointer import Checkpointer, restore
from .schedule import parse_every
from .store import CheckpointStore, stores_at

USAGE = ("Use %checkpoint every 15m model optimizer (what to save, how often), then now, list, "
         "restore [latest|step-N], keep (after an interrupted run) or off.")


def _lookup(names: list[str], namespace: dict) -> dict:
    if not names:
        raise ColabkitError("Name what to save after the period, e.g. %checkpoint every 15m model optimizer.")
    missing = [n for n in names if n not in namespace]
    if missing:
        name = missing[0]
        close = difflib.get_close_matches(name, [k for k in namespace if not k.startswith("_")], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else " Create it first, then run %checkpoint again."
        raise ColabkitError(f"There is no variable named {name!r} in this notebook.{hint}")
    return {n: namespace[n] for n in names}


def _period_and_names(words: list[str]) -> tuple[str, list[str]]:
    if not words:
        raise ColabkitError("every needs a period: 30s, 15m, 1h30m, or '500 steps'. " + USAGE)
    if len(words) > 1 and words[1].lower() in ("step", "steps", "iterations"):
        return f"{words[0]} steps", words[2:]
    return words[0], words[1:]


def _stores(to) -> list[CheckpointStore]:
    """The stores to read: the active Checkpointer's, else this notebook's, found without mounting
    anything (listing must not open Drive's consent prompt)."""
    from .. import runtime

    active = session.active()
    if active is not None and to is None:
        return active.stores()
    places = runtime.current().checkpoint_places(to, mount=False)
    return stores_at(places)


def _drive_hint(to) -> str:
    """On Colab before Drive is mounted, the checkpoints kept there can't be listed: say so."""
    from .. import platform, runtime, storage

    if to is not None or runtime.current().storage is not None or platform.detect_name() != platform.COLAB:
        return ""
    if storage.drive_is_mounted():
        return ""
    return "\ncolabkit: Google Drive is not mounted, so checkpoints kept there are not listed: %mount first."


def listing(stores: list[CheckpointStore]) -> str:
    lines = []
    for store in stores:
        checkpoints = store.list()
        if not checkpoints:
            lines.append(f"colabkit: no checkpoints in {store.root} yet.")
            continue
        rows = [f"{'id':<14}{'saved (local time)':<22}{'step':>8}  {'size':>10}  platform"]
        for c in checkpoints:
            saved = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c.time))
            rows.append(f"{c.id:<14}{saved:<22}{c.step:>8}  {format_bytes(c.size):>10}  {c.manifest.get('platform', '?')}")
        lines.append(f"colabkit: checkpoints in {store.root}\n" + "\n".join(rows))
    return "\n".join(lines)


def run(words: list[str], keep: int, to, trust: bool, namespace: dict):
    action = words[0].lower() if words else ""
    if action == "every":
        period, names = _period_and_names(words[1:])
        parse_every(period)  # a bad period is reported before anything is looked up
        objects = _lookup(names, namespace)
        checkpointer = session.activate(Checkpointer(every=period, to=to, keep=keep, namespace=namespace,
                                                     trust=trust, **objects))
        if checkpointer.claim.writes:
            print(f"colabkit: saving {', '.join(names)} every {period} to {checkpointer.store.root} "
                  f"(keeping {keep}); colabkit.resumable(...) resumes a loop.")
        return None
    if action == "now":
        checkpointer = session.active()
        if checkpointer is None:
            raise ColabkitError("Nothing to save yet. " + USAGE)
        checkpointer.save(force=True, wait=True)
        last = checkpointer.last
        print(f"colabkit: saved {last['id']} ({format_bytes(last.get('bytes'))}) in {checkpointer.store.root}")
        return None
    if action == "list":
        print(listing(_stores(to)) + _drive_hint(to))
        return None
    if action == "restore":
        which = words[1] if len(words) > 1 else "latest"
        active = session.active()
        if active is not None and to is None:
            restored = active.restore(which, trust=trust, namespace=namespace, report=False)
            stores = active.stores()
        else:
            from .. import runtime

            places = runtime.current().checkpoint_places(to)
            stores = stores_at(places)
            restored = restore(stores, which, trust, namespace)
            if restored is not None:
                namespace.update(restored.values)
        if restored is None:
            print(f"colabkit: no checkpoint to restore in {stores[0].root}.")
            return None
        print(restored.summary())
        return None
    if action == "keep":
        checkpointer = session.active()
        if checkpointer is None:
            raise ColabkitError("Nothing to keep: checkpointing is not on. " + USAGE)
        checkpointer.keep_live()
        print("colabkit: keeping the live state: the interrupted loop or run goes on from it when you run it again.")
        return None
    if action == "off":
        print("colabkit: checkpointing off." if session.deactivate() else "colabkit: checkpointing was not on.")
        return None
    raise ColabkitError((f"Unknown %checkpoint action {words[0]!r}. " if words else "") + USAGE)
