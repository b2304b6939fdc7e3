"""What a resume may and may not do, in a real IPython shell: steps are optimizer steps, a save
comes where every object agrees on the step, nothing is skipped that was not restored, an
interruption offers the choice, and what matters is said where no warning filter hides it."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from colabkit.checkpoint import session
from colabkit.checkpoint.checkpointer import Checkpointer
from colabkit.errors import ColabkitError
from conftest import run

SETUP = ("import torch, colabkit\n"
         "torch.manual_seed(0)\n"
         "model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1))\n"
         "opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)\n"
         "sched = torch.optim.lr_scheduler.StepLR(opt, 3, gamma=0.5)\n"
         "def step():\n"
         "    opt.zero_grad(); model(torch.randn(5, 4)).pow(2).mean().backward(); opt.step(); sched.step()")


def snapshot(shell):
    return run(shell, "({k: v.clone() for k, v in model.state_dict().items()}, opt.state_dict(), sched.state_dict(), "
                      "torch.rand(3))")[0].result


def same(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def test_in_a_long_cell_a_step_save_waits_for_the_next_pre_hook_so_the_scheduler_agrees(shell, tmp_path):
    run(shell, SETUP)
    run(shell, "for _ in range(12):\n    step()")
    want = snapshot(shell)
    run(shell, SETUP)
    run(shell, f"%checkpoint every 5 steps model opt sched --to {tmp_path}")
    run(shell, "for _ in range(12):\n    step()\n    colabkit.checkpoint.session.active().wait()")
    assert [c.step for c in session.active().store.list()] == [10, 5]
    run(shell, "%checkpoint off")
    run(shell, SETUP + "\ntorch.manual_seed(99)")  # a fresh kernel: other weights, another random stream
    run(shell, f"%checkpoint every 5 steps model opt sched --to {tmp_path}")
    _, out = run(shell, "%checkpoint restore step-10")
    assert "restored step-10" in out.stdout
    assert run(shell, "sched.last_epoch, opt.param_groups[0]['lr'] == sched.get_last_lr()[0]")[0].result == (10, True)
    run(shell, "for _ in range(2):\n    step()")
    assert same(want, snapshot(shell))  # was: the scheduler one step behind, the weights off after resuming


def test_two_optimizers_stepping_once_an_iteration_count_one_step(shell, tmp_path):
    run(shell, SETUP + "\ncritic = torch.nn.Linear(4, 1)\ncritic_opt = torch.optim.SGD(critic.parameters(), lr=0.1)")
    run(shell, f"%checkpoint every 3 steps model opt critic critic_opt --to {tmp_path}")
    run(shell, "for _ in range(7):\n"
               "    critic_opt.zero_grad(); critic(torch.randn(2, 4)).sum().backward(); critic_opt.step()\n"
               "    step()\n"
               "    colabkit.checkpoint.session.active().wait()")
    assert [c.step for c in session.active().store.list()] == [6, 3]


class Custom:
    def __init__(self, value):
        self.value = value


def test_resumable_does_not_skip_iterations_whose_objects_it_could_not_restore(tmp_path):
    model = torch.nn.Linear(2, 1)
    first = Checkpointer(every="1 steps", to=tmp_path, model=model, notes=Custom(1))
    for _ in first.loop(range(3)):
        pass
    first.close()
    fresh = Checkpointer(every="1 steps", to=tmp_path, model=torch.nn.Linear(2, 1), notes=Custom(0))
    with pytest.raises(ColabkitError) as refused:
        next(iter(fresh.loop(range(5))))
    message = str(refused.value)
    assert message.startswith("resumable() did not resume from step-3: notes was not restored")
    assert "objects.pkl" in message and "--trust" in message and "leave notes out of %checkpoint" in message
    fresh.close()
    trusting = Checkpointer(every="1 steps", to=tmp_path, model=torch.nn.Linear(2, 1), notes=Custom(0), trust=True)
    assert list(trusting.loop(range(5))) == [3, 4] and trusting.objects["notes"].value == 1
    trusting.close()



def test_resumable_does_not_skip_iterations_for_an_object_tracked_since_the_checkpoint(tmp_path):
    """The optimizer was left out of %checkpoint at first and added in the next session: the
    checkpoint can't restore it, so its iterations are not skipped as if it could (they were,
    with a fresh optimizer and nothing said)."""
    model = torch.nn.Linear(2, 1)
    first = Checkpointer(every="1 steps", to=tmp_path, model=model)
    for _ in first.loop(range(3)):
        pass
    first.close()
    model = torch.nn.Linear(2, 1)
    fresh = Checkpointer(every="1 steps", to=tmp_path, model=model, opt=torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ColabkitError, match=r"resumable\(\) did not resume from step-3: opt was not restored, "
                                            r"because step-3 does not hold it \(tracked since that save\?\)"):
        next(iter(fresh.loop(range(5))))
    fresh.close()

def test_keep_goes_on_from_the_live_state_after_an_interruption(shell, tmp_path):
    run(shell, SETUP + "\ndone, starts = False, []")
    run(shell, f"%checkpoint every 2 steps model opt sched --to {tmp_path}")
    loop = ("for i in colabkit.resumable(range(6)):\n"
            "    starts.append((i, model[0].weight.detach().clone()))\n"
            "    step(); colabkit.checkpoint.session.active().wait()\n"
            "    if i == 3 and not done: done = True; raise KeyboardInterrupt")
    result, _ = run(shell, loop)
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    run(shell, "live = model[0].weight.detach().clone()")
    result, _ = run(shell, loop)
    assert "resumable(), in iteration 4 of 6 was interrupted at step 4" in str(result.error_in_exec)
    assert "%checkpoint restore goes back to step-2" in str(result.error_in_exec)
    _, out = run(shell, "%checkpoint keep")
    assert "keeping the live state" in out.stdout
    result, out = run(shell, loop)
    assert result.error_in_exec is None
    assert "going on from the live state, as %checkpoint keep said: iteration 4 starts again" in out.stderr
    assert run(shell, "[i for i, _ in starts[4:]], torch.equal(starts[4][1], live)")[0].result == ([3, 4, 5], True)


def test_a_due_save_in_an_iteration_waits_for_its_end_when_its_loader_has_no_name(shell, tmp_path):
    run(shell, SETUP + "\ndata = torch.utils.data.TensorDataset(torch.randn(32, 4))")
    run(shell, f"%checkpoint every 3 steps model opt sched --to {tmp_path}")
    _, out = run(shell, "for epoch in colabkit.resumable(range(2)):\n"
                        "    for (x,) in torch.utils.data.DataLoader(data, batch_size=8, shuffle=True):\n"
                        "        opt.zero_grad(); model(x).sum().backward(); opt.step()\n"
                        "        colabkit.checkpoint.session.active().wait()")
    assert out.stderr.count("in the middle of iteration 1; colabkit finds an iteration's place in its data again "
                            "only through a DataLoader the notebook keeps in a variable") == 1
    assert [c.step for c in session.active().store.list()] == [8, 4]  # iteration ends only (4 steps each)


def test_what_matters_shows_in_the_output_under_an_ignore_all_warnings_filter(shell, tmp_path):
    run(shell, SETUP + "\nimport warnings\nwarnings.filterwarnings('ignore')\nstream = (i for i in range(3))")
    run(shell, f"%checkpoint every 1 steps model stream --to {tmp_path}")
    _, out = run(shell, "step()\nstep()\ncolabkit.checkpoint.session.active().wait()")
    assert "colabkit: not saved: stream (generator can't be saved" in out.stderr


def test_jax_trees_round_trip_typed_keys_and_bfloat16_and_refuse_a_changed_tree(tmp_path):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    tree = {"w": jnp.arange(6, dtype=jnp.bfloat16).reshape(2, 3), "key": jax.random.key(3),
            "legacy": jax.random.PRNGKey(4), "count": 7, "m": (jnp.ones(2), np.float32(2.5))}
    saver = Checkpointer(to=tmp_path, tree=tree)
    saver.save(wait=True)
    saver.close()
    live = {"w": jnp.zeros((2, 3), jnp.bfloat16), "key": jax.random.key(0), "legacy": jax.random.PRNGKey(0),
            "count": 0, "m": (jnp.zeros(2), np.float32(0))}
    loader = Checkpointer(to=tmp_path, tree=live)
    restored = loader.restore()
    back = loader.objects["tree"]
    assert restored.unrestored == {} and back["count"] == 7 and back["w"].dtype == jnp.bfloat16
    assert jnp.array_equal(back["w"], tree["w"]) and jnp.array_equal(back["legacy"], tree["legacy"])
    assert jnp.array_equal(jax.random.key_data(back["key"]), jax.random.key_data(tree["key"]))
    assert type(back["m"]) is tuple and back["m"][1] == np.float32(2.5)
    changed = Checkpointer(to=tmp_path, tree={**live, "w": jnp.zeros((3, 3), jnp.bfloat16)})
    problem = changed.restore().unrestored["tree"]
    assert "['w'] is bfloat16[2, 3] in the checkpoint but bfloat16[3, 3] here" in problem
    for checkpointer in (loader, changed):
        checkpointer.close()


def test_a_sklearn_estimator_with_an_object_it_cant_save_without_pickle_is_named(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from sklearn.neural_network import MLPClassifier

    mlp = MLPClassifier(hidden_layer_sizes=(4,), random_state=0)
    mlp.partial_fit(np.random.RandomState(0).randn(8, 3), [0, 1] * 4, classes=[0, 1])
    checkpointer = Checkpointer(to=tmp_path, mlp=mlp)
    checkpointer.save(wait=True)
    checkpointer.close()
    assert "not saved: mlp (MLPClassifier: its fitted attribute _optimizer is a AdamOptimizer" in capsys.readouterr().err
    assert not any(tmp_path.rglob("objects.pkl"))


def test_a_framework_imported_after_checkpoint_in_the_training_cell_is_hooked_and_off_unhooks(tmp_path):
    """In a fresh interpreter: transformers is imported after %checkpoint, in the cell that would train."""
    code = (
        "import torch\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\n"
        "ip.run_line_magic('load_ext', 'colabkit')\n"
        "ip.run_cell('import torch; model = torch.nn.Linear(2, 1)')\n"
        f"ip.run_line_magic('checkpoint', 'every 5 steps model --to {tmp_path}')\n"
        "ip.run_cell('from transformers import Trainer; hooked = Trainer.train.__qualname__')\n"
        "ip.run_line_magic('checkpoint', 'off')\n"
        "print(ip.user_ns['hooked'], '|', ip.user_ns['Trainer'].train.__qualname__, '|',\n"
        "      torch.utils.data.DataLoader.__iter__.__qualname__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    hooked, after, loader = done.stdout.strip().splitlines()[-1].split(" | ")
    assert hooked == "patch.<locals>.make.<locals>.train", done.stderr[-2000:]
    assert after == "Trainer.train" and loader == "DataLoader.__iter__"


def test_torch_imported_after_checkpoint_imports_whole_and_its_dataloader_is_hooked(tmp_path):
    """A NumPy notebook's %checkpoint, then torch's first import (a job restoring torch's random
    state does this): torch.utils.data imports its dataloader midway, so a hook that fired on the
    submodule would import the half-made package (seen: "cannot import name 'DataLoader' from
    partially initialized module")."""
    code = (
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\n"
        "ip.run_line_magic('load_ext', 'colabkit')\n"
        "ip.run_cell('import numpy as np; w = np.zeros(2)')\n"
        f"ip.run_line_magic('checkpoint', 'every 5 steps w --to {tmp_path}')\n"
        "result = ip.run_cell('import torch')\n"
        "print(result.success, '|', torch.utils.data.DataLoader.__iter__.__qualname__)\n"
    ).replace("torch.utils", "ip.user_ns['torch'].utils")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "True | patch.<locals>.make.<locals>.__iter__", done.stderr[-2000:]


@pytest.mark.parametrize("order", ["shuffle=True, generator=torch.Generator().manual_seed(5)",
                                   "sampler=torch.utils.data.RandomSampler(range(16), "
                                   "generator=torch.Generator().manual_seed(5))"])
def test_a_dataloaders_own_generator_is_saved_at_an_iteration_end_and_restored(shell, tmp_path, order):
    """Its own generator=, or its sampler's (which was not saved: the resumed epoch repeated the
    first epoch's order)."""
    construct = f"torch.utils.data.DataLoader(list(range(16)), batch_size=4, {order})"
    reference = eval(construct)
    want = [[batch.tolist() for batch in reference] for _ in range(3)]
    make = f"loader = {construct}\norders = []"
    loop = "for epoch in colabkit.resumable(range(EPOCHS)):\n    orders.append([b.tolist() for b in loader])"
    run(shell, f"import torch, colabkit\nmodel = torch.nn.Linear(1, 1)\n{make}")
    run(shell, f"%checkpoint every 1 steps model --to {tmp_path}")
    run(shell, loop.replace("EPOCHS", "1"))  # the runtime dies after epoch 0
    run(shell, "%checkpoint off")
    run(shell, make)  # a fresh runtime: the generator seeded again, at epoch 0's state
    run(shell, f"%checkpoint every 1 steps model --to {tmp_path}")
    run(shell, loop.replace("EPOCHS", "3"))
    assert run(shell, "orders")[0].result == want[1:]  # was: epoch 0's order again


def test_an_adapter_that_breaks_on_a_new_framework_version_is_named_and_training_goes_on(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sklearn")
    from sklearn.linear_model import SGDClassifier

    from colabkit.checkpoint.adapters import sklearn_estimators

    def changed(*args):
        raise AttributeError("'SGDClassifier' object has no attribute 't_'")

    monkeypatch.setattr(sklearn_estimators, "capture", changed)
    checkpointer = Checkpointer(every="1 steps", to=tmp_path, clf=SGDClassifier(), w=np.zeros(2))
    assert list(checkpointer.loop(range(2))) == [0, 1]
    checkpointer.close()
    said = capsys.readouterr().err
    assert "not saved: clf (SGDClassifier: colabkit's sklearn adapter failed on this version of it: AttributeError" in said
    fresh = Checkpointer(every="1 steps", to=tmp_path, clf=SGDClassifier(), w=np.zeros(2))
    with pytest.raises(ColabkitError, match="clf was not restored, because it could not be saved"):
        next(iter(fresh.loop(range(3))))
    fresh.close()


def test_a_finished_trainer_run_is_not_trained_again_in_a_fresh_session_and_trains_on_in_its_own(tmp_path, capsys):
    pytest.importorskip("transformers")
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

    class Steps(TrainerCallback):
        def __init__(self):
            self.count = 0

        def on_step_end(self, args, state, control, **kwargs):
            self.count += 1

    def trainer(model, steps, max_steps=6):
        data = [{"input_ids": torch.randint(0, 50, (8,)), "labels": torch.tensor(i % 2)} for i in range(16)]  # 4 steps an epoch
        args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=max_steps, per_device_train_batch_size=4,
                                 save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True)
        return Trainer(model=model, args=args, train_dataset=data, callbacks=[steps])

    def model():
        torch.manual_seed(0)
        return BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                        num_attention_heads=2, intermediate_size=32,
                                                        max_position_embeddings=16))

    first, steps = model(), Steps()
    session.activate(Checkpointer(every="2 steps", to=tmp_path / "store", model=first))
    trainer(first, steps).train()
    trained = {k: v.clone() for k, v in first.state_dict().items()}
    again = Steps()
    trainer(first, again).train()  # the same session: trains on, as the Trainer does, saving none of it
    said = capsys.readouterr().err
    assert again.count == 6 and "Trainer.train() runs again on the live model, as it does by default" in said
    assert "nothing of this run is saved there: give it a folder of its own" in said
    session.deactivate()

    fresh, steps = model(), Steps()  # a fresh session: the checkpoint covers the whole run
    session.activate(Checkpointer(every="2 steps", to=tmp_path / "store", model=fresh))
    output = trainer(fresh, steps).train()
    session.deactivate()
    assert steps.count == 0 and output.global_step == 6  # was: one step more (resumed mid-epoch at max_steps)
    assert "step-6 covers the whole run (6 of 6 steps), so there is nothing left to train" in capsys.readouterr().err
    assert all(torch.equal(trained[k], v) for k, v in fresh.state_dict().items())

    longer, steps = model(), Steps()  # a fresh session asking for more steps: the rest is trained
    session.activate(Checkpointer(every="2 steps", to=tmp_path / "store", model=longer))
    output = trainer(longer, steps, max_steps=10).train()
    session.deactivate()
    assert steps.count == 4 and output.global_step == 10  # was: none ("covers the whole run")
    assert "Trainer.train() resumes from step-6 (global step 6)" in capsys.readouterr().out


