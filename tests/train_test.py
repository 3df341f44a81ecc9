import dataclasses
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlpriv_jax import data, models, train
from mlpriv_jax.train import checkpoint

CFG = train.TrainConfig(num_epochs=2, batch_size=32, learning_rate=0.05, schedule="cosine", weight_decay=5e-4)


@pytest.fixture(scope="module")
def shapes():
  ds = data.load_dataset("shapes10")
  return ds.x_train[:2000], ds.y_train[:2000], ds.x_test[:500], ds.y_test[:500]


@pytest.fixture(scope="module")
def model():
  return models.get_model("cnn_tiny", 10, conv_impl="lax")


def _small(shapes, n=256):
  return shapes[0][:n], shapes[1][:n]


# vmap reorders float sums (batched matmuls): after 2 epochs one BatchNorm running mean of 32 differed by 2.7e-3
# on an AMD EPYC (Intel: < 2e-3); a wrong batch or key for model k moves every leaf far more.
@pytest.mark.parametrize("model_axis,tol", [("unroll", 1e-5), ("vmap", 5e-3)])
def test_train_k_equals_separate_trainings(shapes, model, model_axis, tol):
  x, y = _small(shapes)
  keep = np.asarray(train.balanced_keep(jax.random.key(3), 3, len(x)))
  key = jax.random.key(0)
  together = train.train_k(model, CFG, x, y, keep, key, model_axis=model_axis)
  steps = -(-int(keep.sum(1).max()) // CFG.batch_size)
  for k in range(3):
    alone = train.train(model, CFG, x, y, key, keep=keep[k], model_index=k, steps_per_epoch=steps)
    got = jax.tree.map(lambda t: t[k], together.state)
    chex.assert_trees_all_close(got.params, alone.state.params, atol=tol, rtol=tol)
    chex.assert_trees_all_close(got.batch_stats, alone.state.batch_stats, atol=tol, rtol=tol)


def test_model_k_does_not_depend_on_k_or_chunking(shapes, model):
  x, y = _small(shapes)
  keep = np.asarray(train.balanced_keep(jax.random.key(3), 4, len(x)))
  key = jax.random.key(0)
  four = train.train_k(model, CFG, x, y, keep, key, model_axis="unroll", chunk_size=3)
  # Models 2 and 3 on their own (as a K = 2 run whose indices start at 2) are the same models.
  steps = -(-int(keep.sum(1).max()) // CFG.batch_size)
  for k in (2, 3):
    alone = train.train(model, CFG, x, y, key, keep=keep[k], model_index=k, steps_per_epoch=steps)
    chex.assert_trees_all_close(jax.tree.map(lambda t: t[k], four.state.params), alone.state.params,
                                atol=1e-5, rtol=1e-5)
  assert four.state.step.shape == (4,)


def test_models_differ_and_keys_matter(shapes, model):
  x, y = _small(shapes)
  keep = np.ones((3, len(x)), bool)   # K = 3, as the equivalence test above: its compiled step is reused
  r = train.train_k(model, CFG, x, y, keep, jax.random.key(0), model_axis="unroll")
  a, b = (jax.tree.map(lambda t: t[i], r.state.params) for i in range(2))
  assert not np.allclose(jax.tree.leaves(a)[0], jax.tree.leaves(b)[0])


def test_soft_one_hot_labels_equal_hard_labels(shapes, model):
  x, y = _small(shapes)
  hard = train.train(model, CFG, x, y, jax.random.key(0))
  soft = train.train(model, CFG, x, jax.nn.one_hot(y, 10), jax.random.key(0))
  chex.assert_trees_all_close(hard.state.params, soft.state.params, atol=1e-5, rtol=1e-5)


def test_cross_entropy_golden_values():
  logits = jnp.log(jnp.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]]))
  np.testing.assert_allclose(train.cross_entropy(logits, jnp.array([0, 2])), -(np.log(0.7) + np.log(0.5)) / 2,
                             rtol=1e-6)
  soft = jnp.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
  np.testing.assert_allclose(train.cross_entropy(logits, soft),
                             -(0.5 * np.log(0.7) + 0.5 * np.log(0.2) + np.log(0.5)) / 2, rtol=1e-6)


