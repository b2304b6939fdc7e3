"""A plain module's tensors restored straight into its own memory (checkpoint/inplace.py): exact,
verified, and everything else still loaded by load_state_dict."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from colabkit.checkpoint import codec, inplace
from colabkit.checkpoint.checkpointer import Checkpointer
from colabkit.checkpoint.store import CheckpointStore
from colabkit.errors import ColabkitError
from helpers.tensor_index import index_of, rows_by_key


class Packed(torch.nn.Module):
    """Parameters that are views into one flat tensor at offsets (as flat-parameter wrappers make
    them), tied weights, a bf16 weight, an int64 and a non-persistent buffer, an empty parameter,
    and 1,500 small parameters: more than one read's worth of buffers."""

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        flat = torch.randn(64)
        self.a = torch.nn.Parameter(flat[3:19].view(4, 4))
        self.b = torch.nn.Parameter(flat[40:45])
        self.embed = torch.nn.Embedding(10, 4)
        self.head = torch.nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight  # tied: one tensor under two keys
        self.low = torch.nn.Linear(4, 4).to(torch.bfloat16)
        self.many = torch.nn.ParameterList(torch.nn.Parameter(torch.randn(3)) for _ in range(1500))
        self.empty = torch.nn.Parameter(torch.zeros(0, 4))
        self.register_buffer("count", torch.tensor([seed, 7], dtype=torch.int64))
        self.register_buffer("scratch", torch.full((2,), float(seed)), persistent=False)


def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def same(state, module):
    live = module.state_dict()
    return state.keys() == live.keys() and all(
        state[k].dtype == live[k].dtype and torch.equal(state[k], live[k]) for k in state)


def save_at(root, step, **objects):
    """One checkpoint of `objects` at `step` in the store at `root` (keeping 3)."""
    ck = Checkpointer(to=root, keep=3, **objects)
    ck.step = step
    ck.save(wait=True)
    ck.close()
    return ck


def damage(folder, key, at=0, bits=1):
    """Flip `bits` of the byte `at` into `key`'s bytes in the pack it lies in; that byte's offset."""
    packs, _ = index_of(folder)
    _, _, _, pack, offset, _, _ = rows_by_key(folder)[key]
    pack_file = folder.parent / codec.POOL / packs[pack]
    data = bytearray(pack_file.read_bytes())
    data[offset + at] ^= bits
    pack_file.write_bytes(bytes(data))
    return offset + at


def two_checkpoints(tmp_path):
    """step-1 and step-2 of a Packed model, every parameter changed between them; step-1's state."""
    model = Packed(1)
    ck = Checkpointer(to=tmp_path, keep=3, model=model)
    ck.step = 1
    ck.save(wait=True)
    older = snapshot(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1)
    ck.step = 2
    ck.save(wait=True)
    ck.close()
    return older


@pytest.fixture
def load_state_dict_calls(monkeypatch):
    """Every nn.Module.load_state_dict call, by module class (the class attribute stays nn.Module's own)."""
    calls, original = [], torch.nn.Module.load_state_dict

    def spy(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "load_state_dict", spy)
    return calls


def test_a_plain_module_is_read_into_its_own_tensors_bit_for_bit_and_the_optimizer_by_its_own_loader(
        tmp_path, load_state_dict_calls):
    model = Packed(1)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    loss = sum(p.float().sum() for p in model.parameters()) + model.embed.weight.pow(2).sum()
    loss.backward()
    opt.step()
    ck = Checkpointer(to=tmp_path, model=model, opt=opt)
    ck.save(wait=True)
    saved, saved_opt = snapshot(model), opt.state_dict()
    saved_opt = {k: {n: t.clone() for n, t in v.items()} for k, v in saved_opt["state"].items()}
    ck.close()

    fresh = Packed(2)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=0.1)
    pointers = {k: v.data_ptr() for k, v in fresh.state_dict().items()}
    versions = {k: v._version for k, v in fresh.named_parameters()}
    restored = Checkpointer(to=tmp_path, model=fresh, opt=fresh_opt).restore()
    assert restored.notes == [] and restored.unrestored == {}
    assert same(saved, fresh) and fresh.low.weight.dtype == torch.bfloat16
    assert fresh.head.weight is fresh.embed.weight and fresh.a.data_ptr() == fresh.a.untyped_storage().data_ptr() + 12
    assert {k: v.data_ptr() for k, v in fresh.state_dict().items()} == pointers  # the module's own memory
    assert torch.equal(fresh.scratch, torch.full((2,), 2.0))  # not saved, so not touched
    assert all(p._version > versions[k] for k, p in fresh.named_parameters())  # as load_state_dict's copies leave them
    assert load_state_dict_calls == []  # the model's tensors were read in place: nothing left to copy
    state = fresh_opt.state_dict()["state"]
    assert state.keys() == saved_opt.keys() and all(
        torch.equal(state[k][n], t) for k, v in saved_opt.items() for n, t in v.items())