def test_a_restore_through_the_python_api_says_what_it_did_not_restore(tmp_path, capsys):
    """ck.restore() returned quietly with an object left unrestored (an untrusted pickle): only
    %checkpoint restore printed the notes. It says them, as the magic does."""
    from colabkit.checkpoint.checkpointer import Checkpointer

    ck = Checkpointer(to=tmp_path, odd={1, 2}, w=np.zeros(2))
    ck.save(wait=True)
    ck.close()
    capsys.readouterr()
    restored = Checkpointer(to=tmp_path, odd=None, w=None).restore()
    out = capsys.readouterr().out
    assert "odd" in restored.unrestored
    assert out.startswith("colabkit: restored step-0 (step 0)") and "note: odd was not restored: it (set) is in " \
        "objects.pkl, which is only loaded when you trust it" in out, out


def test_resuming_into_an_iterable_whose_place_cant_be_found_says_its_items_are_drawn_again(tmp_path, capsys):
    """resumable(tqdm(train_loader)), resumable(enumerate(loader)) or a generator: the items a
    checkpoint covers were drawn again to be skipped, a shuffle drawn anew, and only "continuing
    at 3" said. A sequence (a range, a list) is the same again, and says nothing more."""
    from colabkit.checkpoint.checkpointer import Checkpointer

    ck = Checkpointer(every="1 steps", to=tmp_path, w=np.zeros(2))
    assert list(ck.loop([10, 20])) == [10, 20]
    ck.close()
    capsys.readouterr()
    again = Checkpointer(every="1 steps", to=tmp_path, w=np.zeros(2))
    assert list(again.loop(x for x in (10, 20, 30))) == [30]
    again.close()
    said = capsys.readouterr().err
    assert "resuming 2 items into this loop's generator, which colabkit can't find its place in again" in said
    listed = Checkpointer(every="1 steps", to=tmp_path, w=np.zeros(2))
    assert list(listed.loop([10, 20, 30, 40])) == [40]
    listed.close()
    assert "find its place" not in capsys.readouterr().err


