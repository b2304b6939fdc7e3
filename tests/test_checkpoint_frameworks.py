"""The training APIs people run in notebooks, killed with SIGKILL mid-training (mid-epoch) and run
again in a fresh kernel with no change to the notebook: every leaf ends as in an uninterrupted
run, bit for bit. Tiny models built from configs; nothing is downloaded.

Each notebook writes one progress line per optimizer step and, from step 9 on, sleeps a little in
the run that is killed, so the kill lands at step 12 or 13: after step-10 (mid-epoch) is committed.
"""

import numpy as np
import pytest
import torch

from helpers.kernels import execute, lines, output

pytestmark = pytest.mark.kernel


def kill_and_resume(tmp_path, notebook, kill_after=12):
    """Run `notebook` uninterrupted, then killed mid-training and again in a fresh kernel. Returns the
    two runs' final files, the resumed notebook, and the steps the killed and the resumed run did."""
    runs = {}
    for name in ("reference", "resumed"):
        folder = tmp_path / name
        folder.mkdir()
        runs[name] = {"store": folder / "store", "progress": folder / "progress", "final": folder / "final"}
    reference, resumed = runs["reference"], runs["resumed"]
    execute(notebook(**reference, slow=0.0), tmp_path / "reference")
    execute(notebook(**resumed, slow=0.3), tmp_path / "resumed", kill_after, resumed["progress"])
    killed_steps = lines(resumed["progress"])
    assert len(killed_steps) >= kill_after and not resumed["final"].exists()
    nb = execute(notebook(**resumed, slow=0.0), tmp_path / "resumed")
    return reference["final"], resumed["final"], nb, killed_steps, lines(resumed["progress"])[len(killed_steps):]


def assert_identical(want, got, where="final"):
    """Every tensor bit for bit (same dtype), every number equal, the same keys."""
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor) and want.dtype == got.dtype and torch.equal(want, got), where
    elif isinstance(want, dict):
        assert want.keys() == got.keys(), where
        for key in want:
            assert_identical(want[key], got[key], f"{where}.{key}")
    elif isinstance(want, (list, tuple)):
        assert len(want) == len(got), where
        for i, (a, b) in enumerate(zip(want, got)):
            assert_identical(a, b, f"{where}[{i}]")
    else:
        assert want == got, (where, want, got)


def progress_every_step(progress, slow, step):
    return f"open({str(progress)!r}, 'a').write(f'{{{step}}}\\n')\nif {step} >= 9: time.sleep({slow})"


def trainer_notebook(store, progress, final, slow):
    return [
        "%load_ext colabkit",
        "import time, warnings, torch\n"
        "warnings.filterwarnings('ignore')  # as many Hugging Face notebooks do: what matters must still show\n"
        "from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments, TrainerCallback\n"
        "torch.manual_seed(0)\n"
        "config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,\n"
        "                    intermediate_size=64, max_position_embeddings=32, num_labels=2)\n"
        "model = BertForSequenceClassification(config)  # dropout 0.1: the random stream matters\n"
        "g = torch.Generator().manual_seed(1)\n"
        "ids, labels = torch.randint(0, 100, (64, 16), generator=g), torch.randint(0, 2, (64,), generator=g)\n"
        "data = [{'input_ids': ids[i], 'labels': labels[i]} for i in range(64)]  # 8 steps an epoch\n"
        "class Progress(TrainerCallback):\n"
        "    def on_step_end(self, args, state, control, **kwargs):\n"
        + "\n".join("        " + line for line in progress_every_step(progress, slow, "state.global_step").splitlines())
        + "\nargs = TrainingArguments(output_dir='out', max_steps=20, per_device_train_batch_size=8, learning_rate=1e-3,\n"
        "                         lr_scheduler_type='linear', warmup_steps=5, save_strategy='no', report_to='none',\n"
        "                         use_cpu=True, disable_tqdm=True, logging_steps=100, seed=0)\n"
        "trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[Progress()])",
        f"%checkpoint every 5 steps model --to {store}\ntrainer.train()",  # the README's one cell
        "torch.save({'model': model.state_dict(), 'optimizer': trainer.optimizer.state_dict(),\n"
        "            'scheduler': trainer.lr_scheduler.state_dict(), 'step': trainer.state.global_step,\n"
        f"            'next': torch.rand(4)}}, {str(final)!r})",
    ]


def test_hugging_face_trainer_resumes_mid_epoch_through_its_own_resume(tmp_path):
    want, got, nb, killed, resumed = kill_and_resume(tmp_path, trainer_notebook)
    assert "colabkit: Trainer.train() resumes from step-10 (global step 10)" in output(nb, 2)
    assert resumed == list(range(11, 21))  # no step trained twice, none left out (was: 34 steps from step 1)
    assert_identical(torch.load(want, weights_only=True), torch.load(got, weights_only=True))