def test_a_module_is_read_in_place_whether_its_tensors_lie_in_the_index_in_order_or_not(
        tmp_path, load_state_dict_calls, monkeypatch):
    """A state dict saved whole lies in the index in its own order (matched by one slice); after a
    save that changed only some tensors, its rows are in two packs, out of order (matched key by
    key), and are read pack by pack in file order all the same."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(*(torch.nn.Linear(3, 3) for _ in range(30)))
    ck = Checkpointer(to=tmp_path, keep=3, model=model)
    ck.step = 1
    ck.save(wait=True)
    first = snapshot(model)
    with torch.no_grad():
        for layer in model[::2]:
            layer.weight.add_(1)
    ck.step = 2
    ck.save(wait=True)
    ck.close()
    second = snapshot(model)

    def rows(checkpoint):
        index = codec.read_index(tmp_path / checkpoint, codec.read_manifest(tmp_path / checkpoint))
        return index.rows_of([f"model.{key}" for key in first])

    assert isinstance(rows("step-1"), slice) and not isinstance(rows("step-2"), slice)
    reads, read_run = [], codec._read_run
    monkeypatch.setattr(codec, "_read_run", lambda fd, views, offset, total: (
        reads.append((os.readlink(f"/proc/self/fd/{fd}"), offset)), read_run(fd, views, offset, total))[1])
    for checkpoint, saved in (("step-1", first), ("step-2", second)):
        fresh = torch.nn.Sequential(*(torch.nn.Linear(3, 3) for _ in range(30)))
        reads.clear()
        Checkpointer(to=tmp_path, model=fresh).restore(checkpoint)
        assert same(saved, fresh), checkpoint
    assert load_state_dict_calls == []
    assert len({path for path, _ in reads}) == 2 and reads == sorted(reads)  # step-2's: pack by pack, in order


def test_a_checkpoint_whose_state_names_every_tensor_s_device_and_grad_is_read_in_place_too(
        tmp_path, load_state_dict_calls):
    """Checkpoints of this format written before state.json left out "device": "cpu" and
    "requires_grad": false say them for every tensor: read the same."""
    model = Packed(1)
    ck = Checkpointer(to=tmp_path, model=model)
    ck.save(wait=True)
    ck.close()
    (folder,) = tmp_path.glob("step-*")
    older = as_pairs((folder / codec.STATE).read_text(), {"device": "cpu", "requires_grad": False})
    assert older.count('"device": "cpu"') > 1500
    rewrite_state(folder, older)

    fresh = Packed(2)
    restored = Checkpointer(to=tmp_path, model=fresh).restore()
    assert restored.notes == [] and same(snapshot(model), fresh) and load_state_dict_calls == []


def as_pairs(text, said=None):
    """state.json with each dict of tensors written as pairs ({"__dict__": [[key, {"__tensor__":
    file key, **said}], ...]}), as format 3 wrote every one, not as its list of keys."""
    def pairs(value):
        if isinstance(value, dict) and "__tensors__" in value:
            return {"__dict__": [[k, {"__tensor__": f"{value['__tensors__']}.{k}", **(said or {})}]
                                 for k in value["keys"]]}
        if isinstance(value, dict):
            return {k: pairs(v) for k, v in value.items()}
        return [pairs(v) for v in value] if isinstance(value, list) else value

    return json.dumps(pairs(json.loads(text)))


def rewrite_state(folder, text):
    """state.json replaced, its new hash in the manifest: it verifies, whatever it says."""
    from colabkit.checkpoint import durable

    (folder / codec.STATE).write_text(text)
    manifest = json.loads((folder / codec.MANIFEST).read_text())
    record = durable.hash_file(folder / codec.STATE)
    manifest["files"][codec.STATE] = {"size": record.size, "hash": record.hash}
    (folder / codec.MANIFEST).write_text(json.dumps(manifest))


class Pair(torch.nn.Module):
    def __init__(self, first):
        super().__init__()
        for name in (first, "b" if first == "a" else "a"):  # the other order: state_dict's keys too
            self.add_module(name, torch.nn.Linear(3, 3))


def test_a_module_whose_keys_come_in_another_order_is_read_in_place_and_two_keys_of_one_file_key_are_not(
        tmp_path, load_state_dict_calls):
    torch.manual_seed(0)
    model = Pair("a")
    ck = Checkpointer(to=tmp_path, model=model)
    ck.save(wait=True)
    ck.close()
    fresh = Pair("b")
    assert list(fresh.state_dict()) != list(model.state_dict())
    Checkpointer(to=tmp_path, model=fresh).restore()
    assert same(snapshot(model), fresh) and load_state_dict_calls == []

    (folder,) = tmp_path.glob("step-*")  # both weights said to be one tensor: load_state_dict loads it twice
    rewrite_state(folder, as_pairs((folder / codec.STATE).read_text()).replace('"model.b.weight"', '"model.a.weight"'))
    fresh = Pair("a")
    Checkpointer(to=tmp_path, model=fresh).restore()
    assert torch.equal(fresh.b.weight, model.a.weight) and load_state_dict_calls == ["Pair"]


def test_a_damaged_tensor_found_after_others_went_into_the_module_falls_back_to_the_one_before_whole(
        tmp_path, load_state_dict_calls):
    older = two_checkpoints(tmp_path)
    damage(tmp_path / "step-2", "model.many.1400", at=5, bits=0x10)  # in the second read: 1,024 buffers before it

    fresh = Packed(3)
    restored = Checkpointer(to=tmp_path, model=fresh).restore()
    assert restored.checkpoint.id == "step-1" and same(older, fresh)  # the first 1,024 too, read again
    assert any("model.many.1400" in note and "read straight into model, which may already hold part of it" in note
               for note in restored.notes), restored.notes
    assert load_state_dict_calls == []

    (tmp_path / "step-1" / codec.MANIFEST).unlink()  # nothing older to fall back to: said, loudly
    with pytest.raises(ColabkitError, match=r"model\.many\.1400 .*do not match.* which may already hold part of it"):
        Checkpointer(to=tmp_path, model=Packed(3)).restore()


def test_nothing_is_read_into_a_module_after_damage_is_raised_though_the_next_run_was_being_copied(
        tmp_path, monkeypatch):
    """The copies run a run ahead of the hashing, on a thread of their own: when a run's bytes
    are found damaged, the next run's copy (slowed here) ends before the error is raised, and
    nothing more is written into the module afterwards."""
    import threading
    import time

    two_checkpoints(tmp_path)
    newest = tmp_path / "step-2"
    damaged_at = damage(newest, "model.many.10")  # early: two runs follow it
    copies, real = [], codec._read_run

    def slow_after_the_damaged_run(fd, views, offset, total):
        copies.append(offset)
        if offset > damaged_at:
            time.sleep(0.3)
        return real(fd, views, offset, total)

    def check_once_the_next_copy_started(*args):
        time.sleep(0.2)  # the copier takes up the run submitted after this one meanwhile
        return real_check(*args)

    real_check = codec._check_run
    monkeypatch.setattr(codec, "_read_run", slow_after_the_damaged_run)
    monkeypatch.setattr(codec, "_check_run", check_once_the_next_copy_started)
    fresh = Packed(3)
    plan = inplace.Plan({"model": fresh})
    manifest = codec.read_manifest(newest)
    with pytest.raises(codec.CheckpointDamaged, match=r"model\.many\.10 .*do not match"):
        codec._read_tensors(newest, manifest, True, lambda described: plan.place(
            json.loads((newest / codec.STATE).read_text())["structure"], described))
    assert not [t for t in threading.enumerate() if t.name.startswith("colabkit-restore")]
    when_raised = snapshot(fresh)
    time.sleep(0.5)
    assert same(when_raised, fresh)
    assert sum(at > damaged_at for at in copies) == 1  # the run after the damaged one, and no further
    assert torch.equal(fresh.many[1499], Packed(1).many[1499] + 1)  # in it (1,024 buffers a run at most): copied


def test_a_module_partly_read_from_a_damaged_checkpoint_that_the_older_one_does_not_hold_is_unrestored(tmp_path):
    save_at(tmp_path, 1, note={"epoch": 1})
    save_at(tmp_path, 2, model=Packed(1))
    damage(tmp_path / "step-2", "model.many.1400")

    restored = Checkpointer(to=tmp_path, model=Packed(3)).restore(namespace={})
    assert restored.checkpoint.id == "step-1"
    assert "a mix of the two" in restored.unrestored["model"] and "step-2" in restored.unrestored["model"]


def test_a_pack_cut_short_under_a_module_read_in_place_is_refused(tmp_path):
    model = Packed(1)
    ck = Checkpointer(to=tmp_path, model=model)
    ck.save(wait=True)
    ck.close()
    folder = next(tmp_path.glob("step-*"))
    (pack_file,) = (tmp_path / codec.POOL).glob("*.pack")
    manifest = codec.read_manifest(folder)
    pack_file.write_bytes(pack_file.read_bytes()[:-40])  # after the sizes were checked
    plan = inplace.Plan({"model": Packed(2)})
    with pytest.raises(codec.CheckpointDamaged, match="ends before"):
        codec._read_tensors(folder, manifest, True, lambda described: plan.place(
            json.loads((folder / codec.STATE).read_text())["structure"], described))
    assert plan.objects.keys() == {"model"}


class Net(torch.nn.Module):
    """A small CNN of plain torch layers, BatchNorm among them (its own _load_from_state_dict),
    one BatchNorm that tracks no running stats, and one whose num_batches_tracked was dropped."""

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8, track_running_stats=False),
            torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.head = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 4))


def test_a_cnn_with_batchnorm_is_read_in_place_as_load_state_dict_would_leave_it(tmp_path, load_state_dict_calls):
    model = Net(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):  # running statistics and num_batches_tracked move in training
        loss = model.head(model.features(torch.randn(4, 3, 8, 8))).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    ck = Checkpointer(to=tmp_path, model=model)
    ck.save(wait=True)
    ck.close()
    saved = snapshot(model)
    assert saved["features.1.num_batches_tracked"].item() == 3 and "features.4.running_mean" not in saved

    fresh, expected = Net(1), Net(1)
    expected.load_state_dict(saved)  # what load_state_dict leaves: values and version counters
    pointers = {k: v.data_ptr() for k, v in fresh.state_dict().items()}
    restored = Checkpointer(to=tmp_path, model=fresh).restore()
    assert restored.notes == [] and load_state_dict_calls == ["Net"]  # the expected one's, above
    assert same(saved, fresh) and {k: v.data_ptr() for k, v in fresh.state_dict().items()} == pointers
    assert {k: v._version for k, v in fresh.state_dict(keep_vars=True).items()} == \
        {k: v._version for k, v in expected.state_dict(keep_vars=True).items()}
    fresh.eval(), model.eval()
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(fresh.head(fresh.features(x)), model.head(model.features(x)))

    def dropped(seed):  # tracking running stats without num_batches_tracked
        net = Net(seed)
        net.features[1].num_batches_tracked = None
        return net

    ck = Checkpointer(to=tmp_path / "dropped", model=dropped(2))
    ck.save(wait=True)
    ck.close()
    load_state_dict_calls.clear()
    with pytest.raises(ColabkitError, match='(?s)does not fit the notebook\'s model.*Unexpected key.*"features.1.num_batches_tracked"'):
        Checkpointer(to=tmp_path / "dropped", model=dropped(3)).restore()
    assert load_state_dict_calls == ["Net"]


class Hooked(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)
        self.lin._register_load_state_dict_pre_hook(self.shift)

    @staticmethod
    def shift(state_dict, prefix, *args):
        state_dict[prefix + "bias"] = state_dict[prefix + "bias"] + 1  # what a checkpoint converter does


def test_modules_that_are_not_plain_or_do_not_match_are_loaded_by_load_state_dict_as_before(
        tmp_path, load_state_dict_calls):
    torch.manual_seed(0)
    objects = {"bn": torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.InstanceNorm1d(3, track_running_stats=True)),
               "hooked": Hooked(),  # InstanceNorm: its own loader
               "strided": torch.nn.Linear(3, 4)}
    objects["strided"].weight = torch.nn.Parameter(torch.randn(3, 4).t())  # not contiguous
    objects["bn"][1].running_mean.add_(3)
    ck = Checkpointer(to=tmp_path, **objects)
    ck.save(wait=True)
    ck.close()
    saved = {name: snapshot(module) for name, module in objects.items()}

    torch.manual_seed(1)
    fresh = {"bn": torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.InstanceNorm1d(3, track_running_stats=True)),
             "hooked": Hooked(),
             "strided": torch.nn.Linear(3, 4)}
    fresh["strided"].weight = torch.nn.Parameter(torch.randn(3, 4).t())
    Checkpointer(to=tmp_path, **fresh).restore()
    assert sorted(load_state_dict_calls) == ["Hooked", "Linear", "Sequential"]
    assert same(saved["bn"], fresh["bn"]) and same(saved["strided"], fresh["strided"])
    assert torch.equal(fresh["hooked"].lin.bias, saved["hooked"]["lin.bias"] + 1)  # through the hook

    load_state_dict_calls.clear()
    with pytest.raises(ColabkitError, match="(?s)does not fit the notebook's strided.*size mismatch"):  # and load_state_dict's words
        Checkpointer(to=tmp_path, strided=torch.nn.Linear(3, 5)).restore()
    with pytest.raises(ColabkitError, match="Missing key"):
        extra = torch.nn.Linear(3, 4)
        extra.register_buffer("more", torch.zeros(1))
        Checkpointer(to=tmp_path, strided=extra).restore()
    assert load_state_dict_calls == ["Linear", "Linear"]


class Counted(torch.nn.Module):
    """A linear layer and an int64 counter: tensors of two dtypes."""

    def __init__(self, dtype):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3).to(dtype)
        self.register_buffer("count", torch.tensor([5], dtype=torch.int64))


@pytest.mark.parametrize("make", [lambda dtype: torch.nn.Linear(3, 3).to(dtype), Counted], ids=["one dtype", "two"])
def test_a_module_whose_dtype_changed_since_the_save_is_loaded_by_load_state_dict_which_converts(
        tmp_path, load_state_dict_calls, make):
    """Saved in float16, restored into the same module in bfloat16 (the same bytes per value):
    never the saved bytes read raw into it, but load_state_dict's conversion of each value."""
    torch.manual_seed(0)
    ck = Checkpointer(to=tmp_path, model=make(torch.float16))
    ck.save(wait=True)
    ck.close()
    saved = snapshot(ck.objects["model"])
    fresh = make(torch.bfloat16)
    Checkpointer(to=tmp_path, model=fresh).restore()
    assert load_state_dict_calls == [type(fresh).__name__]
    assert all(torch.equal(fresh.state_dict()[k], v.to(fresh.state_dict()[k].dtype)) for k, v in saved.items())


