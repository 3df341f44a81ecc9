"""Data-free extraction (DFME, DisGUIDE): the zeroth-order estimate, the logit recovery, the disagreement loss, the
query counts, the soft vote, and bad input."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import StubOracle
from mlpriv_jax import defences, models
from mlpriv_jax.attacks import extraction as E
from mlpriv_jax.attacks.extraction.datafree import evaluation_points
from mlpriv_jax.errors import UserError
from mlpriv_jax.oracle import Victim

TINY = E.DfmeOptions(batch_size=8, nz=16, ngf=8, grad_m=2, g_iter=2, d_iter=3, report_every=100)
SHAPE = (8, 8, 3)


def _stand_in(key):
  """A small differentiable stand-in for DFME's objective at one pre-tanh image: -mean |S(x) - T(x)| of two random
  two-layer maps of tanh(x)."""
  k1, k2, k3, k4 = jax.random.split(key, 4)
  d = int(np.prod(SHAPE))
  w1, w2 = jax.random.normal(k1, (d, 32)) / np.sqrt(d), jax.random.normal(k2, (32, 10)) / np.sqrt(32)
  v1, v2 = jax.random.normal(k3, (d, 32)) / np.sqrt(d), jax.random.normal(k4, (32, 10)) / np.sqrt(32)
  f = lambda x: -jnp.abs(jnp.tanh(jnp.tanh(x).reshape(-1) @ w1) @ w2 - jnp.tanh(jnp.tanh(x).reshape(-1) @ v1) @ v2
                         ).mean()
  return f


def _cosines(f, x, m, key, eps=1e-3):
  """The cosine of each sample's forward-difference estimate (m directions) with f's true gradient."""
  u = E.unit_directions(key, x.shape[0], m, SHAPE)
  values = jax.vmap(jax.vmap(f))(evaluation_points(x, u, eps))
  est = E.forward_difference_gradient(values, u, eps).reshape(x.shape[0], -1)
  true = jax.vmap(jax.grad(f))(x).reshape(x.shape[0], -1)
  return np.asarray((est * true).sum(1) / np.linalg.norm(est, axis=1) / np.linalg.norm(true, axis=1)), est, true


def test_the_forward_difference_estimate_follows_the_true_gradient():
  """One direction's estimate points along the gradient's component on it: its cosine with the gradient is about
  sqrt(2 / (pi dim)) (0.058 for dim 192) and positive; m directions multiply it by about sqrt(m); and averaged over
  many directions the estimate is the gradient itself (E[dim u u^T] = I), its scale included."""
  f = _stand_in(jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (64, *SHAPE))
  mean = {m: _cosines(f, x, m, jax.random.key(2))[0].mean() for m in (1, 4, 16)}
  assert mean[1] > 0.03, mean
  assert mean[4] > 1.5 * mean[1] and mean[16] > 1.5 * mean[4], mean
  cos, est, true = _cosines(f, x[:2], 8192, jax.random.key(3))
  assert cos.min() > 0.85, cos
  ratio = np.linalg.norm(est, axis=1) / np.linalg.norm(true, axis=1)
  assert np.all((ratio > 0.8) & (ratio < 1.3)), ratio   # the dim factor: unbiased, not just aligned


def test_logit_recovery_is_invariant_to_a_constant_on_the_logits():
  logits = jax.random.normal(jax.random.key(0), (5, 10)) * 3
  for c in (0.0, 7.5, -100.0):
    got = E.recover_logits(jax.nn.softmax(logits + c))
    np.testing.assert_allclose(got, logits - logits.mean(-1, keepdims=True), atol=1e-4)
  # a released 0 (top-k, rounding) is read at the floor: finite, and far below every kept class
  p = jnp.array([[0.7, 0.3, 0.0]])
  r = np.asarray(E.recover_logits(p, floor=1e-6))
  assert np.all(np.isfinite(r)) and r[0, 2] < r[0, 1] - 10


@pytest.fixture(scope="module")
def victim():
  m = models.get_model("cnn_tiny", 10)
  return m, m.init(jax.random.key(0), np.zeros((1, *SHAPE), np.float32))


def test_every_victim_forward_is_counted_as_the_original_counts_it(victim):
  """cost = B (g_iter (m + 1) + d_iter) = 8 (2 * 3 + 3) = 72 per iteration; a budget of 300 runs 4 iterations."""
  model, v = victim
  stub = StubOracle(model, v, budget=300)
  stub.input_shape = SHAPE
  student = models.get_model("cnn_tiny", 10)
  assert TINY.cost() == 72
  res = E.run("dfme", stub, None, budget=300, surrogate=student, key=jax.random.key(1), config=None, options=TINY,
              checkpoints=(150,))
  assert res.queries_used == stub.queries_used == 4 * 72
  assert [q for q, _ in res.snapshots] == [144, 288] and res.extra["iterations"] == 4
  assert res.images.shape[1:] == SHAPE and np.all((res.images >= 0) & (res.images <= 1))
  assert [r["queries"] for r in res.extra["history"]][-1] == 288
  # a record every iteration here (report_every 100 < 2 x 72): the first covers the first 72 answers, all kept
  first = res.answers[:72].argmax(-1)
  assert res.extra["history"][0]["answered_classes"] == len(np.unique(first))
  assert res.extra["history"][0]["top_class_share"] == pytest.approx(np.bincount(first).max() / 72)


def test_data_free_bad_input(victim):
  model, v = victim
  student = models.get_model("cnn_tiny", 10)
  run = lambda oracle, budget, options=TINY: E.run("dfme", oracle, None, budget=budget, surrogate=student,
                                                   key=jax.random.key(1), config=None, options=options)
  oracle = Victim(model, v, budget=1000, input_shape=SHAPE)
  with pytest.raises(UserError, match="dfme needs at least 72 queries \\(one iteration\\), got a budget of 50"):
    run(oracle, 50)
  assert oracle.queries_used == 0
  with pytest.raises(UserError, match="needs the victim's probabilities .* labels only \\(one-hot\\)"):
    run(Victim(model, v, defence=defences.build("label", None), budget=1000, input_shape=SHAPE), 300)
  # a generator that diverges: stopped at the iteration, reported, the student of the iteration before kept
  res = run(Victim(model, v, budget=1000, input_shape=SHAPE), 300, dataclasses.replace(TINY, lr_generator=1e38))
  assert "diverged" in res.extra["note"] and res.queries_used < 4 * 72
  assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(res.state.params))


def test_disguides_generator_loss_by_hand():
  """Two students: the unbiased std of two values is |a - b| / sqrt(2); the diversity term is the mean vote's
  negative entropy (+1e-6 per class, as the original)."""
  p = jnp.array([[[0.9, 0.1], [0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5]]])   # [K=2, B=2, C=2]
  spread = (0.4 / np.sqrt(2) * 2 + 0.0) / 4
  vote = np.array([0.6, 0.4]) + 1e-6
  want = -spread + 0.2 * float((vote * np.log(vote)).sum())
  np.testing.assert_allclose(E.disagreement_loss(p, 0.2), want, rtol=1e-5)


def test_disguide_counts_one_query_per_generated_image_and_is_judged_by_its_soft_vote(victim):
  from mlpriv_jax.games import extraction as G
  model, v = victim
  stub = StubOracle(model, v, budget=70)
  stub.input_shape = SHAPE
  student = models.get_model("cnn_tiny", 10)
  options = E.DisguideOptions(batch_size=16, nz=8, ngf=4, replay_steps=2)
  res = E.run("disguide", stub, None, budget=70, surrogate=student, key=jax.random.key(1), config=None,
              options=options, checkpoints=(32,))
  assert res.queries_used == stub.queries_used == 64 and [q for q, _ in res.snapshots] == [32, 64]
  x = np.asarray(jax.random.uniform(jax.random.key(2), (50, *SHAPE)))
  top1 = np.asarray(model.apply(v, x, train=False)[0]).argmax(-1)
  ev = G.Evaluator(x, top1, top1, 1.0)
  variables = {"params": res.state.params, "batch_stats": res.state.batch_stats}
  assert G.members(student, variables, SHAPE) == 2
  member = lambda k: jax.tree.map(lambda a: a[k], variables)
  vote = (jax.nn.softmax(student.apply(member(0), x, train=False)[0])
          + jax.nn.softmax(student.apply(member(1), x, train=False)[0])).argmax(-1)
  assert G.evaluate(student, res.state, ev)["fidelity"] == pytest.approx(float((np.asarray(vote) == top1).mean()))