def lightning_notebook(store, progress, final, slow):
    return [
        "%load_ext colabkit",
        "import time, warnings, torch\n"
        "import lightning as L\n"
        "warnings.filterwarnings('ignore')\n"
        "L.seed_everything(0, verbose=False)\n"
        "class Regressor(L.LightningModule):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2),\n"
        "                                       torch.nn.Linear(16, 1))\n"
        "    def training_step(self, batch, index):\n"
        "        x, y = batch\n"
        "        return torch.nn.functional.mse_loss(self.net(x), y)\n"
        "    def configure_optimizers(self):\n"
        "        opt = torch.optim.AdamW(self.parameters(), lr=1e-2)\n"
        "        warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 5))\n"
        "        return {'optimizer': opt, 'lr_scheduler': {'scheduler': warmup, 'interval': 'step'}}\n"
        "g = torch.Generator().manual_seed(1)\n"
        "data = torch.utils.data.TensorDataset(torch.randn(64, 8, generator=g), torch.randn(64, 1, generator=g))\n"
        "train_loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=True)  # plain: no position of its own\n"
        "model = Regressor()\n"
        "class Progress(L.Callback):\n"
        "    def on_train_batch_end(self, trainer, *args):\n"
        + "\n".join("        " + line for line in progress_every_step(progress, slow, "trainer.global_step").splitlines())
        + "\ntrainer = L.Trainer(max_steps=20, logger=False, enable_checkpointing=False, enable_progress_bar=False,\n"
        "                    enable_model_summary=False, accelerator='cpu', devices=1, callbacks=[Progress()])",
        f"%checkpoint every 5 steps model --to {store}",
        "trainer.fit(model, train_loader)",
        "torch.save({'model': model.state_dict(), 'optimizer': trainer.optimizers[0].state_dict(),\n"
        "            'scheduler': trainer.lr_scheduler_configs[0].scheduler.state_dict(), 'step': trainer.global_step,\n"
        f"            'next': torch.rand(4)}}, {str(final)!r})",
    ]


def test_lightning_fit_resumes_mid_epoch_with_the_same_shuffle_and_random_stream(tmp_path):
    want, got, nb, killed, resumed = kill_and_resume(tmp_path, lightning_notebook)
    assert "colabkit: Trainer.fit() resumes from step-10 (global step 10)" in output(nb, 3)
    assert resumed == list(range(11, 21))  # was: 68 steps instead of 48, weights only
    assert_identical(torch.load(want, weights_only=True), torch.load(got, weights_only=True))


def keras_notebook(store, progress, final, slow):
    return [
        "%load_ext colabkit",
        "import os, time\n"
        "os.environ['KERAS_BACKEND'] = 'torch'\n"
        "import numpy as np, keras, torch\n"
        "keras.utils.set_random_seed(0)\n"
        "data = np.random.RandomState(1)\n"
        "x, y = data.rand(64, 8).astype('float32'), data.rand(64, 1).astype('float32')  # 8 steps an epoch\n"
        "model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation='relu'),\n"
        "                          keras.layers.Dropout(0.2), keras.layers.Dense(16, activation='relu'),\n"
        "                          keras.layers.Dropout(0.2, seed=7), keras.layers.Dense(1)])\n"
        "schedule = keras.optimizers.schedules.CosineDecay(1e-3, 30, warmup_target=1e-2, warmup_steps=5)\n"
        "model.compile(optimizer=keras.optimizers.Adam(schedule), loss='mse')\n"
        "class Progress(keras.callbacks.Callback):\n"
        "    def on_train_batch_end(self, batch, logs=None):\n"
        "        step = int(self.model.optimizer.iterations)\n"
        + "\n".join("        " + line for line in progress_every_step(progress, slow, "step").splitlines()),
        f"%checkpoint every 5 steps model --to {store}",
        "history = model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[Progress()])",
        "np.savez(" + repr(str(final) + ".npz") + ", next=torch.rand(4).numpy(), losses=np.array(history.history['loss']),\n"
        "         **{'model/' + v.path: v.numpy() for v in model.variables},\n"
        "         **{'optimizer/' + v.path: v.numpy() for v in model.optimizer.variables})",
        "model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # more training, in the same session\n"
        "print('iterations', int(model.optimizer.iterations))",
    ]


def test_keras_fit_saves_during_fit_and_resumes_mid_epoch_exactly(tmp_path):
    want, got, nb, killed, resumed = kill_and_resume(tmp_path, keras_notebook)
    assert "colabkit: model.fit() resumes from step-10 (epoch 2, 2 batch(es) into it)" in output(nb, 3)
    again = output(nb, 5)  # a later fit() in the same session trains on, as Keras does, and is not saved
    assert "iterations 32" in again and "model.fit() runs again on the live model, as it does by default" in again
    assert "nothing of this run is saved there" in again
    # was: nothing saved during fit, and nothing said. The 2 batches step-10 had trained in epoch 2 go by
    # untrained (callbacks see them with empty logs: the optimizer stays at step 10), then steps 11 to 24.
    assert resumed == [10, 10] + list(range(11, 25))
    want, got = np.load(f"{want}.npz"), np.load(f"{got}.npz")
    assert want["losses"][1:].tolist() == got["losses"].tolist()  # the resumed epoch's running loss too
    assert set(want.files) == set(got.files) and any(f.endswith("seed_generator_state") for f in want.files)
    for name in set(want.files) - {"losses"}:
        assert want[name].dtype == got[name].dtype and np.array_equal(want[name], got[name]), name