def test_a_save_after_going_back_in_place_holds_the_weights_gone_back_to(tmp_path):
    """The next save sees every tensor read in place as changed (its unchanged-tensor check trusts
    no memory that was written behind it) and stores what was restored."""
    model = Packed(1)
    ck = Checkpointer(to=tmp_path, keep=5, model=model)
    ck.step = 1
    ck.save(wait=True)
    first = snapshot(model)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2)
    ck.step = 2
    ck.save(wait=True)
    ck.restore("step-1")
    assert same(first, model)
    ck.step = 3
    ck.save(wait=True)
    ck.close()
    fresh = Packed(4)
    Checkpointer(to=tmp_path, model=fresh).restore("step-3")
    assert same(first, fresh)


def test_an_older_checkpoint_that_fails_otherwise_after_a_damaged_one_was_read_in_still_says_the_mix(tmp_path):
    """step-2, damaged late, was partly read into the module; step-1, of another architecture, is
    then refused by the module's load_state_dict: the error says both."""
    save_at(tmp_path, 1, model=torch.nn.Linear(3, 4))
    save_at(tmp_path, 2, model=Packed(1))
    damage(tmp_path / "step-2", "model.many.1400")
    with pytest.raises(ColabkitError, match=r"(?s)step-1 does not fit the notebook's model.* model \(step-2\) may "
                                            "hold part of a checkpoint"):
        Checkpointer(to=tmp_path, model=Packed(3)).restore()


