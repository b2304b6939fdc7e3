"""Saving and restoring real PyTorch and NumPy training state through the Checkpointer."""

import copy
import enum
import collections
import json
import random
import sys
import warnings

import numpy as np
import pytest
import torch

from colabkit.checkpoint.checkpointer import Checkpointer
from colabkit.checkpoint.schedule import parse_every
from colabkit.errors import ColabkitError, ColabkitWarning
from helpers.tensor_index import rows_by_key


def make(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    model[0].to(torch.bfloat16)  # a dtype numpy doesn't have
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2, gamma=0.5)
    return model, opt, sched


def train_step(model, opt, sched):
    x = torch.randn(16, 8)  # draws from the torch RNG, so the random streams matter
    out = model[2](model[1](model[0](x.to(torch.bfloat16)).float()))
    loss = out.pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def states_equal(a, b):
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(states_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(states_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_parse_every():
    assert parse_every("15m") == (900, None) and parse_every("500 steps") == (None, 500)
    assert parse_every(None) == (None, None)
    for bad in ("15x", "0", "0 steps"):
        with pytest.raises(ColabkitError):
            parse_every(bad)


def test_restore_in_place_is_bit_for_bit_and_the_random_streams_continue(tmp_path):
    model, opt, sched = make()
    arrays = {"ema": np.linspace(0, 1, 7), "counts": np.arange(4, dtype=np.int16)}
    ck = Checkpointer(to=tmp_path, model=model, optimizer=opt, scheduler=sched, ema=arrays["ema"],
                      counts=arrays["counts"], history=[0.5, {"best": 1.25, 3: (1, 2)}], label="run-a")
    for _ in range(3):
        train_step(model, opt, sched)
    random.seed(7)
    np.random.seed(8)
    ck.step = 3
    ck.save(wait=True)
    expected_next = (random.random(), np.random.rand(), torch.rand(3))
    saved_state = {"model": {k: v.clone() for k, v in model.state_dict().items()},
                   "opt": opt.state_dict(), "sched": sched.state_dict()}
    saved_opt = {k: {n: t.clone() if torch.is_tensor(t) else t for n, t in v.items()}
                 for k, v in opt.state_dict()["state"].items()}
    ck.close()

    model2, opt2, sched2 = make(seed=99)  # a fresh kernel: other weights, other random streams
    random.seed(1)
    np.random.seed(1)
    ck2 = Checkpointer(to=tmp_path, model=model2, optimizer=opt2, scheduler=sched2)
    namespace = {}
    restored = ck2.restore(namespace=namespace)
    assert restored.checkpoint.id == "step-3" and ck2.step == 3 and restored.notes == []
    assert states_equal(saved_state["model"], model2.state_dict())
    assert model2[0].weight.dtype == torch.bfloat16
    assert states_equal(saved_opt, opt2.state_dict()["state"])
    assert opt2.state_dict()["param_groups"][0]["lr"] == saved_state["opt"]["param_groups"][0]["lr"]
    assert sched2.state_dict() == saved_state["sched"]
    assert np.array_equal(namespace["ema"], arrays["ema"]) and namespace["counts"].dtype == np.int16
    assert namespace["history"] == [0.5, {"best": 1.25, 3: (1, 2)}] and namespace["label"] == "run-a"
    got_next = (random.random(), np.random.rand(), torch.rand(3))
    assert got_next[0] == expected_next[0] and got_next[1] == expected_next[1]
    assert torch.equal(got_next[2], expected_next[2])
    ck2.close()


def test_values_that_cant_be_saved_are_said_in_the_output_and_the_rest_is_saved(tmp_path, capsys):
    def numbers():
        yield 1

    model, opt, _ = make()
    handle = open(tmp_path / "log.txt", "w")
    ck = Checkpointer(to=tmp_path / "ck", model=model, stream=numbers(), log=handle, config={"lr": 0.1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as many Hugging Face notebooks do: the news must still show
        ck.save(wait=True)
    said = capsys.readouterr().err
    assert "colabkit: not saved: stream (generator can't be saved" in said
    assert "colabkit: not saved: log (TextIOWrapper can't be saved" in said
    handle.close()
    namespace = {}
    restored = Checkpointer(to=tmp_path / "ck", model=make(5)[0]).restore(namespace=namespace)
    assert namespace == {"config": {"lr": 0.1}} and restored.checkpoint.id == "step-0"
    assert set(restored.unrestored) == {"stream", "log"}


class Custom:
    def __init__(self, value):
        self.value = value


def test_pickled_values_load_only_when_trusted(tmp_path):
    ck = Checkpointer(to=tmp_path, thing=Custom(41))
    ck.save(wait=True)
    ck.close()
    namespace = {}
    restored = Checkpointer(to=tmp_path).restore(namespace=namespace)
    assert "thing" not in namespace and "--trust" in restored.notes[0]
    Checkpointer(to=tmp_path).restore(trust=True, namespace=namespace)
    assert namespace["thing"].value == 41



def test_numpy_values_json_cannot_hold_exactly_are_pickled_and_come_back_whole(tmp_path):
    """A masked array (its mask), np.matrix, and scalars whose .item() JSON can't hold or would
    change (complex, datetime64, bytes, a long double) are pickled; they were saved as plain data
    without the mask, or failed every save in the writer. Plain arrays and number scalars stay
    JSON and arrays."""
    values = {"masked": np.ma.array([1.0, 2.0, 3.0], mask=[False, True, False]), "matrix": np.matrix([[1, 2]]),
              "complex": np.complex128(1 + 2j), "when": np.datetime64("2024-01-01"), "raw": np.bytes_(b"x"),
              "long": np.longdouble(1) / 3, "plain": np.arange(3.0), "f32": np.float32(0.5), "flag": np.bool_(True)}
    ck = Checkpointer(to=tmp_path, **values)
    ck.save(wait=True)
    assert ck.last["ok"], ck.last
    ck.close()
    structure = json.loads(next(tmp_path.glob("step-*/state.json")).read_text())["structure"]["objects"]
    assert {name for name, entry in structure.items() if entry["kind"] == "pickled"} == \
        {"masked", "matrix", "complex", "when", "raw", "long"}
    namespace = {}
    Checkpointer(to=tmp_path).restore(trust=True, namespace=namespace)
    for name, value in values.items():
        assert type(namespace[name]) is type(value) and np.array_equal(namespace[name], value), name
    assert namespace["masked"].mask.tolist() == [False, True, False]

def test_a_state_dict_with_nowhere_to_go_is_a_note(tmp_path):
    model, _, _ = make()
    Checkpointer(to=tmp_path, model=model).save(wait=True)
    restored = Checkpointer(to=tmp_path).restore(namespace={})
    assert "no such object to load it into" in restored.notes[0]


def test_a_tensor_that_requires_grad_comes_back_requiring_it_and_the_rest_do_not(tmp_path):
    """state.json says requires_grad only for a tensor that has it (and a device only off the CPU)."""
    leaf, plain = torch.randn(3, requires_grad=True), torch.randn(2)
    Checkpointer(to=tmp_path, pair={"leaf": leaf, "plain": plain}).save(wait=True)
    namespace = {}
    Checkpointer(to=tmp_path).restore(namespace=namespace)
    restored = namespace["pair"]
    assert restored["leaf"].requires_grad and restored["leaf"].is_leaf and torch.equal(restored["leaf"], leaf)
    assert not restored["plain"].requires_grad and torch.equal(restored["plain"], plain)
    (folder,) = tmp_path.glob("step-*")
    assert '"__tensor__": "pair.plain"}' in (folder / "state.json").read_text()


def test_loop_saves_when_due_and_resumes_after_the_done_iterations(tmp_path, capsys):
    model, opt, sched = make()
    ck = Checkpointer(every="2 steps", to=tmp_path, model=model, optimizer=opt)
    seen = []
    for i in ck.loop(range(5)):
        seen.append(i)
        train_step(model, opt, sched)
        if i == 2:
            break  # the cell was interrupted during iteration 3
    ck.close()
    assert seen == [0, 1, 2]
    ck2 = Checkpointer(every="2 steps", to=tmp_path, model=make(3)[0], optimizer=make(3)[1])
    rest = list(ck2.loop(range(5)))
    ck2.close()
    assert rest == [2, 3, 4]  # step-2 covered iterations 0 and 1
    assert "resumed from step-2: 2 iteration(s) done" in capsys.readouterr().out
    assert [c.step for c in ck2.store.list()] == [5, 4, 2]


def test_a_save_due_while_one_is_writing_is_postponed_with_a_note(tmp_path):
    big = torch.zeros(64 << 20, dtype=torch.uint8)  # 64 MiB: the first write takes a while
    ck = Checkpointer(every="1 steps", to=tmp_path, big=big)
    ck.save(force=True)
    with pytest.warns(ColabkitWarning, match="postponed: the previous one is still being written"):
        assert ck._save(force=False) is False
    ck.close()
    assert [c.step for c in ck.store.list()] == [0]


def test_in_a_sagemaker_job_checkpoints_go_to_opt_ml_checkpoints_and_a_partial_upload_is_skipped(tmp_path, monkeypatch):
    base = tmp_path / "opt" / "ml"
    (base / "input" / "config").mkdir(parents=True)
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(base))
    model, opt, _ = make()
    ck = Checkpointer(every="1 steps", model=model, optimizer=opt)
    assert ck.store.root == base / "checkpoints" / "checkpoints" and ck.mirror_store is None
    for step in (1, 2):
        ck.step = step
        ck.save(wait=True)
        for p in model.parameters():
            p.data.add_(1)  # around the version counter: still a change step-2 must hold
    ck.close()
    # SageMaker syncs the folder with S3 file by file: a checkpoint can arrive with a pack missing.
    first, second = (ck.store.get(f"step-{n}").manifest["packs"] for n in (1, 2))
    (only_second,) = set(second) - set(first)
    (ck.store.root / "pool" / only_second).unlink()
    restored = Checkpointer(model=make(4)[0], optimizer=make(4)[1]).restore()
    assert restored.checkpoint.id == "step-1"
    assert any(f"step-2: pool/{only_second} is missing" in note for note in restored.notes)


def test_colliding_dotted_keys_keep_both_tensors(tmp_path):
    ck = Checkpointer(to=tmp_path, stats={"a.b": torch.ones(2), "a": {"b": torch.zeros(3)}})
    ck.save(wait=True)
    namespace = {}
    Checkpointer(to=tmp_path).restore(namespace=namespace)
    assert torch.equal(namespace["stats"]["a.b"], torch.ones(2))
    assert torch.equal(namespace["stats"]["a"]["b"], torch.zeros(3))


def test_a_dict_of_cpu_tensors_alone_is_saved_as_its_keys_and_any_other_dict_as_its_items(tmp_path):
    """state.json says a dict of CPU tensors, each under "<its key>.<key>", by its keys alone; a
    dict with anything else (a value, a tensor that requires grad or got another file key, a key
    that is not a string) says each item. Each comes back exact either way."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(*(torch.nn.Linear(2, 2) for _ in range(40)))  # above Layouts.SMALLEST
    values = {"plain": {"w": torch.randn(2), "b": torch.ones(1, dtype=torch.int64)},
              "mixed": {"w": torch.randn(2), "step": 3},
              "grad": {"w": torch.randn(2, requires_grad=True), "b": torch.randn(1)},
              "renamed": {"a.b": torch.ones(2), "a": {"b": torch.zeros(3)}},  # "renamed.a.b" taken twice
              "numbered": {1: torch.randn(2)}}
    ck = Checkpointer(to=tmp_path, model=model, **values)
    for _ in range(2):  # the second save reuses the model's encoding (state.Layouts)
        ck.save(wait=True)
        ck.step += 1
    ck.close()
    newest = max(tmp_path.glob("step-*"), key=lambda p: int(p.name[5:]))
    objects = json.loads((newest / "state.json").read_text())["structure"]["objects"]
    assert objects["model"]["state"] == {"__tensors__": "model", "keys": list(model.state_dict())}
    assert objects["plain"]["value"] == {"__tensors__": "plain", "keys": ["w", "b"]}
    assert objects["renamed"]["value"]["__dict__"][1][1] == {"__dict__": [["b", {"__tensor__": "renamed.a.b#1"}]]}
    for name in ("mixed", "grad", "renamed", "numbered"):
        assert "__dict__" in objects[name]["value"], name
    fresh = torch.nn.Sequential(*(torch.nn.Linear(2, 2) for _ in range(40)))
    namespace = {}
    Checkpointer(to=tmp_path, model=fresh).restore(namespace=namespace)
    assert states_equal(model.state_dict(), fresh.state_dict())
    assert all(states_equal(values[name], namespace[name]) for name in values), namespace
    assert namespace["grad"]["w"].requires_grad and not namespace["grad"]["b"].requires_grad


def test_saves_below_the_kept_steps_never_point_at_a_checkpoint_retention_took(tmp_path):
    """A save at a step below the kept ones is deleted by retention at once; the next save must not
    point at its tensors (the writer would have no bytes for them)."""
    model = torch.nn.Linear(8, 8)
    ck = Checkpointer(every="1 steps", to=tmp_path, keep=1, model=model)
    for step in (10, 1, 2, 3):
        ck.step = step
        ck.save(wait=True)
        assert "error" not in ck.last and ck.last["ok"] == (step == 10), ck.last  # 1-3: written, not kept (said)
        if step == 10:
            with torch.no_grad():
                model.weight.add_(1)  # from now on unlike anything a kept checkpoint holds
    ck.close()


def test_many_small_tensors_restore_exactly_each_into_its_own_memory_and_a_damaged_one_is_named(tmp_path):
    """A restore reads runs of tensors with one read each: across several runs (more tensors than
    one read may fill), odd offsets (a bool before a float), empty tensors and tensors of the same
    bytes (stored once), every tensor comes back exact and in memory of its own; a byte changed in
    a later run, or a pack cut short in the middle of one, is refused naming the tensor."""
    from colabkit.checkpoint import codec

    torch.manual_seed(0)
    saved = {}
    for i in range(2500):
        saved[f"t{i}"] = [torch.randn(3), torch.ones(3, dtype=torch.bool)[: i % 3], torch.zeros(2, 2),
                          torch.arange(i % 5, dtype=torch.int16)][i % 4]
    ck = Checkpointer(to=tmp_path, stats=saved)
    ck.save(wait=True)
    ck.close()
    namespace = {}
    Checkpointer(to=tmp_path).restore(namespace=namespace)
    restored = namespace["stats"]
    assert states_equal(restored, saved)
    restored["t2"].add_(1)  # the zeros stored once: each restored copy is its own
    assert torch.equal(restored["t6"], torch.zeros(2, 2)) and torch.equal(restored["t2"], torch.ones(2, 2))

    folder = next(tmp_path.glob("step-*"))
    _, _, _, pack, offset, size, _ = rows_by_key(folder)["stats.t2400"]
    (pack_file,) = (tmp_path / codec.POOL).glob("*.pack")
    data = bytearray(pack_file.read_bytes())
    data[offset] ^= 1
    pack_file.write_bytes(bytes(data))
    manifest = codec.read_manifest(folder)
    with pytest.raises(codec.CheckpointDamaged, match=r"stats\.t2400"):
        codec.read(folder, trust=False, document=manifest)
    data[offset] ^= 1
    pack_file.write_bytes(bytes(data[:offset + size // 2]))  # cut short after the sizes were checked
    with pytest.raises(codec.CheckpointDamaged, match=r"ends before stats\.t2400's bytes"):
        codec._read_tensors(folder, manifest, torch=True)


def test_a_model_whose_layout_changes_between_saves_is_saved_as_it_is_now(tmp_path):
    """A large state dict's encoding is reused from the last save while its layout stays: a save
    after the model's dtype, a shape or the set of its tensors changed must describe the model as
    it is then, and restore it exactly."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(*(torch.nn.Linear(4, 4) for _ in range(40)))  # 80 tensors: large enough
    ck = Checkpointer(every="1 steps", to=tmp_path, keep=5, model=model)

    def saved_and_restored():
        ck.step += 1
        ck.save(wait=True)
        assert ck.last["ok"], ck.last
        fresh = copy.deepcopy(model)
        with torch.no_grad():
            for p in fresh.parameters():
                p.zero_()
        Checkpointer(to=tmp_path, model=fresh).restore()
        assert states_equal(fresh.state_dict(), model.state_dict())

    saved_and_restored()
    with torch.no_grad():
        model[0].weight.add_(1)
    saved_and_restored()  # the same layout: reused
    model.to(torch.float64)  # every dtype changes
    saved_and_restored()
    newest = max(tmp_path.glob("step-*"), key=lambda p: int(p.name[5:]))
    keys = list(rows_by_key(newest))
    assert "model.0.weight" in keys and not any("#" in k for k in keys)  # encoded afresh under its own keys
    model[3] = torch.nn.Linear(4, 4, bias=False).to(torch.float64)  # a tensor fewer
    saved_and_restored()
    model[5].weight = torch.nn.Parameter(torch.randn(4, 4, dtype=torch.float64).t())  # same shape, strided
    saved_and_restored()
    model[7].weight = torch.nn.Parameter(torch.randn(2, 8, dtype=torch.float64))  # same bytes, another shape
    fresh_shapes = {k: v.shape for k, v in model.state_dict().items()}
    ck.step += 1
    ck.save(wait=True)
    namespace = {"model": copy.deepcopy(model)}
    Checkpointer(to=tmp_path).restore(namespace=namespace)
    assert {k: v.shape for k, v in namespace["model"].state_dict().items()} == fresh_shapes
    assert states_equal(namespace["model"].state_dict(), model.state_dict())
    ck.close()


def test_the_reused_layout_keeps_no_tensor_alive_between_saves(tmp_path):
    """A model the notebook deletes must not stay in memory because colabkit remembers its layout."""
    import gc

    from colabkit.checkpoint import state

    model = torch.nn.Sequential(*(torch.nn.Linear(4, 4) for _ in range(40)))
    layouts = state.Layouts()
    for _ in range(2):
        captured = state.capture({"model": model}, layouts=layouts)
        assert sum(s.key.startswith("model.") for s in captured.sources) == 80
        layouts.release()
    del captured
    seen, pending, tensors = set(), [layouts], []
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, torch.Tensor):
            tensors.append(item)
        elif not isinstance(item, type):
            pending.extend(gc.get_referents(item))
    assert tensors == []


def test_a_tensor_made_under_inference_mode_is_saved_at_each_save_and_restored(tmp_path):
    """A tensor made under torch.inference_mode() has no version counter to say it is unchanged
    (reading it raised from every save): each save stages it and the writer hashes it. A restore
    into a live module of such tensors, which torch won't write into, is refused and said."""
    with torch.inference_mode():
        ema = torch.randn(100)
        frozen = torch.nn.Linear(2, 2)
    ck = Checkpointer(to=tmp_path, ema=ema, frozen=frozen)
    for step in (1, 2):
        ck.step = step
        ck.save(wait=True)
        assert ck.last["ok"], ck.last
        with torch.inference_mode():
            ema.add_(1)  # between saves, where no counter sees it
    ck.step = 3
    ck.save(wait=True)
    ck.close()
    fresh = torch.nn.Linear(2, 2)
    namespace = {}
    Checkpointer(to=tmp_path, frozen=fresh).restore(namespace=namespace)
    assert torch.equal(namespace["ema"], ema) and torch.equal(fresh.weight, frozen.weight)
    with pytest.raises(ColabkitError, match="(?s)inference tensor.*frozen's tensors were made under "
                                            r"torch.inference_mode\(\).*create frozen outside inference_mode"):
        Checkpointer(to=tmp_path, frozen=frozen).restore(namespace={})


class Phase(enum.IntEnum):
    WARMUP = 0
    MAIN = 1


class Mode(str, enum.Enum):
    TRAIN = "train"


def test_subclasses_of_json_types_are_pickled_or_said_never_saved_as_their_base(tmp_path, capsys, monkeypatch):
    """An IntEnum, a str Enum or HTTPStatus, as a value or a dict key, came back as its base type
    (HTTPStatus.OK as 200), and one of the notebook's classes (__main__) lost every save: the
    writer could not unpickle the job. They are pickled now; np.float64 and np.str_ (a float and
    a str) are NumPy scalars; a class no pickle can find is named and skipped."""
    import http

    monkeypatch.setattr(sys.modules["__main__"], "Phase", Phase, raising=False)
    monkeypatch.setattr(Phase, "__module__", "__main__")  # as a notebook defines it

    def local():
        class Rate(float):
            pass
        return Rate(0.1)

    values = {"phase": Phase.MAIN, "config": {"mode": Mode.TRAIN, "status": http.HTTPStatus.OK},
              "keyed": {Phase.WARMUP: 3}, "scalars": {"x": np.float64(0.5), "s": np.str_("a")}}
    ck = Checkpointer(to=tmp_path, **values, rate={"lr": local()})
    ck.save(wait=True)
    ck.close()
    assert ck.last["ok"], ck.last
    assert "colabkit: not saved: rate (dict can't be saved (AttributeError: Can't pickle local object" \
        in capsys.readouterr().err
    structure = json.loads(next(tmp_path.glob("step-*/state.json")).read_text())["structure"]["objects"]
    assert {name: entry["kind"] for name, entry in structure.items()} == \
        {"phase": "pickled", "config": "pickled", "keyed": "pickled", "scalars": "value"}
    namespace = {}
    restored = Checkpointer(to=tmp_path).restore(namespace=namespace)
    assert set(namespace) == {"scalars"} and set(restored.unrestored) == {"phase", "config", "keyed", "rate"}
    Checkpointer(to=tmp_path).restore(trust=True, namespace=namespace)
    for name, value in values.items():
        assert namespace[name] == value, name
    assert type(namespace["phase"]) is Phase and type(next(iter(namespace["keyed"]))) is Phase
    assert [type(v) for v in namespace["config"].values()] == [Mode, http.HTTPStatus]
    assert [type(v) for v in namespace["scalars"].values()] == [np.float64, np.str_]


def test_a_model_with_a_tensor_on_the_meta_device_is_named_and_skipped_not_pickled(tmp_path, capsys):
    """A tensor on the meta device (accelerate's init_empty_weights) has no data: staging it raised
    from deep inside the save. The model is said not saved, naming the tensor, and the rest saved."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    model[1].to_empty(device="meta")
    other = torch.nn.Linear(2, 2)
    ck = Checkpointer(to=tmp_path, model=model, other=other)
    ck.save(wait=True)
    ck.close()
    assert ck.last["ok"], ck.last
    assert "colabkit: not saved: model (Sequential holds model.1.weight on the meta device, with no data to save" \
        in capsys.readouterr().err
    assert not any(tmp_path.rglob("objects.pkl"))  # pickled, it would come back as empty as it is
    fresh = torch.nn.Linear(2, 2)
    restored = Checkpointer(to=tmp_path, other=fresh).restore(namespace={})
    assert list(restored.unrestored) == ["model"] and torch.equal(fresh.weight, other.weight)


Point = collections.namedtuple("Point", "x y")


class Steps(list):
    """A list subclass, as a library's own history list would be."""


def test_container_subclasses_are_pickled_whole_never_saved_as_their_base(tmp_path):
    """A defaultdict came back a dict (its missing keys then raised KeyError), a Counter a dict,
    a namedtuple a tuple (point.x an AttributeError), a list subclass a list: they are pickled
    whole now (restored with trust, said otherwise). An OrderedDict, what state_dict() returns,
    comes back a dict in the same order, saved as JSON as before."""
    values = {"seen": collections.defaultdict(int, {"a": 2}), "counts": collections.Counter("abca"),
              "point": Point(1, 2), "steps": Steps([1, 2]), "ordered": collections.OrderedDict(b=1, a=2)}
    ck = Checkpointer(to=tmp_path, **values)
    ck.save(wait=True)
    ck.close()
    structure = json.loads(next(tmp_path.glob("step-*/state.json")).read_text())["structure"]["objects"]
    assert {name: entry["kind"] for name, entry in structure.items()} == \
        {"seen": "pickled", "counts": "pickled", "point": "pickled", "steps": "pickled", "ordered": "value"}
    namespace = {}
    Checkpointer(to=tmp_path).restore(trust=True, namespace=namespace)
    for name, value in values.items():
        assert namespace[name] == value and (type(namespace[name]) is type(value) or name == "ordered"), name
    assert list(namespace["ordered"]) == ["b", "a"] and namespace["seen"]["new"] == 0 and namespace["point"].y == 2


class Curriculum:
    """A notebook's own stateful object whose state dict holds an IntEnum (no JSON for it)."""

    def __init__(self):
        self.phase, self.seen = Phase.WARMUP, 0

    def state_dict(self):
        return {"phase": self.phase, "seen": self.seen}

    def load_state_dict(self, state):
        self.phase, self.seen = state["phase"], state["seen"]


def test_an_object_whose_state_dict_needs_pickling_is_restored_in_place_not_rebound(tmp_path, capsys):
    """A model holding a sparse buffer, or an object whose state dict holds an IntEnum, was pickled
    whole and, with trust, bound in place of the notebook's object: the optimizer kept training
    the old model's parameters while the notebook used the new one, unsaid. Their state dicts
    are pickled now (said at the save), and loaded into the live objects."""
    model = torch.nn.Linear(3, 3)
    model.register_buffer("mask", torch.eye(3).to_sparse())
    curriculum = Curriculum()
    curriculum.phase, curriculum.seen = Phase.MAIN, 7
    ck = Checkpointer(to=tmp_path, model=model, curriculum=curriculum)
    ck.save(wait=True)
    ck.close()
    said = capsys.readouterr().err
    assert "model's state dict holds a sparse or quantized tensor, which colabkit saves only by pickling it" in said
    assert "curriculum's state dict holds a value of type Phase" in said
    fresh, fresh_curriculum = torch.nn.Linear(3, 3), Curriculum()
    fresh.register_buffer("mask", torch.zeros(3, 3).to_sparse())
    untrusted = Checkpointer(to=tmp_path, model=fresh, curriculum=fresh_curriculum).restore()
    assert set(untrusted.unrestored) == {"model", "curriculum"} and fresh_curriculum.seen == 0
    namespace = {}
    restored = Checkpointer(to=tmp_path, model=fresh, curriculum=fresh_curriculum).restore(trust=True,
                                                                                           namespace=namespace)
    assert not restored.unrestored and not namespace  # loaded into them, nothing bound in their place
    assert torch.equal(fresh.weight, model.weight) and torch.equal(fresh.mask.to_dense(), torch.eye(3))
    assert (fresh_curriculum.phase, fresh_curriculum.seen) == (Phase.MAIN, 7)
