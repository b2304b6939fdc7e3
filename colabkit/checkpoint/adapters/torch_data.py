"""Where a PyTorch DataLoader is in its epoch, and how to get back there without loading a sample.

A DataLoader draws its shuffle order from the global torch random state (or its own `generator=`)
when an epoch's iterator starts. So `DataLoader.__iter__` is wrapped, while %checkpoint is on, to
note that random state (and the generator's) at each epoch's start; with the number of batches
yielded since, that is the loader's position. To resume mid-epoch the same order is drawn again
from that state and the batches already trained are skipped as indices, before any sample is
loaded; then the random state of the checkpoint is put back. A loader with the StatefulDataLoader
protocol (state_dict/load_state_dict) keeps its own position instead, and is never replayed too.

Measured limits (said when they apply): with num_workers > 0 the order is exact but random
augmentation inside the workers is not (a worker gets other batches than before); an
IterableDataset has no indices to skip, so its first batches are loaded to be skipped.
"""

from __future__ import annotations

import copy
import itertools
import weakref
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, IterableDataset

from ...errors import say
from . import replace_method

_epochs: "weakref.WeakKeyDictionary[DataLoader, Epoch]" = weakref.WeakKeyDictionary()
_expected: "weakref.WeakKeyDictionary[DataLoader, Replay]" = weakref.WeakKeyDictionary()
_first: list = []  # a Replay for whichever plain DataLoader starts an epoch next (Lightning's train loader)
_serials = itertools.count(1)


@dataclass
class Epoch:
    """One epoch's iterator of a loader: the random state it was drawn from, and how far it got."""

    random: object  # torch's CPU random state at iter()
    generator: object  # the loader's own generator's state at iter(), if it has one
    iterator: object  # weakref to the iterator
    serial: int  # order of iter() calls, to tell which loaders a loop iteration used
    skipped: int = 0

    def batches(self) -> int | None:
        """Batches yielded so far (None once the iterator is gone)."""
        iterator = self.iterator()
        return None if iterator is None else getattr(iterator, "_num_yielded", None)


@dataclass
class Replay:
    random: object
    generator: object
    batches: int
    after: object = None  # state.RandomStates to put back once the skip is done


def order_generator(loader):
    """The generator a loader draws its shuffle order from when it has its own: its generator=,
    or its sampler's (RandomSampler(data, generator=g), also under a batch_sampler); None when
    the order comes from the global random state."""
    for holder in (loader, getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        generator = getattr(holder, "generator", None)
        if isinstance(generator, torch.Generator):
            return generator
    return None


def replayable(loader) -> bool:
    """A plain DataLoader: its position is colabkit's to keep (a stateful one keeps its own)."""
    return isinstance(loader, DataLoader) and not callable(getattr(loader, "load_state_dict", None))


def serial() -> int:
    """A number below the serial of every epoch started after this call."""
    return next(_serials)


def started_since(mark: int) -> list[tuple[DataLoader, Epoch]]:
    return [(loader, epoch) for loader, epoch in list(_epochs.items()) if epoch.serial > mark]


def position(loader, batches: int | None = None) -> dict | None:
    """What replay() needs to bring `loader` back to `batches` into its current epoch (default: as
    far as it has got), and its generator's state now; None if it has started no epoch here."""
    epoch = _epochs.get(loader)
    if epoch is None:
        return None
    done = epoch.batches() if batches is None else batches
    generator = getattr(loader, "generator", None)
    return {"random": epoch.random, "generator": epoch.generator, "batches": done if done is not None else 0,
            "generator_now": generator.get_state() if generator is not None else None}


def expect(loader, saved: dict, batches: int, after=None) -> None:
    """Replay `saved` (from position()) at `loader`'s next iter()."""
    _expected[loader] = Replay(saved["random"], saved.get("generator"), batches, after)


def expect_first(saved: dict, batches: int, after=None) -> None:
    _first[:] = [Replay(saved["random"], saved.get("generator"), batches, after)]


def clear_first() -> bool:
    """Forget an expect_first() no loader took; True if there was one."""
    had = bool(_first)
    _first.clear()
    return had


def pending(loader) -> bool:
    return loader in _expected


def replay(loader, saved: dict, batches: int, after=None):
    """An iterator over the rest of the epoch `saved` describes: same order, skipped batches unloaded."""
    original = _ORIGINAL[0] if _ORIGINAL else DataLoader.__iter__
    return _replay(loader, Replay(saved["random"], saved.get("generator"), batches, after), original)


class _Skip:
    """An index sampler without its first `n` items (indices only: nothing is loaded)."""

    def __init__(self, inner, n: int):
        self.inner, self.n = inner, n

    def __iter__(self):
        items = iter(self.inner)
        for _ in range(self.n):
            if next(items, _END) is _END:
                return
        yield from items

    def __len__(self):
        return len(self.inner)


_END = object()
_ORIGINAL: list = []


def _replay(loader, replay: Replay, original_iter):
    torch.set_rng_state(replay.random)
    generator = order_generator(loader)
    if generator is not None and replay.generator is not None:
        generator.set_state(replay.generator)
    record = Epoch(replay.random, replay.generator, None, next(_serials), replay.batches)
    if replay.batches == 0:
        iterator = original_iter(loader)
    elif isinstance(loader.dataset, IterableDataset):
        iterator = original_iter(loader)
        for _ in range(replay.batches):
            next(iterator, None)
        say(f"resuming a DataLoader over an IterableDataset {replay.batches} batches into its epoch: it has no "
            "indices to skip, so those batches were loaded again to be skipped.")
    else:
        proxy = copy.copy(loader)  # the same loader, but its index sampler skips what was trained
        object.__setattr__(proxy, "_iterator", None)
        sampler = "batch_sampler" if loader._auto_collation else "sampler"
        object.__setattr__(proxy, sampler, _Skip(getattr(loader, sampler), replay.batches))
        iterator = proxy._get_iterator()
        if loader.num_workers == 0:  # draw the order now, before the checkpoint's random state is back
            first = next(iterator._sampler_iter, _END)
            iterator._sampler_iter = iter(()) if first is _END else itertools.chain([first], iterator._sampler_iter)
        else:
            say(f"a DataLoader with num_workers={loader.num_workers} resumed {replay.batches} batches into its "
                "epoch: the batch order is exact, but random augmentation done inside its workers is not (each "
                "worker now gets other batches than before).")
        iterator._num_yielded = replay.batches
    record.iterator = weakref.ref(iterator)
    _epochs[loader] = record
    if replay.after is not None:
        replay.after.restore()
    return iterator


def patch(session, module):
    """Note every plain DataLoader's epoch start; replay where a resume expects it."""

    def make(original):
        _ORIGINAL[:] = [original]

        def __iter__(self):
            if not replayable(self):
                return original(self)
            expected = _expected.pop(self, None)
            if expected is None and _first:
                expected = _first.pop()
            if expected is not None:
                return _replay(self, expected, original)
            generator = order_generator(self)
            record = Epoch(torch.get_rng_state(), generator.get_state() if generator is not None else None,
                           None, next(_serials))
            iterator = original(self)
            record.iterator = weakref.ref(iterator)
            _epochs[self] = record
            return iterator

        return __iter__

    return replace_method(DataLoader, "__iter__", make)
