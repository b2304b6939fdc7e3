"""The Checkpointer: saves named training state when its schedule says, and resumes it.

It ties the parts together: the schedule says when, `state` captures the objects, `codec` turns
them into the checkpoint's files, the sink stages them for the writer process, and the
store (with its Drive mirror on Colab) commits and finds them again. At most one save is in
flight; one that comes due meanwhile waits for the next consistent point, and a writer error is
raised at the next consistent point, never lost.

Consistent points, where every saved object agrees on the step:
- the end of a resumable() iteration in which an optimizer stepped (or, in a loop where none
  does, such as a JAX or NumPy loop, every iteration end: an iteration then counts as a step);
- the next optimizer step's pre-hook after a step at which a save came due, inside a long cell or
  in the middle of a resumable() iteration whose data comes from DataLoaders the notebook names
  (their position is saved, so the resumed iteration skips the batches already trained);
- a framework's step end inside Trainer.train() / fit() (see adapters/);
- the end of a cell that ran to its end.

A resume restores every tracked object or stops with a paragraph naming the one it couldn't:
skipping finished iterations without restoring what they trained would train the wrong thing.
"""

from __future__ import annotations

import collections.abc
import contextlib
import errno
import itertools
import numbers
import sys
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy

from ..errors import ColabkitError, say, warn
from ..sagemaker import job_secrets
from ..units import format_bytes, format_duration
from ..version import VERSION
from . import adapters, codec, collector, inplace, lock, sink, state
from .codec import CheckpointDamaged
from .mirror import DriveSpace
from .schedule import Schedule
from .sink import Sink, writes_here
from .state import RandomStates
from .store import Checkpoint, CheckpointStore
from .store import load as load_checkpoint


@dataclass
class Restored:
    checkpoint: Checkpoint
    values: dict  # name -> value to bind (arrays, tensors, plain values, JAX trees, trusted pickled objects)
    notes: list[str] = field(default_factory=list)
    unrestored: dict[str, str] = field(default_factory=dict)  # name -> why it was not restored
    step: int = 0
    position: int = 0  # loop iterations done
    pace: float | None = None
    extra: dict = field(default_factory=dict)  # the loop's data position, and where inside an iteration
    resume: dict = field(default_factory=dict)  # name -> what a framework's next run resumes from

    def summary(self) -> str:
        """What a restore says: the checkpoint, and each note (what was passed over or not restored)."""
        return (f"colabkit: restored {self.checkpoint.id} (step {self.checkpoint.step})"
                + "".join(f"\n  note: {n}" for n in self.notes))


DRIVE_MARGIN = 1 << 20  # a checkpoint's small files (its index, state.json, manifest) beside its tensors
_ANOTHER = "choose another folder with %checkpoint --to PATH"
_WRITE_ERRORS = {  # errno -> what happened, and what to do
    errno.ENOSPC: ("the disk is full", f"Free space, or {_ANOTHER}"),
    errno.EDQUOT: ("the disk quota is used up", f"Free space within your quota, or {_ANOTHER}"),
    errno.EROFS: ("the storage folder is on a read-only file system", f"Remount it writable, or {_ANOTHER}"),
    errno.EACCES: ("permission to write there was denied", f"Give yourself write access, or {_ANOTHER}"),
    errno.EPERM: ("permission to write there was denied", f"Give yourself write access, or {_ANOTHER}"),
    errno.ENOENT: ("the storage folder was removed while it was being written",
                   "If you removed it, %checkpoint now saves again into a new one; else " + _ANOTHER),
}


def _describe_write_error(result: dict, root: Path) -> str:
    code = result.get("errno")
    reason, todo = _WRITE_ERRORS.get(code, (result["error"], f"Fix that, or {_ANOTHER}"))
    before = ("The checkpoints that were in it went with it" if code == errno.ENOENT
              else "The previous checkpoint is intact")
    return f"Checkpoint step-{result.get('step')} was not saved: {reason} ({root}). {before}. {todo}, then %checkpoint now."


def _not_skipping(restored: Restored, what: str) -> str:
    name, why = next(iter(restored.unrestored.items()))
    others = [n for n in restored.unrestored if n != name]
    also = f" (nor {', '.join(others)})" if others else ""
    if "objects.pkl" in why:
        way = (f"trust this notebook's own pickles (%checkpoint every ... {name} --trust, or trust=True), or leave "
               f"{name} out of %checkpoint so it keeps the value the notebook gives it")
    else:
        way = f"fix that, or leave {name} out of %checkpoint so it keeps the value the notebook gives it"
    return (f"{what} did not resume from {restored.checkpoint.id}: {name} was not restored{also}, because {why}. "
            f"Going on would skip the {restored.step} step(s) the checkpoint covers without the state they trained. "
            f"To resume, {way}; then run this again.")


class _Source:
    """The loop's own iterable, and how to come back to a position in it: a StatefulDataLoader (or
    any iterable with state_dict/load_state_dict) keeps its own position; a plain DataLoader is
    replayed from its epoch's random state without loading the skipped batches; anything else is
    advanced item by item (cheap for a range)."""

    def __init__(self, iterable):
        self.iterable = iterable
        self.stateful = state.has_state_dict(iterable)
        torch_data = sys.modules.get("colabkit.checkpoint.adapters.torch_data")
        self.loader = torch_data if torch_data is not None and torch_data.replayable(iterable) else None

    def saved(self, position: int) -> dict:
        """The source's part of a checkpoint taken at an iteration boundary."""
        if self.stateful:
            return {"state": self.iterable.state_dict()}
        if self.loader is not None:
            return {"loader": self.loader.position(self.iterable, position)}
        return {}

    def resume(self, saved: dict | None, position: int):
        """An iterator positioned after `position` items."""
        saved = saved or {}
        if self.stateful:
            if "state" not in saved:
                return iter(self.iterable)
            self.iterable.load_state_dict(saved["state"])
            random = RandomStates.capture()  # the checkpoint's: iter() may draw a seed from it
            iterator = iter(self.iterable)  # it skips what it had yielded: never skipped twice
            random.restore()
            return iterator
        if self.loader is not None and saved.get("loader") is not None:
            return self.loader.replay(self.iterable, saved["loader"], position, after=RandomStates.capture())
        iterator = iter(self.iterable)
        if position and self.loader is not None:
            say(f"resuming {position} batches into this DataLoader without its saved position: they are loaded "
                "again to be skipped, in a new shuffle order (not what the interrupted run trained on).")
        elif position and not isinstance(self.iterable, collections.abc.Sequence):  # a range, a list: the same again
            say(f"resuming {position} items into this loop's {type(self.iterable).__name__}, which colabkit can't "
                "find its place in again: its first items are drawn again to be skipped, which is what the "
                "interrupted run trained on only if drawing them again gives the same items (a shuffling "
                "DataLoader wrapped in it, or a generator that draws random numbers, does not). Pass the "
                "DataLoader itself (resumable(train_loader)): colabkit replays its order.")
        return itertools.islice(iterator, position, None) if position else iterator


