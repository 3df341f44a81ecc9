"""RMIA (Zarifzadeh et al. 2024): golden values worked by hand, invariances, fast path = brute force."""

import chex
import jax
import numpy as np
import pytest

from mlpriv_jax.attacks.membership import rmia as R
from mlpriv_jax.errors import UserError


def test_offline_marginal_golden():
  assert R.offline_marginal(0.5, 0.3) == pytest.approx(0.675)
  assert R.offline_marginal(0.5, 1.0) == pytest.approx(0.5)
  assert R.offline_marginal(0.5, 0.0) == pytest.approx(0.75)


def test_pairwise_score_golden_and_strict():
  # r_x = 0.9 / 0.6 = 1.5 against r_z = [0.5, 1, 2, 0.7]: LR = [3, 1.5, 0.75, 2.142857].
  rx, rz = np.array([[0.9 / 0.6]]), np.array([[0.5], [1.0], [2.0], [0.7]])
  assert R.pairwise_scores(rx, rz, 1.0)[0] == 0.75
  assert R.pairwise_scores(rx, rz, 2.0)[0] == 0.5
  # LR exactly gamma does not count: 1.5 / 0.75 == 2.
  assert R.pairwise_scores(np.array([[1.5]]), np.array([[0.75]]), 2.0)[0] == 0.0
  assert R.pairwise_scores(np.array([[1.5]]), np.array([[0.7499]]), 2.0)[0] == 1.0


def test_signal_goldens():
  logits, y = np.array([[2.0, 0.0, -1.0]]), np.array([0])
  np.testing.assert_allclose(R.rmia_signal(logits, y, signal="softmax", temperature=2.0), [0.6285317], rtol=1e-6)
  np.testing.assert_allclose(R.rmia_signal(logits, y, signal="taylor_soft_margin", temperature=2.0, margin=0.6,
                                           taylor_order=4), [1.4906667 / 3.0948333], rtol=1e-6)
  # The soft margin with the true exp (order high enough): exp(1 - 0.6) / (exp(1 - 0.6) + 1 + exp(-0.5)).
  e = np.exp
  np.testing.assert_allclose(R.rmia_signal(logits, y, signal="taylor_soft_margin", temperature=2.0, margin=0.6,
                                           taylor_order=20), [e(0.4) / (e(0.4) + 1 + e(-0.5))], rtol=1e-5)
  np.testing.assert_allclose(e(0.4) / (e(0.4) + 1 + e(-0.5)), 0.4814892, rtol=1e-6)
  # The cubic goes negative below -1.596 (its one real root): the coded "probability" leaves [0, 1].
  assert R._taylor_exp(-1.59, 4) > 0 > R._taylor_exp(-1.60, 4)
  assert float(R.rmia_signal(np.array([[0.0, -8.0, -8.0]]), y, signal="taylor_soft_margin")[0]) < 0


def test_logits_from_log_probs_keeps_softmax_signals():
  logits = np.random.default_rng(0).normal(size=(5, 4)) * 3
  y = np.arange(5) % 4
  lp = jax.nn.log_softmax(logits)
  np.testing.assert_allclose(R.rmia_signal(R.logits_from_log_probs(lp), y, signal="softmax", temperature=2.0),
                             R.rmia_signal(logits, y, signal="softmax", temperature=2.0), rtol=1e-5)
  centred = logits - logits.mean(-1, keepdims=True)
  np.testing.assert_allclose(R.rmia_signal(R.logits_from_log_probs(lp), y), R.rmia_signal(centred, y), rtol=1e-4)


def test_trimmed_mean_matches_scipy_and_respects_the_mask():
  from scipy.stats import trim_mean
  rng = np.random.default_rng(1)
  v = rng.normal(size=(10, 6, 2))
  full = np.ones((10, 6), bool)
  np.testing.assert_allclose(R.trimmed_mean(v, full, 0.2), trim_mean(v, 0.2, axis=0), rtol=1e-5)
  mask = rng.random((10, 6)) < 0.6
  mask[:2] = True
  got = np.asarray(R.trimmed_mean(v, mask, 0.2))
  for n in range(6):
    np.testing.assert_allclose(got[n], trim_mean(v[mask[:, n], n], 0.2, axis=0), rtol=1e-5)


def test_fast_path_equals_brute_force_and_majority_vote():
  rng = np.random.default_rng(2)
  rx, rz = rng.lognormal(size=(300, 1)), rng.lognormal(size=(257, 1))
  brute = np.asarray(R._pairwise_chunk(rx.astype(np.float32), rz.astype(np.float32), 1.3)) / 257
  np.testing.assert_array_equal(R.fast_pairwise_scores(rx[:, 0], rz[:, 0], 1.3), brute)
  # Ties at the edge (quotients exactly gamma) agree too.
  rz_t = np.array([[0.5], [1.0], [0.25], [2.0]], np.float32)
  rx_t = np.array([[1.0], [2.0], [0.5], [4.0]], np.float32)
  np.testing.assert_array_equal(R.fast_pairwise_scores(rx_t[:, 0], rz_t[:, 0], 2.0),
                                np.asarray(R._pairwise_chunk(rx_t, rz_t, 2.0)) / 4)
  # 18 views, chunked == one chunk == a loop; 9 of 18 votes lose.
  rx18, rz18 = rng.lognormal(size=(37, 18)), rng.lognormal(size=(23, 18))
  loop = np.array([[(np.sum(rx18[i] / rz18[j] > 1.0) * 2 > 18) for j in range(23)] for i in range(37)]).mean(1)
  np.testing.assert_allclose(R.pairwise_scores(rx18, rz18, 1.0, chunk_elements=23 * 18 * 5), loop)
  np.testing.assert_allclose(R.pairwise_scores(rx18, rz18, 1.0), loop)
  half = np.r_[np.full(9, 3.0), np.full(9, 0.1)][None]
  assert R.pairwise_scores(half, np.ones((1, 18)), 1.0)[0] == 0.0
  assert R.pairwise_scores(np.r_[np.full(10, 3.0), np.full(8, 0.1)][None], np.ones((1, 18)), 1.0)[0] == 1.0