def test_a_disk_error_in_the_middle_of_reading_into_a_module_falls_back_and_says_so(tmp_path, monkeypatch):
    """An I/O error (EIO) after some tensors went into the module is not raised bare: the module may
    hold part of the newest checkpoint, so the one before is loaded whole, and that is said."""
    import errno
    import os

    older = two_checkpoints(tmp_path)
    reads, real_preadv = [], os.preadv

    def failing_preadv(fd, buffers, offset, flags=0):
        if flags:  # a look at the page cache (codec._cached), not a read
            return real_preadv(fd, buffers, offset, flags)
        reads.append(offset)
        if len(reads) == 2:  # the second read of step-2, after 1,024 tensors went into the module
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", failing_preadv)
    fresh = Packed(3)
    restored = Checkpointer(to=tmp_path, model=fresh).restore()
    assert restored.checkpoint.id == "step-1" and same(older, fresh)
    assert any("step-2: reading it failed" in note and "Input/output error" in note
               and "which may already hold part of it" in note for note in restored.notes), restored.notes


def test_an_optimizer_that_refuses_its_state_is_said_with_the_module_already_restored_and_not_passed_over(tmp_path):
    """The notebook's optimizer has one parameter group, the saved one two: its load_state_dict
    refuses (ValueError). That is the notebook's object, not a damaged checkpoint: no older one is
    loaded instead, and the error says the module read in place holds the checkpoint already."""
    save_at(tmp_path, 1, note={"epoch": 1})
    model = Packed(1)
    opt = torch.optim.SGD([{"params": [model.a]}, {"params": [p for p in model.parameters() if p is not model.a]}],
                          lr=0.1)
    save_at(tmp_path, 2, model=model, opt=opt)
    fresh = Packed(3)
    with pytest.raises(ColabkitError, match=r"(?s)step-2 does not fit the notebook's opt: its load_state_dict "
                                            r"refused .*parameter groups.* model had been restored from it already"):
        Checkpointer(to=tmp_path, model=fresh, opt=torch.optim.SGD(fresh.parameters(), lr=0.1)).restore()
    assert same(snapshot(model), fresh)


