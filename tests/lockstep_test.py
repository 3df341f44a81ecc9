"""The arena's lockstep runs: an adaptive attack run once for the settings that answer it alike gives every setting
exactly what a run of its own would give."""

import jax
import numpy as np
import pytest

from mlpriv_jax import defences, models, train
from mlpriv_jax.arena import lockstep
from mlpriv_jax.attacks import extraction as E
from mlpriv_jax.attacks import membership as M
from mlpriv_jax.oracle import Service, Victim

SETTINGS = {"none": ("none", None), "label": ("label", None), "top1": ("top1", None), "label_again": ("label", None),
            "round1": ("round1", None), "gaussian@0.001": ("gaussian", 1e-3), "gaussian@3": ("gaussian", 3.0)}


@pytest.fixture(scope="module")
def victim():
  """oracle_of(setting name) -> a fresh account (the same key stream each time) of a 4-class victim of 8x8 images."""
  model = models.get_model("cnn_tiny", 4)
  variables = model.init(jax.random.key(1), np.zeros((1, 8, 8, 3), np.float32))
  services = {n: Service.from_model(model, variables, input_shape=(8, 8, 3), defence=defences.build(*ds))
              for n, ds in SETTINGS.items()}
  return lambda name, **kw: Victim.of(services[name], key=jax.random.key(5), **kw)


def _by_setting(runs):
  """{setting: (result, the setting it was run against)} from run_in_lockstep's runs, checked to cover each once."""
  out = {}
  for result, primary, sharing in runs:
    assert primary in sharing and not set(sharing) & set(out), (primary, sharing, list(out))
    out.update({n: (result, primary) for n in sharing})
  return out


def _walk(oracle, read, rounds=6):
  """A toy adaptive attack: each round's queries move the last ones by an amount chosen from what it read."""
  x = np.random.default_rng(0).random((16, 8, 8, 3), np.float32)
  transcript = []
  for r in range(rounds):
    seen = read(oracle.query(x))
    transcript.append(seen)
    signal = seen if seen.ndim == 1 else seen.argmax(-1) + seen.max(-1)
    x = np.clip(x + 0.05 * np.cos(signal + r)[:, None, None, None], 0, 1).astype(np.float32)
  return np.stack(transcript), oracle.queries_used


@pytest.mark.parametrize("read", [lockstep.top1, lockstep.whole], ids=["top1", "whole"])
def test_lockstep_equals_a_run_per_setting(victim, read):
  """Every setting's result equals its own run, while the attack runs once per class of alike settings: under top-1
  reading, none, label, top1, rounding (which keeps the label) and the faint noise are one class, strong noise
  another; reading whole answers, only the two services of `label` share (top1's p / p is not always exactly 1)."""
  runs = []

  def attack(oracle):
    runs.append(oracle)
    return _walk(oracle, read)
  out = _by_setting(lockstep.run_in_lockstep(attack, list(SETTINGS), victim, read))
  for name in SETTINGS:
    alone, used = _walk(victim(name), read)
    np.testing.assert_array_equal(out[name][0][0], alone, err_msg=name)
    assert out[name][0][1] == used == 6 * 16
  shared = {n: r for n, (_, r) in out.items()}
  if read is lockstep.top1:
    assert {shared[n] for n in SETTINGS if n != "gaussian@3"} == {"none"}, shared
    assert shared["gaussian@3"] == "gaussian@3" and len(runs) == 2, shared
  else:
    assert shared["label_again"] == "label" and len(runs) == len(SETTINGS) - 1, shared


def test_tee_drops_a_setting_whose_budget_ends_first(victim):
  tee = lockstep.Tee(victim("none", budget=40), {"label": victim("label", budget=20), "top1": victim("top1")},
                     lockstep.top1)
  x = np.random.default_rng(1).random((16, 8, 8, 3), np.float32)
  tee.query(x)
  assert tee.agreeing == ["label", "top1"] and tee.queries_used == 16 and tee.budget_left == 24
  tee.query(x)
  assert tee.agreeing == ["top1"]


def test_label_only_attacks_share_across_argmax_keeping_settings(victim):
  """The registry's label_only flags, checked on the attacks themselves: JBDA and a label-only membership attack
  run once for none, label and top1, and equal their runs alone."""
  assert E.get("jbda").label_only and not E.get("cloudleak").label_only
  assert {n for n, a in M.REGISTRY.items() if isinstance(a, M.QueryAttack) and a.label_only} == set(M.split(M.REGISTRY)[1])
  surrogate = models.get_model("cnn_tiny", 4)
  cfg = train.TrainConfig(num_epochs=1, batch_size=8, learning_rate=0.05, augment=False)
  seeds = np.random.default_rng(2).integers(0, 256, (8, 8, 8, 3)).astype(np.uint8)
  jbda = lambda o: E.run("jbda", o, seeds, budget=24, surrogate=surrogate, key=jax.random.key(3), config=cfg)
  names = ["none", "label", "top1"]
  out = _by_setting(lockstep.run_in_lockstep(jbda, names, lambda n: victim(n, budget=24), lockstep.top1))
  assert {r for _, r in out.values()} == {"none"}
  for n in names:
    alone = jbda(victim(n, budget=24))
    np.testing.assert_array_equal(out[n][0].images, alone.images, err_msg=n)
    leaves = jax.tree.leaves(out[n][0].state.params), jax.tree.leaves(alone.state.params)
    for a, b in zip(*leaves):
      np.testing.assert_array_equal(a, b, err_msg=n)


def test_alike_settings_share_unasked_and_lead_the_runs(victim):
  """Settings known to read alike get no account; the first of them in `names` runs first even if listed after
  others; the others are still checked query by query."""
  asked = {}

  def oracle_of(name):
    o = victim(name)
    asked[name] = o
    return o
  names = ["gaussian@3", "round1", "label", "none"]
  out = _by_setting(lockstep.run_in_lockstep(lambda o: _walk(o, lockstep.top1), names, oracle_of, lockstep.top1,
                                             alike=["label", "round1", "none"]))
  assert {n: r for n, (_, r) in out.items()} == {"label": "round1", "round1": "round1", "none": "round1",
                                                  "gaussian@3": "gaussian@3"}
  assert "none" not in asked and "label" not in asked and asked["round1"].queries_used == 96
  np.testing.assert_array_equal(out["none"][0][0], _walk(victim("none"), lockstep.top1)[0])