def _game(rng, k=4, n=40, z=30, a=1):
  keep = np.zeros((k, n), bool)
  for i in range(n):
    keep[rng.permutation(k)[: k // 2], i] = True
  return (rng.uniform(0.1, 1, (n, a)), rng.uniform(0.1, 1, (k, n, a)), keep, rng.uniform(0.1, 1, (z, a)),
          rng.uniform(0.1, 1, (k, z, a)))


@pytest.mark.parametrize("online", [True, False])
def test_rmia_invariances(online):
  rng = np.random.default_rng(3)
  tx, rx, keep, tz, rz = _game(rng)
  kw = dict(online=online, gamma=1.5, offline_a=0.3)
  s = R.rmia(tx, rx, keep, tz, rz, **kw)
  chex.assert_shape(s, (40,))
  assert ((s >= 0) & (s <= 1)).all() and np.allclose(s * 30, np.round(s * 30))
  np.testing.assert_allclose(R.rmia(3.7 * tx, rx, keep, 3.7 * tz, rz, **kw), s)   # scale of theta's signals
  up = tx.copy()
  up[0] *= 1.5
  assert R.rmia(up, rx, keep, tz, rz, **kw)[0] >= s[0]                          # monotone in p(x|theta)


def test_rmia_target_equal_to_reference_scores_zero():
  """If theta's signal equals P(.) everywhere, every LR is 1 and gamma >= 1 gives 0 (offline with a = 1)."""
  rng = np.random.default_rng(4)
  _, rx, keep, _, rz = _game(rng, k=4)
  rx[:] = rx[:1]
  rz[:] = rz[:1]
  assert (R.rmia(rx[0], rx, keep, rz[0], rz, online=False, gamma=1.0, offline_a=1.0) == 0).all()


def test_rmia_with_constant_reference_is_the_population_rank():
  """P constant and gamma = 1: Score(x) = #{z : p(z) < p(x)} / |Z| = 1 - Attack-P (Ye et al. 2022) on -log p."""
  rng = np.random.default_rng(5)
  tx, rx, keep, tz, rz = _game(rng)
  rx[:], rz[:] = 0.4, 0.4
  s = R.rmia(tx, rx, keep, tz, rz, online=False, gamma=1.0, offline_a=1.0)
  loss_x, loss_z = -np.log(tx[:, 0]), -np.log(tz[:, 0])
  attack_p = (loss_z[None] < loss_x[:, None]).mean(1)
  np.testing.assert_allclose(s, 1 - attack_p)


def test_reference_selection_by_index():
  keep = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 1], [0, 1, 1], [1, 0, 0]], bool)
  sel = R.first_in_and_out(keep)
  # Example 0: IN {0, 1, 4}, OUT {2, 3}: k = 2 -> IN {0, 1}, OUT {2, 3}.
  np.testing.assert_array_equal(sel[:, 0], [1, 1, 1, 1, 0])
  # Example 2: IN {0, 2, 3}, OUT {1, 4}.
  np.testing.assert_array_equal(sel[:, 2], [1, 1, 1, 0, 1])
  # Offline: exactly the OUT models (a large OUT signal is not dropped for a small one, no zero padding).
  rx = np.zeros((5, 3, 1))
  rx[:, 0, 0] = [9, 9, 0.2, 0.6, 9]
  p = np.asarray(R.trimmed_mean(rx, ~keep, 0.2))
  assert p[0, 0] == pytest.approx(0.4)


@pytest.mark.parametrize("kw,match", [
    (dict(gamma=0.0), "gamma must be > 0"), (dict(offline_a=1.2), r"a must lie in \[0, 1\]"),
    (dict(offline_a=-0.1), r"a must lie in \[0, 1\]")])
def test_rmia_bad_parameters(kw, match):
  tx, rx, keep, tz, rz = _game(np.random.default_rng(6))
  with pytest.raises(UserError, match=match):
    R.rmia(tx, rx, keep, tz, rz, online=False, **{**dict(gamma=1.0, offline_a=0.3), **kw})


def test_offline_needs_an_out_model_for_every_candidate():
  tx, rx, keep, tz, rz = _game(np.random.default_rng(7))
  keep[:, 5] = True
  with pytest.raises(UserError, match="1 candidates have none"):
    R.rmia(tx, rx, keep, tz, rz, online=False, gamma=1.0, offline_a=0.3)
  with pytest.raises(UserError, match="online RMIA needs"):
    R.rmia(tx, rx, keep, tz, rz, online=True, gamma=1.0, offline_a=0.3)


def test_tune_offline_a_uses_the_attackers_models_and_returns_the_grid():
  rng = np.random.default_rng(8)
  tx, rx, keep, tz, rz = _game(rng, k=6)
  rx = rx + 0.5 * keep[..., None]   # members score higher in the models that trained on them
  a, aucs = R.tune_offline_a(rx, keep, rz, gamma=1.0)
  assert set(aucs) == {i / 10 for i in range(11)} and aucs[a] == max(aucs.values())
  with pytest.raises(UserError, match=">= 4 shadow models"):
    R.tune_offline_a(rx[:2], keep[:2], rz[:2], gamma=1.0)