class _Loop:
    """The resumable loop in progress."""

    def __init__(self, source: _Source):
        self.source = source
        self.steps_seen = False  # an optimizer stepped in this loop: iterations are not steps
        self.steps_in_iteration = 0
        self.random: RandomStates | None = None  # at the start of the current iteration
        self.serial = 0  # DataLoaders started after this belong to the current iteration
        self.seeded: dict = {}  # name -> a DataLoader with its own generator= that this loop iterated
        self.waits = False  # a due save waits for this iteration's end (its data can't be found again)

    def begin(self, random=None, steps: int = 0) -> None:
        """An iteration starts: note the random states (a save inside it re-runs it from here; only
        DataLoaders make such a save possible, so only with torch)."""
        self.steps_in_iteration, self.waits = steps, False
        torch_data = sys.modules.get("colabkit.checkpoint.adapters.torch_data")
        self.random = random or (RandomStates.capture() if torch_data is not None else None)
        self.serial = torch_data.serial() if torch_data is not None else 0

    def loaders(self) -> list:
        """The plain DataLoaders that started an epoch in this iteration, with their positions."""
        torch_data = sys.modules.get("colabkit.checkpoint.adapters.torch_data")
        if torch_data is None:
            return []
        return [(loader, torch_data.position(loader)) for loader, _ in torch_data.started_since(self.serial)
                if loader is not self.source.iterable]


_UNTRACKED = object()  # a framework run of nothing tracked: torch's step hooks stand down all the same


@dataclass
class _Pending:
    """A save that came due at an optimizer step: the random states right after that step, the
    loop iteration's DataLoader positions then, and the tracked modules' buffers then."""

    random: RandomStates
    loaders: list
    buffers: list  # (buffer, its value after the step): _buffers_now


def _buffers_now(objects) -> list[tuple]:
    """Each persistent buffer of these objects' modules with a copy of its value now. The save
    due at a step is taken at the next step's pre-hook, after that step's forward pass, which
    changes buffers (a BatchNorm's running statistics): saved as they were, the resumed run would
    count that batch in them twice."""
    torch = sys.modules.get("torch")
    if torch is None:
        return []
    noted = []
    for value in objects:
        if isinstance(value, torch.nn.Module):
            for module in value.modules():
                for name, buffer in module._buffers.items():
                    if buffer is not None and name not in module._non_persistent_buffers_set:
                        noted.append((buffer, buffer.detach().clone()))
    return noted


@contextlib.contextmanager
def _buffers_as_noted(noted: list[tuple]):
    """The buffers hold their noted values while a save copies them, then their live ones again."""
    live = [buffer.detach().clone() for buffer, _ in noted]
    try:
        for buffer, value in noted:
            buffer.detach().copy_(value)
        yield
    finally:
        for (buffer, _), value in zip(noted, live):
            buffer.detach().copy_(value)


