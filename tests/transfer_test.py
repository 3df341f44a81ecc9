"""The attacker's pretrained extractor (CloudLeak's transfer learning): the frozen body stays the extractor's through
every training path, the attacks on it keep their budgets, and a wrong extractor is refused in one line."""

import os

import chex
import jax
import numpy as np
import pytest

from conftest import StubOracle
from mlpriv_jax import data, models, train
from mlpriv_jax.attacks import extraction as E
from mlpriv_jax.errors import UserError
from mlpriv_jax.lab import training
from mlpriv_jax.models.transfer import head_name

# Momentum and weight decay on: a frozen part that took the optimiser's step would move.
CFG = train.TrainConfig(num_epochs=2, batch_size=32, learning_rate=0.1, momentum=0.9, weight_decay=5e-3,
                        schedule="constant", augment=True)


@pytest.fixture(scope="module")
def extractor():
  """cnn_tiny trained briefly on patterns20's 20 classes (its BatchNorm statistics moved off their initial 0/1)."""
  pool = data.load_dataset("patterns20")
  model = models.get_model("cnn_tiny", 20)
  state = train.train(model, CFG, pool.x_train[:256], pool.y_train[:256], jax.random.key(0)).state
  return model, train.variables_of(state), pool


def _frozen(variables, tuned=()):
  head = head_name(variables["params"])
  return {c: {k: v for k, v in variables[c].items() if k != head and k not in tuned} for c in ("params", "batch_stats")}


def test_the_frozen_body_is_the_extractors_after_every_training_path(extractor):
  model, v, pool = extractor
  sur = models.transfer(model, v, 10)
  soft = np.asarray(jax.nn.softmax(jax.random.normal(jax.random.key(1), (128, 10))))
  x = pool.x_train[:128]
  one = train.variables_of(train.train(sur, CFG, x, soft, jax.random.key(2)).state)
  k = train.variables_of(train.train_k(sur, CFG, x, soft, np.ones((2, 128), bool), jax.random.key(2)).state)
  init = train.variables_of(train.init_train_state(sur, train.make_optimizer(CFG), jax.random.key(3), (32, 32, 3)))
  want = _frozen(v)
  chex.assert_trees_all_equal(_frozen(one), want)
  chex.assert_trees_all_equal(_frozen(init), want)
  for i in range(2):
    chex.assert_trees_all_equal(_frozen(jax.tree.map(lambda a, i=i: a[i], k)), want)
  head = head_name(one["params"])
  assert one["params"][head]["kernel"].shape == (v["params"][head]["kernel"].shape[0], 10)
  assert not np.allclose(one["params"][head]["kernel"], init["params"][head]["kernel"])   # the head trained
  # Its features are the extractor's (FeatureFool's phi), and its spec rebuilds it as a plain zoo model.
  xf = x[:16].astype(np.float32) / 255
  np.testing.assert_array_equal(sur.features(one, xf)[1], model.features(v, xf)[1])
  plain = models.from_spec(sur.spec)
  np.testing.assert_allclose(plain.apply(one, xf, train=False)[0], sur.apply(one, xf, train=False)[0], atol=1e-6)


def test_the_last_block_fine_tunes_from_the_extractor_and_the_rest_stays_frozen(extractor):
  model, v, pool = extractor
  sur = models.transfer(model, v, 10, tune="last_block")
  assert sur.fine_tuned == ("Conv_2", "BatchNorm_2")   # cnn_tiny's last conv block
  soft = np.asarray(jax.nn.softmax(jax.random.normal(jax.random.key(1), (128, 10))))
  x = pool.x_train[:128]
  init = train.variables_of(train.init_train_state(sur, train.make_optimizer(CFG), jax.random.key(3), (32, 32, 3)))
  one = train.variables_of(train.train(sur, CFG, x, soft, jax.random.key(2)).state)
  k = train.variables_of(train.train_k(sur, CFG, x, soft, np.ones((2, 128), bool), jax.random.key(2)).state)
  # It starts from the extractor's weights everywhere but the new head ...
  chex.assert_trees_all_equal(_frozen(init), _frozen(v))
  # ... the layers before the last block never move; the block's weights and running statistics do
  chex.assert_trees_all_equal(_frozen(one, sur.fine_tuned), _frozen(v, sur.fine_tuned))
  chex.assert_trees_all_equal(_frozen(jax.tree.map(lambda a: a[1], k), sur.fine_tuned), _frozen(v, sur.fine_tuned))
  assert not np.allclose(one["params"]["Conv_2"]["kernel"], v["params"]["Conv_2"]["kernel"])
  assert not np.allclose(one["batch_stats"]["BatchNorm_2"]["mean"], v["batch_stats"]["BatchNorm_2"]["mean"])