def test_steps_go_on_counting_when_the_optimizer_is_made_anew(tmp_path):
    """A new optimizer each fold (or after unfreezing layers): the step counted as the most steps
    of one optimizer stopped at the first one's count, and no checkpoint was taken after the first
    fold, unsaid. A GAN's two optimizers still count one step per round."""
    from colabkit.checkpoint.checkpointer import Checkpointer
    from colabkit.checkpoint.store import CheckpointStore

    model = torch.nn.Linear(2, 1)
    ck = Checkpointer(every="4 steps", to=tmp_path, model=model)
    folds = []  # each fold's optimizer kept, as a notebook's variables may keep them
    for fold in range(3):
        folds.append(torch.optim.SGD(model.parameters(), lr=0.01))
        for _ in range(4):
            ck.before_optimizer_step(folds[-1])
            ck.after_optimizer_step(folds[-1])
            ck.wait()  # each save written before the next step (a real step takes longer than a commit here)
    assert ck.step == 4 + 3 + 3  # a new optimizer's first step is taken as joining the last one's step
    generator, critic = torch.optim.SGD(model.parameters(), lr=0.01), torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(4):
        for optimizer in (generator, critic):
            ck.before_optimizer_step(optimizer)
            ck.after_optimizer_step(optimizer)
            ck.wait()
    ck.close()
    assert ck.step == 10 + 3  # one step a round of the two
    assert [c.step for c in CheckpointStore(tmp_path).list()][:2] == [12, 8]  # was: step-4 alone