def test_a_state_that_fails_to_decode_after_the_module_was_read_in_place_leaves_it_said_as_a_mix(tmp_path):
    """step-2's tensors all verify and go into the module; its random states (edited, the manifest
    made to match) then fail to decode. step-1 is loaded instead, which holds no module: the
    module is said to be a mix, not left silently holding step-2."""
    save_at(tmp_path, 1, note={"epoch": 1})
    save_at(tmp_path, 2, model=Packed(1))
    document = json.loads((tmp_path / "step-2" / codec.STATE).read_text())
    document["structure"]["rng"] = {"__random__": {}}
    rewrite_state(tmp_path / "step-2", json.dumps(document))
    restored = Checkpointer(to=tmp_path, model=Packed(3)).restore(namespace={})
    assert restored.checkpoint.id == "step-1"
    assert "a mix of the two" in restored.unrestored["model"] and "step-2" in restored.unrestored["model"]


class Note:
    """A value only the pickle holds (trusted objects.pkl)."""


def test_objects_pkl_that_cannot_be_unpickled_fails_the_restore_before_the_module_changes(tmp_path, monkeypatch):
    """A fresh kernel that hasn't defined the class of a pickled value yet: unpickling fails, and
    the module has not been read into (objects.pkl is read before any tensor)."""
    model = Packed(1)
    ck = Checkpointer(to=tmp_path, model=model, note=Note())
    ck.save(wait=True)
    ck.close()
    monkeypatch.delattr(__import__(__name__), "Note")
    fresh = Packed(3)
    before = snapshot(fresh)
    with pytest.raises(AttributeError, match="Note"):
        Checkpointer(to=tmp_path, model=fresh).restore(trust=True)
    assert same(before, fresh)