def test_label_smoothing_is_the_cross_entropy_against_the_smoothed_targets():
  """(1 - e) y + e / C written out as a target distribution, for hard and soft labels (Szegedy et al. 2016)."""
  logits = jnp.log(jnp.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]]))
  e, c = 0.1, 3
  onehot = np.eye(c)[[0, 2]]
  soft = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
  for labels, dense in ((jnp.array([0, 2]), onehot), (jnp.asarray(soft), soft)):
    target = (1 - e) * dense + e / c
    want = -(target * np.log(np.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]]))).sum(-1).mean()
    np.testing.assert_allclose(train.cross_entropy(logits, labels, label_smoothing=e), want, rtol=1e-6)


def test_label_smoothing_changes_the_training_and_refuses_a_gradient_of_its_own(shapes, model):
  x, y = _small(shapes)
  plain = train.train(model, CFG, x, y, jax.random.key(0))
  smooth = train.train(model, dataclasses.replace(CFG, label_smoothing=0.2), x, y, jax.random.key(0))
  assert not np.allclose(jax.tree.leaves(plain.state.params)[0], jax.tree.leaves(smooth.state.params)[0])
  with pytest.raises(ValueError, match="label_smoothing applies to the plain cross-entropy step"):
    train.train(model, dataclasses.replace(CFG, label_smoothing=0.2), x, y, jax.random.key(0),
                grad_fn=train.make_grad_fn(model))
  with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\)"):
    dataclasses.replace(CFG, label_smoothing=1.0).validate()


def test_checkpoints_only_as_often_as_asked_and_always_at_the_end(shapes, model, tmp_path):
  """checkpoint_every_s: no checkpoint until that long has passed, one after the last epoch whatever it is, and
  the same model as checkpointing every epoch (the interval changes what is saved, not what is trained)."""
  x, y = _small(shapes)
  cfg = dataclasses.replace(CFG, num_epochs=3)
  path = str(tmp_path / "ckpt.msgpack")
  seen = []
  sparse = train.train(model, cfg, x, y, jax.random.key(1), ckpt_path=path, checkpoint_every_s=1e9,
                       on_epoch_end=lambda r: seen.append(os.path.exists(path)))
  assert seen == [False, False, True] and checkpoint.load_meta(path)["epoch"] == 3
  every = train.train(model, cfg, x, y, jax.random.key(1), ckpt_path=str(tmp_path / "every.msgpack"))
  chex.assert_trees_all_equal(sparse.state.params, every.state.params)


@pytest.mark.slow
def test_small_cnn_learns_shapes10_well_above_chance(shapes):
  x, y, xt, yt = shapes
  m = models.get_model("cnn_small", 10)
  cfg = train.TrainConfig(num_epochs=4, batch_size=64, learning_rate=0.05, schedule="cosine")
  r = train.train(m, cfg, x, y, jax.random.key(0))
  acc = float(train.evaluate(m, r.state, xt, yt))
  assert acc > 0.5, acc  # chance is 0.1
  assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]


def test_resume_after_a_kill_equals_an_uninterrupted_run(shapes, model, tmp_path):
  x, y = _small(shapes)
  key = jax.random.key(1)
  full = train.train(model, CFG, x, y, key)
  path = str(tmp_path / "ckpt.msgpack")

  def die_after_first_epoch(record):
    if record["epoch"] == 1:
      raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    train.train(model, CFG, x, y, key, ckpt_path=path, on_epoch_end=die_after_first_epoch)
  assert checkpoint.load_meta(path)["epoch"] == 1
  resumed = train.train(model, CFG, x, y, key, ckpt_path=path)
  chex.assert_trees_all_close(resumed.state.params, full.state.params, atol=1e-6, rtol=1e-6)
  assert [h["epoch"] for h in resumed.history] == [1, 2]