@pytest.mark.parametrize("arch,block", [
    ("resnet20", ("Conv_17", "BatchNorm_17", "Conv_18", "BatchNorm_18")),
    ("wrn16_4", ("BatchNorm_10", "Conv_14", "BatchNorm_11", "Conv_15", "BatchNorm_12")),
    ("resnet18_narrow", ("Conv_18", "BatchNorm_18", "Conv_19", "BatchNorm_19")),
    ("vgg16_narrow", ("Conv_10", "BatchNorm_10", "Conv_11", "BatchNorm_11", "Conv_12", "BatchNorm_12"))])
def test_each_architecture_marks_its_last_block(arch, block):
  """The layers that fine-tune are the last residual block (WRN: with its final BatchNorm), VGG's last stage."""
  model = models.get_model(arch, 20)
  v = model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
  sur = models.transfer(model, v, 10, tune="last_block")
  assert sur.fine_tuned == block
  assert set(block) <= set(v["params"]) and set(sur.pretrained["params"]) == set(v["params"]) - {"Dense_0"}


def test_the_head_alone_learns_the_answers(extractor):
  """A linear head on the extractor's features fits the answers of a victim that is itself a function of them:
  the training loss falls well below its start (the head gets the gradient the body does not)."""
  model, v, pool = extractor
  sur = models.transfer(model, v, 10)
  x = pool.x_train[256:768]
  labels = np.asarray(model.features(v, x.astype(np.float32) / 255)[1][:, :10].argmax(-1))
  cfg = train.TrainConfig(num_epochs=15, batch_size=64, learning_rate=0.5, schedule="cosine", augment=False)
  h = train.train(sur, cfg, x, np.eye(10, dtype=np.float32)[labels], jax.random.key(4)).history
  assert h[-1]["train_loss"] < 0.7 * h[0]["train_loss"], [r["train_loss"] for r in h]


@pytest.mark.parametrize("name", ["knockoff_random", "knockoff_adaptive", "cloudleak", "top1"])
def test_attacks_on_the_extractor_keep_their_budget_and_its_body(extractor, name):
  model, v, pool = extractor
  victim = models.get_model("cnn_tiny", 10)
  stub = StubOracle(victim, victim.init(jax.random.key(5), np.zeros((1, 32, 32, 3), np.float32)), budget=80)
  sur = models.transfer(model, v, 10)
  cfg = train.TrainConfig(num_epochs=1, batch_size=16, learning_rate=0.05, augment=False)
  x = pool.x_train[:400]
  extra = dict(pool_labels=pool.y_train[:400], pool_coarse=pool.y_train_coarse[:400]) \
      if "pool_labels" in E.get(name).needs else {}
  options = E.CloudLeakOptions(num_rounds=3, steps=2) if name == "cloudleak" else None
  res = E.run(name, stub, x, budget=60, surrogate=sur, key=jax.random.key(6), config=cfg, options=options,
              checkpoints=(30,), **extra)
  assert res.queries_used == stub.queries_used == 60
  for _, state in res.snapshots:
    chex.assert_trees_all_equal(_frozen(train.variables_of(state)), _frozen(v))
  if name == "cloudleak":   # candidates within 8/255 (plus rounding) of their pool images, valid u8 images
    dist = np.abs(res.images.astype(int) - x[res.extra["sources"]].astype(int)).max(axis=(1, 2, 3))
    assert dist.max() <= 9 and dist.max() >= 1 and res.images.dtype == np.uint8


def test_featurefool_on_the_extractors_features_stays_in_its_box(extractor):
  model, v, pool = extractor
  sur = models.transfer(model, v, 10)
  sv = train.variables_of(train.init_train_state(sur, train.make_optimizer(CFG), jax.random.key(7), (32, 32, 3)))
  x = pool.x_train[:8].astype(np.float32) / 255
  adv = np.asarray(E.featurefool(sur, sv, x, x[::-1], steps=5))
  assert np.all(np.isfinite(adv)) and adv.min() >= 0 and adv.max() <= 1
  assert 0 < np.abs(adv - x).max() <= 8 / 255 + 1e-6


def test_a_pool_without_labels_cannot_be_pretrained_on(tmp_path):
  x = np.zeros((64, 32, 32, 3), np.uint8)
  np.savez(tmp_path / "unlabelled.npz", x_train=x, x_test=x)
  cfg = training.TrainRun(dataset="unlabelled", arch="cnn_tiny", train=CFG)
  with pytest.raises(UserError, match="unlabelled.npz: missing y_train") as e:
    training.run(cfg, workdir=str(tmp_path / "w"), data_dir=str(tmp_path), log=print)
  assert "\n" not in str(e.value) and not os.path.exists(tmp_path / "w")