def test_an_interrupt_in_the_middle_of_reading_into_a_module_says_what_it_may_hold(tmp_path, monkeypatch):
    two_checkpoints(tmp_path)
    checks, real_check = [], codec._check_run

    def interrupted_at_the_second_run(*args):
        checks.append(args[2])
        if len(checks) == 2:
            raise KeyboardInterrupt
        return real_check(*args)

    monkeypatch.setattr(codec, "_check_run", interrupted_at_the_second_run)
    with pytest.raises(KeyboardInterrupt, match=r"The restore was interrupted\. model \(step-2\) may hold part"):
        Checkpointer(to=tmp_path, model=Packed(3)).restore()


class Tied(torch.nn.Module):
    def __init__(self, tie):
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.head = torch.nn.Linear(4, 10, bias=False)
        if tie:
            self.head.weight = self.embed.weight


def test_a_module_tied_since_an_untied_save_is_loaded_as_load_state_dict_would(tmp_path, load_state_dict_calls):
    """Two keys of the live module are one Parameter, saved as two different tensors: both can't
    be read into that memory (one over the other while it is hashed); load_state_dict keeps the
    last key's. Saved tied (the same bytes twice), it is read in place."""
    torch.manual_seed(0)
    untied = Tied(False)
    ck = Checkpointer(to=tmp_path / "untied", model=untied)
    ck.save(wait=True)
    ck.close()
    expected = Tied(True)
    expected.load_state_dict(untied.state_dict())
    fresh = Tied(True)
    assert Checkpointer(to=tmp_path / "untied", model=fresh).restore().notes == []
    assert load_state_dict_calls == ["Tied", "Tied"] and torch.equal(fresh.embed.weight, expected.embed.weight)

    tied = Tied(True)
    ck = Checkpointer(to=tmp_path / "tied", model=tied)
    ck.save(wait=True)
    ck.close()
    load_state_dict_calls.clear()
    fresh = Tied(True)
    Checkpointer(to=tmp_path / "tied", model=fresh).restore()
    assert load_state_dict_calls == [] and same(snapshot(tied), fresh)