def test_train_k_resumes_per_chunk(shapes, model, tmp_path):
  x, y = _small(shapes)
  keep = np.ones((2, len(x)), bool)
  key = jax.random.key(2)
  first = train.train_k(model, CFG, x, y, keep, key, workdir=str(tmp_path), chunk_size=1, model_axis="unroll")
  assert sorted(os.listdir(tmp_path)) == ["models_00000-00001.msgpack", "models_00001-00002.msgpack"]
  again = train.train_k(model, CFG, x, y, keep, key, workdir=str(tmp_path), chunk_size=1, model_axis="unroll")
  chex.assert_trees_all_close(again.state.params, first.state.params)


def test_checkpoint_of_another_architecture_is_refused_and_kept(shapes, model, tmp_path):
  x, y = _small(shapes)
  path = str(tmp_path / "ckpt.msgpack")
  train.train(model, CFG, x, y, jax.random.key(0), ckpt_path=path)
  before = open(path, "rb").read()
  other = models.get_model("cnn_small", 10)
  with pytest.raises(train.CheckpointError, match="arch='cnn_tiny', not 'cnn_small'"):
    train.train(other, CFG, x, y, jax.random.key(0), ckpt_path=path)
  assert open(path, "rb").read() == before


def test_resume_with_other_hyper_parameters_is_refused(shapes, model, tmp_path):
  x, y = _small(shapes)
  path = str(tmp_path / "ckpt.msgpack")
  train.train(model, CFG, x, y, jax.random.key(0), ckpt_path=path)
  other = train.TrainConfig(**{**CFG.__dict__, "learning_rate": 0.5})
  with pytest.raises(train.CheckpointError, match="train_config"):
    train.train(model, other, x, y, jax.random.key(0), ckpt_path=path)
  with pytest.raises(train.CheckpointError, match="data="):
    train.train(model, CFG, x[:250], y[:250], jax.random.key(0), ckpt_path=path)   # same steps, other data


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
  path = tmp_path / "ckpt.msgpack"
  path.write_bytes(b"\x85garbage")
  with pytest.raises(train.CheckpointError, match="unreadable checkpoint"):
    checkpoint.load_meta(str(path))
  from flax import serialization
  path.write_bytes(serialization.msgpack_serialize({"other": 1}))
  with pytest.raises(train.CheckpointError, match="not an mlpriv_jax checkpoint"):
    checkpoint.load_meta(str(path))


@pytest.mark.parametrize("change,match", [
    (dict(batch_size=300), "batch_size 300 is larger than the data"),
    (dict(num_epochs=0), "num_epochs must be >= 1"),
    (dict(schedule="linear"), "unknown schedule"),
    (dict(learning_rate=-1.0), "learning_rate must be > 0"),
])
def test_bad_config(shapes, model, change, match):
  x, y = _small(shapes)
  with pytest.raises(ValueError, match=match):
    train.train(model, train.TrainConfig(**{**CFG.__dict__, **change}), x, y, jax.random.key(0))


def test_bad_data(shapes, model):
  x, y = _small(shapes)
  with pytest.raises(ValueError, match="labels must lie in"):
    train.train(model, CFG, x, y + 10, jax.random.key(0))
  with pytest.raises(ValueError, match="NaN"):
    train.train(model, CFG, x, jnp.full((len(x), 10), jnp.nan), jax.random.key(0))
  with pytest.raises(ValueError, match="images must be uint8"):
    train.train(model, CFG, x.astype(np.float32), y, jax.random.key(0))
  with pytest.raises(ValueError, match="keep must be bool"):
    train.train_k(model, CFG, x, y, np.ones((2, 10), bool), jax.random.key(0))