class Checkpointer:
    """Saves named training state on a schedule and resumes it after a restart.

    >>> ck = Checkpointer(every="15m", model=model, optimizer=opt)
    >>> for epoch in ck.loop(range(50)):
    ...     train_one_epoch(model, opt)
    """

    def __init__(self, every=None, to=None, keep: int = 3, namespace: dict | None = None, places=None,
                 trust: bool = False, **objects):
        """`namespace` (a notebook's variables, given by %checkpoint) receives the values that are
        restored by name; with the Python API they are in `.objects` after a restore. `places`
        (storage.Places) is where the store lives; by default this notebook's (see storage).
        `trust`: a resume also loads objects.pkl (pickled values this notebook saved)."""
        from .. import runtime, storage

        self.schedule = Schedule(every)
        places = places or runtime.current().checkpoint_places(to)
        self.store = CheckpointStore(places.root, keep)
        self.mirror_store = CheckpointStore(places.mirror, keep) if places.mirror else None
        self.claim = lock.claim(places.root)
        if self.claim.writes and self.mirror_store is not None:
            storage.ensure_writable(places.mirror)
        if self.claim.unwritable and not any(store.list() for store in self.stores()):
            raise ColabkitError(self.claim.refused)  # nothing to restore and nothing can be saved
        if not self.claim.writes:
            say(self.claim.refusal())
        elif self.claim.first:  # leftovers of killed writers, here and on Drive: nobody else writes there
            self.store.prepare()
            if self.mirror_store is not None:
                self.mirror_store.prepare()
        self.objects: dict[str, object] = dict(objects)
        self.namespace = namespace
        self.trust = trust
        self.step = 0  # optimizer steps (a framework's global step inside its run)
        self.position = 0  # iterations of loop() completed
        self.pace: float | None = None  # seconds per loop iteration, kept for cost estimates
        self.total: int | None = None  # the loop's length when known, for the time left
        self.last: dict | None = None  # the last writer result
        self._mirror_said: str | None = None  # the Drive copy's failure said last
        self._error: str | None = None
        self._said: set[str] = set()
        self._saving_step: int | None = None  # the step of the last save handed to the sink
        self._round: weakref.WeakSet = weakref.WeakSet()  # the optimizers that stepped in this step (after_optimizer_step)
        self._pending: _Pending | None = None
        self._loop: _Loop | None = None
        self._source_saved: dict = {}  # the last loop's data position, for saves after it
        self._run = None  # the framework run in progress: torch's step hooks stand down
        self._runs: dict[str, object] = {}  # name -> the last framework run of that object
        self._finished: set[str] = set()  # names whose framework run finished in this session
        self._interrupted: tuple | None = None  # (what, step, the way on from the live state) after an interruption
        self._keep_live = False
        self._expected: list[str] = []  # named loaders a mid-iteration resume expects the iteration to iterate
        self._resumed_into: dict = {}  # the tracked objects a mid-iteration resume restored into
        self._loops_done = 0  # resumable() loops that ran to their end with this Checkpointer
        self._restore_at: int | None = None  # the loop a checkpoint from a later loop is restored at (loop())
        self._closed = False
        self._replaced = False  # a newer Checkpointer of this kernel saves into the store now (_take_over)
        self.writes = writes_here()
        self.sink = Sink(self.store, self.mirror_store, self.claim.fd)
        self._layouts = state.Layouts()  # the last save's encoding of the model, reused while it fits
        self._drive_space = DriveSpace(self.mirror_store.root) if self.mirror_store is not None and self.writes \
            and self.claim.writes else None
        self._prepared_stepped = False  # the staging buffer was sized again once training stepped
        if self.writes and self.claim.writes and self.schedule.periodic:
            self.sink.start()
            self._prepare()

    def _prepare(self) -> None:
        """Size and prefault the staging buffer in the background by what is tracked now, and
        encode the large state dicts there too (state.Layouts): the first save then takes no
        longer than a later one, even for a model of 20,000 tensors."""
        tracked = self.tracked()

        def estimate() -> int:
            layouts = state.Layouts()
            captured = state.capture(tracked, layouts=layouts)
            layouts.release()
            layouts.encode_texts()
            self._layouts = layouts  # a save meanwhile kept its own: each reuse checks the layout anyway
            return sink.staging_size(captured.sources)

        self.sink.prepare(estimate)

    def _stepped(self) -> None:
        """Training stepped for the first time since %checkpoint: the optimizer's state (Adam's
        moments, twice the weights) exists now, so size the staging buffer again before the first save."""
        if not self._prepared_stepped and self._saving_step is None and self.schedule.periodic \
                and self.writes and self.claim.writes:
            self._prepared_stepped = True
            self._prepare()

    def say_once(self, key: str, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            say(message)

    # -- consistent points -----------------------------------------------------------------
    def request(self) -> None:
        """Take a checkpoint at the next consistent point (the session-deadline alert calls this)."""
        self.schedule.request()

    def due(self) -> bool:
        return self.schedule.due(self.step)

    def at_consistent_point(self) -> None:
        """Raise a writer error from the last save, then save if one is due."""
        self._collect()
        self._raise_error()
        if self.due() or self._pending is not None:
            if self._save(force=self.schedule.forced):
                self._pending = None

    def at_cell_end(self, failed: bool = False) -> None:
        """The end of a cell is consistent, unless it failed (an interrupt may have come between a
        step and its scheduler) or left a loop or a run interrupted."""
        if self._interrupted is None and not failed:
            self.at_consistent_point()

    def after_optimizer_step(self, optimizer) -> None:
        """torch's step post-hook: count the step; if a save is due, note the random states now."""
        if self._run is not None:
            return
        # A step counts once however many optimizers take it (a GAN's two): a new one begins when an
        # optimizer steps again. (Counted as the most steps of any one optimizer, the steps stopped
        # at a replaced optimizer's count: a new optimizer each fold, and no checkpoint after the first.)
        if optimizer in self._round or not self._round:
            self._round = weakref.WeakSet((optimizer,))
            self.step += 1
            self._stepped()
            if self._loop is not None:
                self._loop.steps_seen = True
                self._loop.steps_in_iteration += 1
        else:
            self._round.add(optimizer)
        if self._pending is not None or self.due():
            self._pending = _Pending(RandomStates.capture(), self._loop.loaders() if self._loop else [],
                                     _buffers_now(self.tracked().values()))

    def before_optimizer_step(self, optimizer) -> None:
        """torch's step pre-hook: the previous step's iteration is complete, so take a due save."""
        if self._run is not None or self._pending is None:
            return
        if optimizer not in self._round:
            return  # it joins this step (a GAN's second optimizer): the step is not over
        extra = None
        if self._loop is not None:
            extra = self._inside_iteration()
            if extra is None:
                return  # the iteration's end saves
        self._collect()
        self._raise_error()
        pending, self._pending = self._pending, None
        if not self._save(force=self.schedule.forced, random=pending.random, extra=extra, buffers=pending.buffers):
            self._pending = pending

    def _inside_iteration(self) -> dict | None:
        """A mid-iteration save's position: the iteration's start and each named DataLoader's batches;
        None when the iteration's data position can't be found again after a restart."""
        loop, pending = self._loop, self._pending
        if loop.steps_in_iteration == 0 or loop.source.stateful or loop.waits:
            return None
        named = {self.name_of(loader): position for loader, position in pending.loaders}
        if named and None not in named and None not in named.values():
            return {"source": loop.source.saved(self.position),
                    "inside": {"steps": loop.steps_in_iteration, "random": loop.random, "loaders": named}}
        loop.waits = True
        self.say_once("inside", f"a checkpoint came due at step {self.step}, in the middle of iteration "
                                f"{self.position + 1}; colabkit finds an iteration's place in its data again only "
                                "through a DataLoader the notebook keeps in a variable (train_loader = "
                                "DataLoader(...)), so it is taken at the end of the iteration instead.")
        return None

    # -- saving ----------------------------------------------------------------------------
    def _collect(self) -> None:
        result = self.sink.poll()
        if result is not None:
            self._record(result)

    def _record(self, result: dict, closing: bool = False) -> None:
        self.last = {**result, "at": time.time()}
        if result.get("lost"):  # an event, not an error: training goes on, the next save is as scheduled
            after = "" if closing else " a new writer takes the next save, as scheduled."
            say(f"checkpoint step-{result.get('step')} was lost: {result['error']} while writing it. The "
                f"checkpoints before it are intact;{after or ' it was the last one.'}")
            return
        if result.get("abandoned"):  # the person's own interrupt: not a fault of the store to fix
            say(f"checkpoint step-{result['step']} was not saved: it was interrupted while training waited for its "
                "copy (a state larger than the staging memory streams to the writer). The checkpoints before it "
                "are intact; the next save is as scheduled.")
            return
        if not result["ok"]:
            self._error = _describe_write_error(result, self.store.root)
            return
        if result.get("outranked"):  # written, and deleted at once: never the one a restore loads
            self.last["ok"] = False
            higher = result["outranked"]
            say(f"checkpoint step-{result['step']} was not kept: {self.store.root} keeps the {len(higher)} highest "
                f"steps, and {', '.join(higher)} (from an earlier run that counted further) are above it, so "
                "retention deleted it at once and a restore would load them, not this run. Go on from them "
                "(%checkpoint restore, then train), or save this run elsewhere (--to PATH), or delete them.")
        if result.get("above"):
            self._say_above(result["step"], result["above"], self.store.root)
        if result.get("warning"):  # saved, but something after the commit went wrong: said once, as it recurs
            self.say_once(f"warning-{result['warning']}", result["warning"])
        self._say_mirror_failure()

    def _say_above(self, step: int, higher: list[str], where: Path) -> None:
        """A save kept below higher steps already in a store (an earlier run that counted further,
        or the steps after an older checkpoint the notebook restored): a restore after a restart,
        and resumable(), load the highest, so this run would be silently left behind. Said once
        for each highest step."""
        self.say_once(f"above-{where}-{higher[0]}", (
            f"checkpoint step-{step} is saved, but {where} also holds {', '.join(higher)}, higher steps from before "
            "(an earlier run that counted further, or the steps after the checkpoint you restored), and a restore "
            f"after a restart (and resumable()) loads the highest, {higher[0]}, not this run. Delete those to go on "
            f"from this run, restore it by name after a restart (%checkpoint restore step-{step} or later), or "
            "save this run elsewhere (%checkpoint every ... --to PATH)."))

    def _say_mirror_failure(self) -> None:
        """The Drive copy's last failure, said in the cell once (the panel shows it too): copies
        that keep failing would otherwise leave Drive without the checkpoints unnoticed. And a copy
        kept on Drive below higher steps there, as for the local store (_say_above)."""
        status = self._mirror_status()
        if status.get("above") and status.get("mirrored"):  # Drive kept the copy, below an earlier run's steps
            self._say_above(codec.step_of(status["mirrored"]), status["above"], self.mirror_store.root)
        if status.get("unswept"):
            self.say_once(f"unswept-{status['unswept']}", f"the copies on Drive landed, but the packs no kept checkpoint "
                          f"needs in {self.mirror_store.root} could not be deleted ({status['unswept']}), so they "
                          "still take Drive's space; each copy tries again.")
        error = status.get("error")
        if error and error != self._mirror_said:
            say(f"the copy of a checkpoint to {self.mirror_store.root} failed ({error}); the local checkpoints are "
                "intact, and the next checkpoint's copy tries again.")
        self._mirror_said = error

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise ColabkitError(error)

    def settle(self) -> None:
        """Before the run leaves this notebook (an export): finish the save in flight, and save the
        live state if no checkpoint holds it yet, unless an interrupted iteration left it half done
        (then the last whole checkpoint is the run's)."""
        self.wait()
        if self._interrupted is None and not self.schedule.saved_at(self.step):
            self.save(force=True, wait=True)

    def save(self, force: bool = True, wait: bool = False) -> bool:
        """Copy the state now and hand it to the writer (%checkpoint now); False if skipped (one
        already in flight, or a rank other than 0)."""
        if self._interrupted is not None:
            raise ColabkitError("Not saved: " + self._interruption())
        if not self.claim.writes:
            raise ColabkitError("Not saved: " + self.claim.refusal())
        saved = self._save(force=force)
        if wait:
            self.wait()
        return saved

    def _save(self, force: bool, random: RandomStates | None = None, extra: dict | None = None,
              buffers: list = ()) -> bool:
        if not self.writes or not self.claim.writes:
            if not self.claim.writes:
                self.say_once("read-only", f"checkpoint at step {self.step} not saved: " + self.claim.refusal())
            self.schedule.mark_saved(self.step)
            return False
        if self._closed and not self._replaced:
            raise ColabkitError(f"Checkpoint at step {self.step} not saved: this Checkpointer was closed (close(), or "
                                "%checkpoint off). Make a new one to save again.")
        if self._replaced:
            raise ColabkitError(
                f"Checkpoint at step {self.step} not saved: a newer Checkpointer of this notebook saves into "
                f"{self.store.root} now, and two saving into one store replace each other's checkpoints at the "
                "same step. Save everything from one Checkpointer (Checkpointer(every=..., generator=G, "
                "discriminator=D)), or give each a folder of its own (to=...).")
        self._collect()
        self.step = _checked_step(self.step)
        if self.sink.busy:
            if not force:
                # Still due: the next consistent point after the writer finishes saves (a delay, not a loss:
                # a warning). One per save in flight.
                if f"busy-{self._saving_step}" not in self._said:
                    self._said.add(f"busy-{self._saving_step}")
                    warn(f"colabkit: checkpoint at step {self.step} postponed: the previous one is still being "
                         "written; the next consistent point after it is done saves (save less often, or to faster "
                         "storage).")
                return False
            self._record(self.sink.wait())
        if extra is None:
            extra = {"source": self._source_saved}
        if self._loop is not None and self._loop.seeded:
            from .adapters.torch_data import order_generator

            extra["generators"] = {name: order_generator(loader).get_state() for name, loader in self._loop.seeded.items()}
        layouts = self._layouts
        with collector.paused(), _buffers_as_noted(buffers):
            try:
                captured = state.capture(self.tracked(), random, extra, job_secrets.given(), layouts)
                self._say_skipped(captured.skipped)
                for name, why in captured.pickled_states.items():
                    self.say_once(f"pickled-{name}", f"{name}'s state dict holds {why}, which colabkit saves only "
                                  "by pickling it (into objects.pkl): a restore loads it into "
                                  f"{name} only when you trust the checkpoint (--trust, or trust=True).")
                self._take_over()  # once this save is sure to go to the writer
                streamed = self.sink.save(captured, self.step, self.position, self.pace, self._meta())
                nbytes = captured.nbytes if streamed is not None else None
            finally:
                layouts.release()
            del captured  # its per-tensor objects go before the collector runs again, not through it
        if streamed is not None:
            self.say_once("streamed", f"checkpoint step-{self.step} ({format_bytes(nbytes)}) is larger than "
                          f"the staging memory colabkit may take now ({format_bytes(streamed['budget'])}, "
                          f"{sink.RAM_HEADROOM:.0%} of the free RAM), so it was streamed to the writer through "
                          f"{format_bytes(streamed['ring'])} of memory: training paused "
                          f"{streamed['pause']:.1f} s while it was copied, where a save that fits "
                          "pauses only for its copy into memory. The panel shows each such pause; free RAM "
                          "(del large objects) to make it shorter.")
        self._saving_step = self.step
        self.schedule.mark_saved(self.step)
        warning = self.drive_warning()
        if warning is not None:
            self.say_once("drive-space", warning.removeprefix("⚠ "))
        return True

    def tracked(self) -> dict[str, object]:
        """The objects to save now. Names are read afresh from the notebook, since a cell may
        rebind them (ema = ema * 0.9 + ...); an object a framework trained is saved with its run
        (optimizer, scheduler, trainer state), also after the run."""
        objects = dict(self.objects) if self.namespace is None else {
            name: self.namespace.get(name, value) for name, value in self.objects.items()}
        for name, run in self._runs.items():
            if name in objects and run.owns(objects[name]):
                objects[name] = run
        return objects

    def tracked_name(self, value) -> str | None:
        """The tracked name of `value` (or of the framework run that trains it)."""
        for name, tracked in self.tracked().items():
            if tracked is value or (isinstance(tracked, adapters.Run) and tracked.owns(value)):
                return name
        return None

    def name_of(self, value) -> str | None:
        """The tracked name bound to `value`, else any notebook variable bound to it."""
        name = self.tracked_name(value)
        if name is not None:
            return name
        for name, bound in (self.namespace or {}).items():
            if bound is value and not name.startswith("_"):
                return name
        return None

    def _say_skipped(self, skipped: dict[str, str]) -> None:
        for name, why in skipped.items():
            self.say_once(f"skipped-{name}", f"not saved: {name} ({why}). Everything else is saved; a resume "
                          f"stops until {name} is left out of %checkpoint.")

    def _meta(self) -> dict:
        from .. import platform, runtime

        versions = {"python": sys.version.split()[0], "numpy": numpy.__version__}
        torch = sys.modules.get("torch")
        if torch is not None:
            versions["torch"] = str(torch.__version__)  # a TorchVersion would make the writer import torch
        return {"colabkit": VERSION, "platform": platform.detect_name(), "notebook": runtime.current().notebook.name,
                "position": self.position, "loop": self._loops_done + (self._loop is not None) or 1,
                "pace": self.pace, "total": self.total, "libraries": versions}

    def wait(self) -> None:
        """Block until the save in flight is committed; raise its error if it failed."""
        result = self.sink.wait()
        if result is not None:
            self._record(result)
        self._raise_error()

    # -- restoring -------------------------------------------------------------------------
    def stores(self) -> list[CheckpointStore]:
        return [self.store] + ([self.mirror_store] if self.mirror_store else [])

    def restore(self, checkpoint_id: str = "latest", trust: bool | None = None, namespace: dict | None = None,
                report: bool = True) -> Restored | None:
        """Load a checkpoint (the newest that verifies, by default) into the tracked objects.

        `namespace` (a notebook's variables) supplies objects to load state dicts into that this
        Checkpointer doesn't track, and receives the values restored by name (default: the
        namespace given at creation). The live state is then the checkpoint's: an interrupted loop
        or run resumes from it. `report`: print what was restored and its notes (what was not
        restored, and why), as %checkpoint restore does; callers that say it their way pass False.
        """
        namespace = self.namespace if namespace is None else namespace
        trust = self.trust if trust is None else trust
        tracked = self.tracked()
        restored = restore(self.stores(), checkpoint_id, trust, {**(namespace or {}), **tracked}, tracked)
        if restored is None:
            return None
        self.objects.update({k: v for k, v in restored.values.items() if k in self.objects})
        if namespace is not None:
            namespace.update(restored.values)
        self.step, self.position, self.pace = restored.step, restored.position, restored.pace
        self._round = weakref.WeakSet()
        self._pending = None
        self._interrupted = None
        self._keep_live = False
        self._finished.clear()  # the live state is the checkpoint's: the next run resumes from it
        # `position` counts in the checkpoint's loop: the next loop is that one (loop()).
        self._restore_at = restored.checkpoint.manifest.get("loop", 1)
        self._loops_done = self._restore_at - 1
        self._source_saved = restored.extra.get("source") or {}
        self.schedule.mark_saved(self.step)
        if report:
            print(restored.summary(), flush=True)
        return restored

    def keep_live(self) -> None:
        """After an interruption: go on from the live state (%checkpoint keep), not from the checkpoint."""
        if self._interrupted is None:
            raise ColabkitError("Nothing was interrupted: the live state and the checkpoints agree.")
        self._interrupted, self._keep_live = None, True

    def _resume(self, what: str) -> Restored | None:
        """The start of a loop or a framework's run: restore the latest checkpoint, all of it, or stop."""
        if self._interrupted is not None:
            raise ColabkitError(self._interruption())
        restored = self.restore(report=False)
        if restored is not None and restored.unrestored:
            raise ColabkitError(_not_skipping(restored, what))
        return restored

    def _interrupt(self, what: str, going_on: str) -> None:
        self._interrupted = (what, self.step, going_on)

    def _interruption(self) -> str:
        """What an interruption left, and the two ways on (said when the loop or run is run again)."""
        what, step, going_on = self._interrupted
        self.wait()  # the checkpoint in flight at the interruption counts
        latest = self._latest_id()
        if latest is None:
            back = ("there is no checkpoint yet, so the exact way is to start over: restart the kernel and run the "
                    "notebook again")
        else:
            back = (f"%checkpoint restore goes back to {latest} (exact: the steps since are trained again), then run "
                    "this again")
        return (f"{what} was interrupted at step {step}, part of the way through, so running it again can't go on "
                f"exactly from the live state. Choose: {back}; or %checkpoint keep goes on from the live state, "
                f"{going_on} (not exact).")

    def _latest_id(self) -> str | None:
        ids = [c.id for store in self.stores() for c in store.list()]
        steps = [(codec.step_of(i), i) for i in ids]
        return max(steps)[1] if steps else None

    def drive_warning(self) -> str | None:
        """A line for the panel when the next checkpoint's copy would not fit in Drive's free space
        (what it copies: the bytes the last save staged, or the whole state before the first).
        Never waits for Drive: its free space is read in the background."""
        if self._drive_space is None:
            return None
        need, free = self.sink.next_bytes, self._drive_space.free()
        if need is None or free is None or need + DRIVE_MARGIN <= free:
            return None
        return (f"⚠ Drive: the next checkpoint's copy (about {format_bytes(need)}) will not fit in the "
                f"{format_bytes(free)} free in your Google Drive ({self.mirror_store.root}), and the copy there "
                "will fail. Free space in Drive (empty its trash too: deleted files count until then), keep fewer "
                f"checkpoints (%checkpoint every ... --keep {max(1, self.store.keep - 1)}), or save elsewhere "
                "(%checkpoint every ... --to PATH).")

    def status(self) -> str | None:
        """One line for the panel: the last checkpoint and, on Drive, how far its copy lags."""
        if self.last is None:
            return None
        if not self.last["ok"]:
            return f"checkpoint step-{self.last.get('step')} FAILED: see the cell output"
        age = format_duration(time.time() - self.last["at"])
        line = f"checkpoint {self.last['id']} ({format_bytes(self.last.get('bytes'))}, {age} ago)"
        if self.last.get("above"):
            line += f" · below {self.last['above'][0]} in the store: a restore loads that (see the cell output)"
        if self.last.get("streamed"):
            line += f" · larger than free RAM allows: streamed, training paused {self.last['pause']:.1f} s"
        if self.mirror_store is not None:
            mirror = self._mirror_status()
            copied = mirror.get("mirrored") or "none yet"
            line += f" · Drive copy: {copied}"
            if mirror.get("pending"):
                line += f" (copying {mirror['pending']})"
            if mirror.get("error"):
                line += f" · Drive copy failed: {mirror['error']}"
        return line

    # -- a framework's run -----------------------------------------------------------------
    def run_name(self, what: str, *values) -> str | None:
        """The tracked name a framework's run saves under (the first of `values` tracked), or None
        when nothing of it is saved, said: what it trains isn't tracked, or that object's last run
        finished in this session (a new run counts its steps from 0 again, below the checkpoints
        of the last one, and the two would mix)."""
        name = next((n for n in map(self.tracked_name, values) if n is not None), None)
        if name is None:
            self.say_once(f"untracked-{what}", f"{what} trains a model that %checkpoint doesn't track, so nothing "
                                               "of this run is saved: name the model (or the trainer) in %checkpoint.")
        elif name in self._finished:
            self.say_once(f"again-{name}", f"{what} runs again on the live {name}, as it does by default, since its "
                          f"last run finished in this session. Its steps start again from 0, below the checkpoints "
                          f"of the last run in {self.store.root}, so nothing of this run is saved there: give it a "
                          f"folder of its own (%checkpoint every ... {name} --to ANOTHER-FOLDER).")
            return None
        return name

    def resume_run(self, name: str, what: str):
        """Before a framework's run of the object tracked as `name`: restore the latest checkpoint
        (all of it, or stop) and return what the run resumes from, and from which checkpoint
        (None: the run starts afresh)."""
        if self._keep_live:
            self._keep_live = False
            say(f"{what}: going on from the live state, as %checkpoint keep said.")
            return None
        restored = self._resume(what)
        if restored is None or name not in restored.resume:
            return None
        return restored.resume[name], restored

    @contextlib.contextmanager
    def running(self, name: str | None, run, what: str, going_on: str):
        """While a framework trains: its step ends are the consistent points; once more at its end."""
        self._run = run if run is not None else _UNTRACKED
        if name is not None:
            self._runs[name] = run
        try:
            yield
        except BaseException:
            if name is not None:
                self._interrupt(what, going_on)
            raise
        finally:
            self._run = None
        if name is not None:
            self.at_step(run.step(), final=True)
            self.wait()
            self._finished.add(name)

    def at_step(self, step: int, final: bool = False) -> None:
        """A framework's step end (or its run's end): consistent."""
        self.step = step
        self._stepped()
        if final and not self.schedule.saved_at(step):
            self.schedule.request()
        self.at_consistent_point()

    # -- the loop --------------------------------------------------------------------------
    def loop(self, iterable, total: int | None = None):
        """Iterate, restoring the latest checkpoint first and skipping the iterations it covers;
        save at consistent points when due, and once more at the end."""
        from .progress import LoopProgress

        if self._loop is not None:
            raise ColabkitError(
                "resumable() inside another resumable() can't be resumed exactly: both count their iterations "
                "as the one loop's. Make the outer loop resumable() and the inner one plain (for epoch in "
                "resumable(range(E)): for batch in train_loader: ...): a checkpoint inside an epoch finds its "
                "place in a named DataLoader again.")
        source = _Source(iterable)
        inside = None
        skip = self._skipped_loop()
        if skip is not None:
            say(skip)
            self._loops_done += 1
            return
        if self._keep_live:
            self._keep_live, restored, start = False, None, self.position
            say(f"going on from the live state, as %checkpoint keep said: iteration {start + 1} starts again "
                "from its beginning with the weights it had when interrupted.")
            iterator = source.resume({}, start)
        elif self._loops_done and self._restore_at is None:  # after a loop of this session: a new one
            if self._interrupted is not None:
                raise ColabkitError(self._interruption())
            self.say_once("loop-again", "resumable(): a loop already ran to its end with this checkpointing, so "
                          "this one starts at its first iteration from the live state, as a plain loop would.")
            restored, start, self.position, self._source_saved = None, 0, 0, {}
            iterator = source.resume({}, 0)
        else:
            restored = self._resume("resumable()")
            self._restore_at = None
            start = self.position if restored is not None else 0
            if restored is None:
                self.position = 0
            extra = restored.extra if restored is not None else {}
            self._restore_generators(extra.get("generators", {}))
            inside = extra.get("inside")
            iterator = source.resume(extra.get("source"), start)
            if inside is not None:
                restored.notes += self._expect_inside(inside)
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total = total
        progress = LoopProgress(total, start, restored)
        loop = self._loop = _Loop(source)
        try:
            for item in iterator:
                if inside is not None:
                    inside.pop("random").restore()
                    loop.begin(RandomStates.capture(), inside["steps"])
                    loop.steps_seen = True
                    inside = None
                else:
                    loop.begin()
                began = time.monotonic()
                try:
                    yield item
                except GeneratorExit:  # the body raised (an interrupt) or broke out: not a whole iteration
                    self._pending = None
                    self._interrupt(f"resumable(), in iteration {self.position + 1}"
                                    + (f" of {total}" if total else ""),
                                    f"starting iteration {self.position + 1} again from the live weights")
                    raise
                # Back here means the body finished: a consistent point if an optimizer stepped in it
                # (or none ever did: then an iteration is a step).
                elapsed = time.monotonic() - began
                self.pace = elapsed if self.pace is None else 0.8 * self.pace + 0.2 * elapsed
                self.position += 1
                self._check_expected(loop)
                if not loop.steps_seen:
                    self.step += 1
                self._note_seeded(loop)
                if not loop.steps_seen or loop.steps_in_iteration:
                    self._source_saved = source.saved(self.position)
                    self.at_consistent_point()
                progress.update(self.position, self.pace, self.last)
            self._source_saved = source.saved(self.position)
            if not self.schedule.saved_at(self.step) or self.schedule.forced:
                self._save(force=True)
            self.wait()
            self._loops_done += 1
            progress.update(self.position, self.pace, self.last, done=True)
        finally:
            self._loop = None
            progress.close(self.position, self.pace, self.last)  # a loop left early says it stopped

    def _skipped_loop(self) -> str | None:
        """Whether the loop starting now ran to its end before the latest checkpoint was taken (in a
        later loop of the notebook: a run of all its cells again after a restart), and what to say:
        it is skipped, and the checkpoint is restored at its own loop. Every loop restored the
        latest checkpoint and counted its iterations from the same count, so a second loop was
        skipped as done, or a first one by a later loop's count, and the live state rolled back."""
        if self._loops_done == 0 and not self._keep_live and self._interrupted is None:
            found, _ = candidates(self.stores())
            self._restore_at = found[0].manifest.get("loop", 1) if found else None
        loop = self._loops_done + 1
        if self._restore_at is None or loop >= self._restore_at:
            return None
        return (f"resumable(): this is loop {loop} of this checkpointing, and the latest checkpoint was taken in "
                f"loop {self._restore_at}, so this one ran to its end before it: skipped. The checkpoint is "
                f"restored when loop {self._restore_at} starts.")

    def _note_seeded(self, loop: _Loop) -> None:
        """DataLoaders with their own generator (generator=, or their sampler's) draw each epoch's
        order from it: saved with the loop."""
        for loader, _ in loop.loaders():  # only when torch_data is loaded: importing it would import torch
            if sys.modules["colabkit.checkpoint.adapters.torch_data"].order_generator(loader) is not None:
                name = self.name_of(loader)
                if name is not None:
                    loop.seeded[name] = loader
                else:
                    self.say_once("seeded", "a DataLoader with its own generator= has no name in the notebook, so "
                                            "its generator's state can't be restored after a restart: the shuffle "
                                            "order of later epochs would differ. Keep it in a variable "
                                            "(train_loader = DataLoader(..., generator=g)).")

    def _restore_generators(self, saved: dict) -> None:
        if not saved:
            return
        from .adapters.torch_data import order_generator

        for name, generator_state in saved.items():
            loader = (self.namespace or {}).get(name, self.objects.get(name))
            generator = order_generator(loader)
            if generator is None:
                raise ColabkitError(f"resumable() did not resume: the checkpoint holds the state of {name}'s own "
                                    f"generator, but there is no DataLoader named {name} with a generator here. "
                                    "Create it as before, then run this again.")
            generator.set_state(generator_state)

    def _expect_inside(self, inside: dict) -> list[str]:
        """A checkpoint from the middle of an iteration: its named DataLoaders skip the batches already
        trained when the resumed iteration starts their epoch. Returns notes for the user."""
        from .adapters import torch_data

        after = RandomStates.capture()  # the checkpoint's random states, put back once the skip is done
        notes = []
        for name, saved in inside["loaders"].items():
            loader = (self.namespace or {}).get(name, self.objects.get(name))
            if loader is None or not torch_data.replayable(loader):
                raise ColabkitError(
                    f"resumable() did not resume: the checkpoint was taken in the middle of iteration "
                    f"{self.position + 1}, {saved['batches']} batches into {name}'s epoch, but there is no DataLoader "
                    f"named {name} here. Create it as before (same dataset, batch size and shuffle), then run this "
                    "again; or %checkpoint restore an earlier checkpoint.")
            torch_data.expect(loader, saved, saved["batches"], after)
            notes.append(f"in the middle of iteration {self.position + 1}: {name} skips the {saved['batches']} batches "
                         "already trained, without loading them")
        self._expected = list(inside["loaders"])
        self._resumed_into = self.tracked()  # what the checkpoint was restored into (_check_expected)
        return notes

    def _check_expected(self, loop: _Loop) -> None:
        """At the end of an iteration resumed in its middle: say what makes it not what the
        interrupted run would have trained (a DataLoader it expected not iterated; an object the
        checkpoint was restored into made anew in the iteration, as k-fold code makes each fold's
        model, which then trained only on the batches the skip left)."""
        names, self._expected = self._expected, []
        restored_into, self._resumed_into = self._resumed_into, {}
        now = self.tracked()
        anew = [name for name, value in restored_into.items() if now.get(name) is not value]
        if anew:
            say(f"the resumed iteration made {', '.join(anew)} anew, so the checkpoint's state restored into the "
                f"old {'ones' if len(anew) > 1 else 'one'} is not what it trained, while its DataLoaders skipped the "
                "batches the interrupted run had trained: this iteration is not what an uninterrupted run trains. "
                "Make them before the resumable() loop: for code that makes a model each fold, for fold in "
                "range(K): model, opt = make(); for epoch in colabkit.resumable(range(E)): ... (loops in a row "
                "resume exactly).")
        if not names:
            return
        from .adapters import torch_data

        missed = [n for n in names if torch_data.pending((self.namespace or {}).get(n, self.objects.get(n)))]
        if missed:
            say(f"the resumed iteration did not iterate {', '.join(missed)}, which the checkpoint expected; the "
                "batches it had trained are not skipped anywhere, so this run is no longer exact.")

    def _take_over(self) -> None:
        """Be the one Checkpointer of this kernel that saves into the store: one that saved there
        before (a cell that made a Checkpointer run again, or a second one on the same folder) is
        closed, and its next save says why it can't (they shared the store's lock, and replaced each
        other's checkpoints at the same step, both reported saved). Taken at the first save, so a
        Checkpointer made only to restore leaves the saving one alone."""
        saving = _saving.get(self.store.root)
        previous = saving() if saving is not None else None
        if previous is self:
            return
        _saving[self.store.root] = weakref.ref(self)
        if previous is None or previous._closed:
            return
        previous._replaced = True
        from . import session

        try:
            if session.active() is previous:  # unhooked too: its hooks would raise inside the training loop
                session.deactivate()
                say(f"%checkpoint every stopped: a Checkpointer made in Python saves into {self.store.root} now, "
                    "and two saving into one store would replace each other's checkpoints. Track everything in one "
                    "of them, or give this one a folder of its own (to=...).")
            else:
                previous.close()
        except ColabkitError as exc:  # its last save failed: said, as its own close would have
            say(str(exc))

    def close(self) -> None:
        """Wait for the save in flight and the Drive copy, stop the writer, free the staging buffer."""
        if self._closed:
            return
        self._closed = True
        try:
            result = self.sink.close(waiting=self._say_drive_wait)
        except KeyboardInterrupt:  # the wait for the Drive copy cut short: what it leaves is said
            self._say_drive_cut("you interrupted the wait for it")
            raise
        finally:
            self.claim.release()
        if result is not None:
            self._record(result, closing=True)
        elif self.last is not None:
            self._say_mirror_failure()  # the copy that ran while the writer closed
        self._say_drive_cut()
        self._raise_error()

    def _mirror_status(self) -> dict:
        """The Drive copy's progress as the writer's mirror records it (MIRROR.json); {} without Drive."""
        from .mirror import read_status

        return (read_status(self.store.root) or {}) if self.mirror_store is not None else {}

    def _copying(self) -> str | None:
        """The checkpoint the Drive copy is on or about to be, None when none is."""
        return self._mirror_status().get("pending")

    def _say_drive_wait(self) -> None:
        """Closing waits for the writer's Drive copy: say why the cell is still running."""
        from .writer import CLOSE_WAIT

        copying = self._copying()
        if copying:
            say(f"finishing the copy of {copying} to {self.mirror_store.root} before checkpointing stops "
                f"(at most {CLOSE_WAIT:.0f} s).")

    def _say_drive_cut(self, why: str | None = None) -> None:
        """After the writer is gone: a Drive copy it had not finished (stopped after CLOSE_WAIT, or
        the writer died) leaves that checkpoint on this VM's disk only, which a person who turned
        checkpointing off expects on Drive."""
        from .writer import CLOSE_WAIT

        copying = self._copying() if self.last is not None else None
        if not copying:
            return
        try:
            on_drive = [f.name for f in self.mirror_store.committed_folders()]
        except OSError:  # Drive unmounted meanwhile
            on_drive = []
        why = why or f"it was stopped {CLOSE_WAIT:.0f} s after checkpointing stopped, or its writer died"
        say(f"the copy of {copying} to {self.mirror_store.root} did not finish ({why}), so {copying} is only on "
            f"this VM's disk, in {self.store.root}; Drive's newest checkpoint is "
            f"{on_drive[0] if on_drive else 'none'}. To have it on Drive, turn checkpointing on again "
            "(%checkpoint every ...) and save (%checkpoint now): that copy brings what Drive lacks.")


_saving: dict[Path, weakref.ref] = {}  # store root -> the Checkpointer of this kernel that saves there (_take_over)


def close_all() -> list[str]:
    """At a job's end: turn %checkpoint off and close every Checkpointer of this kernel that saved,
    waiting for their last saves; why a last checkpoint is not in its store, for each that is not
    (a lost or refused save too, which a close only says)."""
    from . import session

    failures, reported = [], set()
    active = session.active()
    try:
        session.deactivate()
    except ColabkitError as exc:
        failures.append(str(exc))
        reported.add(id(active))
    for ref in list(_saving.values()):
        checkpointer = ref()
        if checkpointer is None or id(checkpointer) in reported:
            continue
        try:
            checkpointer.close()
        except ColabkitError as exc:
            failures.append(str(exc))
            continue
        last = checkpointer.last
        if last is not None and not last.get("ok"):
            failures.append(f"checkpoint step-{last.get('step')} is not in {checkpointer.store.root}: "
                            + (last.get("error") or "retention deleted it at once (higher steps are kept there)"))
    return failures


def _checked_step(step) -> int:
    """The step a save is named by, as an int: a checkpoint is the folder step-N, and list,
    retention and restore order them by N, so a negative or fractional step was saved under a
    name none of them sees (and its packs were then collected)."""
    if isinstance(step, numbers.Integral) and not isinstance(step, bool) and step >= 0:
        return int(step)  # a NumPy integer too
    raise ColabkitError(f"Checkpoint not saved: its step is {step!r}, and a checkpoint's step must be a whole "
                        "number, 0 or more (checkpoints are the folders step-N, ordered by N). Set the "
                        "Checkpointer's step to the iteration or optimizer step the state is at, as an int.")


def candidates(stores: list[CheckpointStore], checkpoint_id: str = "latest") -> tuple[list[Checkpoint], list[tuple]]:
    """The checkpoints to try, best first, from any of `stores` (a local store and its Drive
    mirror): `checkpoint_id` (each store's copy of it, local first: a damaged local copy falls
    back to Drive's), or every committed one, newest step first (local first on a tie); and why
    the ones whose manifest or sizes are wrong were passed over ((step, why)). No tensor byte is
    read: the load verifies as it reads."""
    if checkpoint_id != "latest":
        if codec.step_of(checkpoint_id) is None or not any((store.root / checkpoint_id).is_dir() for store in stores):
            stores[0].get(checkpoint_id)  # says clearly that there is no such checkpoint (a path is none)
        folders = [[store.root / checkpoint_id] for store in stores if (store.root / checkpoint_id).is_dir()]
    else:
        folders = [store.committed_folders() for store in stores]
    found, skipped = [], []
    for rank, store_folders in enumerate(folders):
        for folder in store_folders:
            try:
                checkpoint = load_checkpoint(folder)
                codec.check_sizes(folder, checkpoint.manifest)
                found.append((-checkpoint.step, rank, checkpoint))
            except codec.CheckpointDamaged as exc:
                skipped.append((codec.step_of(folder.name), str(exc)))
    if checkpoint_id != "latest" and not found:
        raise CheckpointDamaged(" ".join(why for _, why in skipped))
    return [c for _, _, c in sorted(found, key=lambda f: f[:2])], skipped


def restore(stores: list[CheckpointStore], checkpoint_id: str, trust: bool, targets: dict,
            tracked: Iterable[str] = ()) -> Restored | None:
    """Load a checkpoint from `stores` (the newest that verifies, by default): state dicts and
    framework objects into the objects in `targets` (name -> object), in place; the values to bind
    by name are returned. Each byte is read once and verified as it is read; a checkpoint that is
    damaged, or verifies but doesn't decode, is passed over for the one before. A `tracked` name
    the checkpoint lacks is unrestored (a resume then does not skip what it covers). Reads only: a
    read-only store restores."""
    tried, skipped = candidates(stores, checkpoint_id)
    overwritten = {}  # name -> the damaged checkpoint that was partly read straight into it
    for checkpoint in tried:
        try:
            loaded, outcome = _decode(checkpoint, trust, targets)
            break
        except CheckpointDamaged as exc:
            for name in exc.overwritten:
                overwritten.setdefault(name, checkpoint.id)
            if checkpoint_id != "latest" and checkpoint is tried[-1]:
                raise
            skipped.append((checkpoint.step, str(exc)))
        except (Exception, KeyboardInterrupt) as exc:  # an older one failed otherwise: the mix still said
            if not overwritten:
                raise
            raise _mixed(exc, overwritten) from exc
    else:
        if skipped:
            raise ColabkitError(f"No checkpoint in {stores[0].root} can be loaded: "
                                + " ".join(why for _, why in skipped))
        return None
    for name in tracked:
        if name not in loaded.structure["objects"] and name not in outcome.unrestored:
            outcome.unrestored[name] = (f"{checkpoint.id} does not hold it (tracked since that save?), so it keeps its "
                                        "live state")
    for name, damaged in overwritten.items():
        if name not in loaded.structure["objects"] or name in outcome.unrestored:
            outcome.unrestored[name] = (f"the damaged {damaged} was partly read into it before its damage was "
                                        f"found, and {checkpoint.id} does not hold it, so it is a mix of the two: "
                                        "create it again before training on")
    notes = [f"{why} (passed over: newer checkpoint damaged)" for step, why in skipped if step > checkpoint.step]
    notes += [f"{why} (passed over: its copy in {checkpoint.path.parent} was restored)"
              for step, why in skipped if step == checkpoint.step]
    notes += outcome.notes
    notes += [f"{name} was not restored: {why}." for name, why in outcome.unrestored.items()]
    return Restored(checkpoint, outcome.values, notes, outcome.unrestored, loaded.step, loaded.position, loaded.pace,
                    outcome.extra, outcome.resume)


def _decode(checkpoint: Checkpoint, trust: bool, targets: dict):
    """Read a checkpoint into `targets`, verifying it as it is read; CheckpointDamaged when it is
    damaged, or verifies but doesn't decode (a crafted header, a structure too deep or missing a key),
    naming the modules read straight into by then (`overwritten`); a ColabkitError when an
    object's own load_state_dict refuses its state (no older checkpoint would fit better). Whatever
    else stops it midway is raised naming those modules too."""
    plan = inplace.Plan(targets)
    try:
        with collector.paused():
            loaded = codec.read(checkpoint.path, trust, checkpoint.manifest, plan.place)
    except (CheckpointDamaged, OSError) as exc:
        if not plan.objects:
            raise
        if isinstance(exc, OSError):  # a disk that fails mid-read (EIO): this checkpoint can't be used
            exc = f"{checkpoint.id}: reading it failed ({exc})."
        damaged = CheckpointDamaged(f"{exc} It was being read straight into {', '.join(plan.objects)}, which may "
                                    "already hold part of it.")
        damaged.overwritten = tuple(plan.objects)
        raise damaged from None
    except (Exception, KeyboardInterrupt) as exc:  # interrupted, or a failure of no checkpoint's making, mid-read
        if not plan.objects:
            raise
        raise _mixed(exc, dict.fromkeys(plan.objects, checkpoint.id)) from exc
    try:
        with collector.paused():
            return loaded, state.restore(loaded.structure, loaded.tensors, targets, loaded.objects, plan.objects)
    except state.Refused as refused:
        before = f" {', '.join(refused.restored)} had been restored from it already." if refused.restored else ""
        if "inference tensor" in str(refused.error):  # torch's words for a write into one outside inference_mode
            todo = (f"{refused.name}'s tensors were made under torch.inference_mode(), and torch lets nothing write "
                    f"into them outside it: create {refused.name} outside inference_mode")
        else:
            todo = (f"Create {refused.name} as it was when saved (the same architecture and dtype; for an "
                    "optimizer, the same parameter groups)")
        raise ColabkitError(
            f"{checkpoint.id} does not fit the notebook's {refused.name}: its load_state_dict refused what was "
            f"saved ({type(refused.error).__name__}: {str(refused.error)[:600]}).{before} {todo}, then restore "
            "again.") from refused.error
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        damaged = CheckpointDamaged(f"{checkpoint.id}: {codec.STATE} cannot be decoded ({type(exc).__name__}: "
                                    f"{str(exc)[:200]}).")
        damaged.overwritten = tuple(plan.objects)  # read in full before the state failed
        raise damaged from None
    except KeyboardInterrupt as exc:
        if not plan.objects:
            raise
        raise _mixed(exc, dict.fromkeys(plan.objects, checkpoint.id)) from exc


def _mixed(exc: BaseException, overwritten: dict[str, str]) -> BaseException:
    """`exc` said with what it leaves: objects a checkpoint was read straight into (name -> its
    id) before the restore stopped, which may hold part of it. An interrupt stays one."""
    held = ", ".join(f"{name} ({checkpoint})" for name, checkpoint in overwritten.items())
    said = (f"{held} may hold part of a checkpoint that was being read straight into it: restore again "
            "(%checkpoint restore), or create it anew, before training on.")
    if isinstance(exc, KeyboardInterrupt):
        return KeyboardInterrupt(f"The restore was interrupted. {said}")
    what = str(exc) if isinstance(exc, ColabkitError) else f"The restore failed ({type(exc).__name__}: {exc})."
    return ColabkitError(f"{what} {said}")