def test_a_loader_set_on_the_instance_is_called_not_passed_by(tmp_path):
    """Some libraries patch a module's _load_from_state_dict (or load_state_dict) on the instance:
    it runs, as load_state_dict would run it."""
    torch.manual_seed(0)
    ck = Checkpointer(to=tmp_path, model=torch.nn.Linear(3, 3))
    ck.save(wait=True)
    ck.close()
    saved = snapshot(ck.objects["model"])
    fresh = torch.nn.Linear(3, 3)
    own = fresh._load_from_state_dict

    def doubled(state_dict, prefix, *args):
        state_dict[prefix + "bias"] = state_dict[prefix + "bias"] * 2  # what a converter does
        return own(state_dict, prefix, *args)

    fresh._load_from_state_dict = doubled
    Checkpointer(to=tmp_path, model=fresh).restore()
    assert torch.equal(fresh.bias, saved["bias"] * 2) and torch.equal(fresh.weight, saved["weight"])


def test_two_modules_whose_edited_state_names_the_same_tensors_are_both_restored(tmp_path):
    """state.json edited (its hash in the manifest made to match) so that a's entry names b's
    tensors: each module gets them, as load_state_dict would give them, neither is skipped."""
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    ck = Checkpointer(to=tmp_path, a=a, b=b)
    ck.save(wait=True)
    ck.close()
    folder = next(tmp_path.glob("step-*"))
    document = json.loads((folder / codec.STATE).read_text())
    document["structure"]["objects"]["a"]["state"]["__tensors__"] = "b"
    rewrite_state(folder, json.dumps(document))
    fresh_a, fresh_b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    Checkpointer(to=tmp_path, a=fresh_a, b=fresh_b).restore()
    assert same(snapshot(b), fresh_a) and same(snapshot(b), fresh_b)


def test_a_torch_without_swap_module_params_restores_in_place(tmp_path, monkeypatch, load_state_dict_calls):
    """torch before 2.3 has no torch.__future__.get_swap_module_params_on_conversion (nor swaps)."""
    two_checkpoints(tmp_path)
    fresh = Packed(3)
    monkeypatch.delattr(torch.__future__, "get_swap_module_params_on_conversion")  # (torch's own _apply asks it)
    Checkpointer(to=tmp_path, model=fresh).restore()
    assert load_state_dict_calls == []