def test_balanced_keep():
  keep = np.asarray(train.balanced_keep(jax.random.key(0), 8, 100))
  assert keep.shape == (8, 100) and keep.dtype == bool
  np.testing.assert_array_equal(keep.sum(0), 4)  # every example in exactly half the models
  with pytest.raises(ValueError, match="fraction"):
    train.balanced_keep(jax.random.key(0), 8, 100, 0.0)


def test_step_compiles_once(shapes, model):
  x, y = _small(shapes)
  tx = train.make_optimizer(CFG)
  state = train.init_train_state(model, tx, jax.random.key(0), x.shape[1:])
  step = train.make_train_step_fn(model, tx)
  xd, yd = jnp.asarray(x), jnp.asarray(y)
  for t in range(3):   # another batch and another learning rate each step
    state, meas = step(state, {"x": xd[t:t + 32], "y": yd[t:t + 32]}, jax.random.key(0), 0.05 * (t + 1))
    chex.assert_tree_all_finite(meas)
  assert step._cache_size() == 1
  assert int(state.step) == 3


def test_predict_pads_the_last_batch(shapes, model):
  x, _ = _small(shapes, 70)
  v = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  got = train.predict(model, v, x, batch_size=32)
  want = model.apply(v, data.to_float(jnp.asarray(x)), train=False)[0]
  chex.assert_shape(got, (70, 10))
  chex.assert_trees_all_close(got, want, atol=1e-5)


def test_warmup_then_schedule_on_absolute_epochs():
  """Linear warm-up from 0 over warmup_epochs; multistep milestones stay at their absolute epochs."""
  import optax
  cfg = train.TrainConfig(num_epochs=4, learning_rate=0.1, momentum=0.0, weight_decay=0.0, schedule="multistep",
                          milestones_epochs=(3,), lr_decay_factor=0.1, warmup_epochs=1).validate()
  tx = train.make_optimizer(cfg)
  params = jnp.zeros(())
  state = tx.init(params)
  lrs = []
  for lr in train.learning_rates(cfg, steps_per_epoch=10):   # what the loop feeds the step, step by step
    updates, state = tx.update(jnp.ones(()), train.with_learning_rate(state, lr), params)
    lrs.append(-float(updates))
  assert len(lrs) == 40
  np.testing.assert_allclose([lrs[0], lrs[5], lrs[10], lrs[29], lrs[30]], [0.0, 0.05, 0.1, 0.1, 0.01], atol=1e-7)
  with pytest.raises(ValueError, match="warmup_epochs"):
    train.TrainConfig(num_epochs=2, warmup_epochs=2).validate()


def test_another_dataset_size_in_the_same_bucket_compiles_nothing(shapes, model):
  x, y = shapes[0], shapes[1]
  other = dataclasses.replace(CFG, num_epochs=3, learning_rate=0.02, schedule="multistep", milestones_epochs=(2,),
                              weight_decay=1e-3)
  train.train(model, CFG, x[:300], y[:300], jax.random.key(0), eval_data=(shapes[2][:100], shapes[3][:100]))
  with train.count_compiles() as c:   # another size (bucket 512), epoch count, schedule and weight decay
    r = train.train(model, other, x[:480], y[:480], jax.random.key(1), eval_data=(shapes[2][:100], shapes[3][:100]))
  assert c.count == 0, c.names
  assert float(r.state.opt_state.hyperparams["weight_decay"]) == pytest.approx(1e-3)   # not the first run's 5e-4
  keep300, keep400 = (np.asarray(train.balanced_keep(jax.random.key(3), 3, n)) for n in (300, 400))
  train.train_k(model, CFG, x[:300], y[:300], keep300, jax.random.key(0), model_axis="unroll")
  with train.count_compiles() as c:
    train.train_k(model, other, x[:400], y[:400], keep400, jax.random.key(2), model_axis="unroll")
  assert c.count == 0, c.names
  with train.count_compiles() as c:   # a new bucket compiles the order and gather functions, never the step
    train.train(model, CFG, x[:600], y[:600], jax.random.key(0))
  assert c.count > 0 and not any("train_step" in n for n in c.names), c.names