def jax_sklearn_notebook(store, progress, final, slow):
    return [
        "%load_ext colabkit",
        "import time, numpy as np, jax, jax.numpy as jnp, optax, colabkit\n"
        "import flax.linen as nn\n"
        "from flax import nnx\n"
        "from sklearn.linear_model import SGDClassifier\n"
        "class MLP(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x, train):\n"
        "        x = nn.relu(nn.Dense(16)(x))\n"
        "        return nn.Dense(1)(nn.Dropout(0.3, deterministic=not train)(x))\n"
        "mlp = MLP()\n"
        "tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 1e-2, 5, 24)))\n"
        "params = mlp.init(jax.random.key(0), jnp.zeros((1, 8)), False)['params']\n"
        "opt_state = tx.init(params)\n"
        "key = jax.random.key(7)  # a typed PRNG key\n"
        "@jax.jit\n"
        "def update(params, opt_state, key, x, y):\n"
        "    key, dropout = jax.random.split(key)\n"
        "    loss_of = lambda p: jnp.mean((mlp.apply({'params': p}, x, True, rngs={'dropout': dropout}) - y) ** 2)\n"
        "    loss, grads = jax.value_and_grad(loss_of)(params)\n"
        "    updates, opt_state = tx.update(grads, opt_state, params)\n"
        "    return optax.apply_updates(params, updates), opt_state, key, loss\n"
        "class Net(nnx.Module):\n"
        "    def __init__(self, rngs):\n"
        "        self.l1, self.l2 = nnx.Linear(8, 16, rngs=rngs), nnx.Linear(16, 1, rngs=rngs)\n"
        "    def __call__(self, x):\n"
        "        return self.l2(nnx.relu(self.l1(x)))\n"
        "net = Net(nnx.Rngs(0))\n"
        "net_opt = nnx.Optimizer(net, optax.adam(1e-2), wrt=nnx.Param)\n"
        "@nnx.jit\n"
        "def net_step(net, net_opt, x, y):\n"
        "    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(net)\n"
        "    net_opt.update(net, grads)\n"
        "np.random.seed(0)\n"
        "clf = SGDClassifier(random_state=np.random.RandomState(0), average=True)\n"
        "def batch(step):\n"
        "    kx, ky = jax.random.split(jax.random.fold_in(jax.random.key(42), step))\n"
        "    return jax.random.normal(kx, (16, 8)), jax.random.normal(ky, (16, 1))",
        f"%checkpoint every 5 steps params opt_state key net net_opt clf --to {store}",
        "for step in colabkit.resumable(range(24)):\n"
        "    x, y = batch(step)\n"
        "    params, opt_state, key, loss = update(params, opt_state, key, x, y)\n"
        "    net_step(net, net_opt, x, y)\n"
        "    X = np.asarray(x, dtype=np.float64)\n"
        "    clf.partial_fit(X, (X[:, 0] + np.random.randn(16) * 0.1 > 0).astype(int), classes=[0, 1])\n"
        + "\n".join("    " + line for line in progress_every_step(progress, slow, "step + 1").splitlines()),
        "tree = (params, opt_state, key, nnx.state((net, net_opt)))\n"
        "leaves = {jax.tree_util.keystr(path): np.asarray(jax.random.key_data(leaf) if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key) else leaf)\n"
        "          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}\n"
        "leaves.update({'clf.' + k: np.asarray(v) for k, v in vars(clf).items() if isinstance(v, (np.ndarray, float, int))})\n"
        f"np.savez({str(final) + '.npz'!r}, next=np.random.rand(3), **leaves)",
    ]


def test_jax_trees_and_a_sklearn_estimator_are_restored_as_arrays_before_any_iteration_is_skipped(tmp_path):
    want, got, nb, killed, resumed = kill_and_resume(tmp_path, jax_sklearn_notebook)
    assert "colabkit: resumed from step-10: 10 iteration(s) done, continuing at 11 of 24" in output(nb, 3)
    assert resumed == list(range(11, 25))  # was: restored nothing, skipped 10: trained from fresh params
    want, got = np.load(f"{want}.npz"), np.load(f"{got}.npz")
    assert set(want.files) == set(got.files) and "clf.coef_" in want.files and "[2]" in want.files
    for name in want.files:
        assert want[name].dtype == got[name].dtype and np.array_equal(want[name], got[name]), name
    store = tmp_path / "resumed" / "store"
    assert not any(store.rglob("objects.pkl"))  # arrays as arrays: nothing pickled