def test_a_dtype_this_torch_lacks_is_said_as_such(tmp_path, monkeypatch):
    from colabkit.checkpoint import state

    two_checkpoints(tmp_path)
    monkeypatch.setitem(state._TORCH_NAMES, "BF16", "bfloat17")  # as uint16 before torch 2.3
    with pytest.raises(ColabkitError, match=r"holds tensors of dtype bfloat17, which this torch \(.*\) lacks: "
                                            "install a newer torch"):
        Checkpointer(to=tmp_path, model=Packed(3)).restore()


FORMAT_3 = Path(__file__).parent / "fixtures" / "checkpoint-format-3" / "store"


def format_3_model():
    """The fixture's model and optimizer as its README makes them, when they were saved."""
    model = torch.nn.Sequential(*(torch.nn.Linear(3, 3) for _ in range(35)))
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.arange(p.numel(), dtype=torch.float32).reshape(p.shape) + i)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    return model, opt


@pytest.mark.parametrize("in_place", [True, False])
def test_a_checkpoint_an_earlier_colabkit_wrote_in_format_3_restores_exactly(
        tmp_path, in_place, monkeypatch, load_state_dict_calls):
    """tests/fixtures/checkpoint-format-3: tensors.json as rows, each tensor in state.json as
    {"__tensor__": key}; read into the module in place, and by load_state_dict."""
    if not in_place:
        monkeypatch.setattr(inplace, "_live_tensors", lambda module, torch: None)
    shutil.copytree(FORMAT_3, tmp_path / "store")
    saved, saved_opt = format_3_model()
    fresh = torch.nn.Sequential(*(torch.nn.Linear(3, 3) for _ in range(35)))
    opt = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    namespace = {}
    restored = Checkpointer(to=tmp_path / "store", model=fresh, optimizer=opt).restore(namespace=namespace)
    assert restored.notes == [] and load_state_dict_calls == ([] if in_place else ["Sequential"])
    assert same(saved.state_dict(), fresh)
    momenta = [s["momentum_buffer"] for s in opt.state_dict()["state"].values()]
    expected = [s["momentum_buffer"] for s in saved_opt.state_dict()["state"].values()]
    assert len(momenta) == 70 and all(map(torch.equal, momenta, expected))
    extra = namespace["extra"]
    assert extra["leaf"].requires_grad and torch.equal(extra["leaf"], torch.tensor([1.5, -2.0]))
    assert extra["array"].dtype == np.int16 and (extra["array"] == np.arange(6).reshape(2, 3)).all()
    assert extra["note"] == "format 3" and torch.equal(extra["half"], torch.arange(4, dtype=torch.bfloat16))


def test_a_named_checkpoint_damaged_here_is_restored_from_its_drive_copy(tmp_path):
    """%checkpoint restore step-N with a damaged local copy failed, while Drive's copy of the same
    checkpoint was whole; it is now restored from that copy, and the damage is said in a note.
    With both copies damaged the restore fails, saying so."""
    from colabkit.checkpoint.checkpointer import restore
    from colabkit.checkpoint.mirror import copy_checkpoint

    model = torch.nn.Linear(64, 64)
    ck = save_at(tmp_path / "local", 1, model=model)
    drive = CheckpointStore(tmp_path / "drive")
    copy_checkpoint(ck.store.root / "step-1", drive)
    damage(ck.store.root / "step-1", "model.weight")
    fresh = torch.nn.Linear(64, 64)
    restored = restore([ck.store, drive], "step-1", False, {"model": fresh})
    assert restored.checkpoint.path == drive.root / "step-1" and torch.equal(fresh.weight, model.weight)
    assert any("do not match their hash" in note and f"its copy in {drive.root} was restored" in note
               for note in restored.notes), restored.notes
    damage(drive.root / "step-1", "model.weight")
    with pytest.raises(ColabkitError, match="step-1"):
        restore([ck.store, drive], "step-1", False, {"model": torch.nn.Linear(64, 64)})
    for name in ("../drive/step-1", "pool", codec.POOL + "/../step-1"):  # only a step-N of the stores is one
        with pytest.raises(ColabkitError, match=f"There is no checkpoint {name!r} in"):
            restore([ck.store, drive], name, False, {"model": torch.nn.Linear(64, 64)})