def test_predict_k_in_chunks_equals_all_models_at_once(shapes, model):
  x, _ = _small(shapes, 96)
  v = jax.vmap(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3))))(jax.random.split(jax.random.key(0), 3))
  full = train.predict(model, v, x, num_models=3, model_axis="unroll")
  chex.assert_shape(full, (3, 96, 10))
  assert not np.allclose(full[0], full[1]) and not np.allclose(full[1], full[2])   # a mixed-up model would show
  chex.assert_trees_all_close(train.predict_k(model, v, x, chunk_size=2, model_axis="unroll"), full, atol=1e-5)


def test_grad_fn_of_another_tree_is_one_line(shapes, model):
  x, y = _small(shapes)

  def bad(params, batch_stats, batch, key):
    grads, aux = train.make_grad_fn(model)(params, batch_stats, batch, key)
    return {"w": jax.tree.leaves(grads)[0]}, aux
  with pytest.raises(ValueError, match="grad_fn returned a tree of structure .* the parameters have"):
    train.train(model, CFG, x, y, jax.random.key(0), grad_fn=bad)


def test_per_model_soft_labels(shapes, model):
  """labels f32[K, N, C]: model k learns its own targets (what the arena's surrogates of one budget need)."""
  x, y = _small(shapes)
  keep = np.ones((2, len(x)), bool)
  soft = np.stack([np.eye(10)[y], np.eye(10)[(y + 1) % 10]]).astype(np.float32)
  cfg = dataclasses.replace(CFG, num_epochs=4, augment=False)
  r = train.train_k(model, cfg, x, soft, keep, jax.random.key(0), model_axis="unroll")
  pred = np.asarray(train.predict(model, train.variables_of(r.state), x, num_models=2, model_axis="unroll")).argmax(-1)
  own = [(pred[0] == y).mean(), (pred[1] == (y + 1) % 10).mean()]
  other = [(pred[0] == (y + 1) % 10).mean(), (pred[1] == y).mean()]
  assert min(own) > max(other) + 0.15, (own, other)   # measured 0.30, 0.29 against 0.10, 0.07 (chance 0.1)
  with pytest.raises(ValueError, match="per-model soft labels must be f32\\[K, N, C\\] with K = 3"):
    train.train_k(model, cfg, x, soft, np.ones((3, len(x)), bool), jax.random.key(0))


def test_equal_key_ids_pair_the_models_with_train(shapes, model):
  """key_ids = zeros: every model starts and steps as train(model_index=0); only the labels tell them apart."""
  x, y = _small(shapes, 128)
  cfg = dataclasses.replace(CFG, num_epochs=1, augment=False)
  soft = np.stack([np.eye(10)[y], np.eye(10)[y], np.eye(10)[(y + 1) % 10]]).astype(np.float32)
  r = train.train_k(model, cfg, x, soft, np.ones((3, len(x)), bool), jax.random.key(5), model_axis="unroll",
                    key_ids=[0, 0, 0])
  alone = train.train(model, cfg, x, soft[2], jax.random.key(5))
  k = [jax.tree.map(lambda v, i=i: v[i], r.state.params) for i in range(3)]
  chex.assert_trees_all_equal(k[0], k[1])                        # same ids, same labels: the same model
  chex.assert_trees_all_close(k[2], alone.state.params, atol=1e-5)   # model 2 is train's on its own labels
  assert not np.allclose(jax.tree.leaves(k[0])[0], jax.tree.leaves(k[2])[0])
  with pytest.raises(ValueError, match="key_ids must be 3 integers >= 0"):
    train.train_k(model, cfg, x, soft, np.ones((3, len(x)), bool), jax.random.key(5), key_ids=[0, 1])


_MESH_SCRIPT = r"""
import jax, numpy as np, chex
from jax.sharding import Mesh
from mlpriv_jax import data, models, train
from mlpriv_jax.errors import UserError
assert len(jax.devices()) == 2, jax.devices()
ds = data.load_dataset("shapes10")
x, y = ds.x_train[:256], ds.y_train[:256]
model = models.get_model("cnn_tiny", 10, conv_impl="lax")
cfg = train.TrainConfig(num_epochs=2, batch_size=32, learning_rate=0.05, schedule="cosine", weight_decay=5e-4)
keep = np.asarray(train.balanced_keep(jax.random.key(3), 4, len(x)))
mesh = Mesh(np.array(jax.devices()), ("models",))
sharded = train.train_k(model, cfg, x, y, keep, jax.random.key(0), mesh=mesh)
plain = train.train_k(model, cfg, x, y, keep, jax.random.key(0), model_axis="vmap")
chex.assert_trees_all_close(sharded.state.params, plain.state.params, atol=1e-5, rtol=1e-5)
for leaf in jax.tree.leaves(sharded.state):
  assert leaf.sharding.spec[0] == "models" and len(leaf.sharding.device_set) == 2, leaf.sharding
for bad, match in ((Mesh(np.array(jax.devices()), ("data",)), "axis named 'models'"), (mesh, "divisible by 2")):
  try:
    train.train_k(model, cfg, x, y, keep[:3] if match.startswith("div") else keep, jax.random.key(0), mesh=bad)
  except UserError as e:
    assert match in str(e) and "\n" not in str(e), e
  else:
    raise AssertionError(match)
print("ok")
"""


@pytest.mark.slow
def test_train_k_over_a_two_device_mesh_equals_train_k_without_one():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
  p = subprocess.run([sys.executable, "-c", _MESH_SCRIPT], capture_output=True, text=True, timeout=600, env=env)
  assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stderr[-3000:]


_SHARE_SCRIPT = r"""
import sys, jax, numpy as np
from mlpriv_jax import data, models, train
index, count, workdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ds = data.load_dataset("shapes10")
model = models.get_model("cnn_tiny", 10, conv_impl="lax")
cfg = train.TrainConfig(num_epochs=2, batch_size=32, learning_rate=0.05, schedule="cosine")
keep = np.asarray(train.balanced_keep(jax.random.key(3), 4, 256))
r = train.train_k(model, cfg, ds.x_train[:256], ds.y_train[:256], keep, jax.random.key(0), chunk_size=1,
                  workdir=workdir, model_axis="unroll", process_index=index, process_count=count)
print("models", list(r.model_ids))
"""


@pytest.mark.slow
def test_two_processes_train_their_shares_of_k_into_one_workdir(shapes, model, tmp_path):
  """A multi-host run on one machine: two processes, each its half of the K models, one shared workdir."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen([sys.executable, "-c", _SHARE_SCRIPT, str(i), "2", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
  assert "models [0, 2]" in outs[0][0] and "models [1, 3]" in outs[1][0], outs
  assert len([f for f in os.listdir(tmp_path) if f.startswith("models_")]) == 4
  x, y = shapes[0][:256], shapes[1][:256]
  keep = np.asarray(train.balanced_keep(jax.random.key(3), 4, 256))
  cfg = train.TrainConfig(num_epochs=2, batch_size=32, learning_rate=0.05, schedule="cosine")
  with train.count_compiles() as c:   # every chunk is finished: this process only reads the checkpoints
    collected = train.train_k(model, cfg, x, y, keep, jax.random.key(0), chunk_size=1, workdir=str(tmp_path),
                              model_axis="unroll")
  assert collected.model_ids == (0, 1, 2, 3) and not any("train_step" in n for n in c.names)
  alone = train.train_k(model, cfg, x, y, keep, jax.random.key(0), chunk_size=2, model_axis="unroll")
  chex.assert_trees_all_close(collected.state.params, alone.state.params, atol=1e-5, rtol=1e-5)
