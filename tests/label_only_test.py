"""Label-only membership attacks (Choquette-Choo et al. 2021; Li & Zhang 2021): goldens and invariances."""

import math

import jax
import numpy as np
import pytest
from scipy.stats import norm

from mlpriv_jax import defences, models
from mlpriv_jax.attacks import membership as M
from mlpriv_jax.attacks.membership import label_only as L
from mlpriv_jax.errors import UserError
from mlpriv_jax.oracle import BudgetExceeded, Service, Victim

# A 2-class linear model: logits (0, w.x + b), w = (3, 4), b = -3.5; x = (1, 1) is class 1 at L2 distance 0.7
# from the boundary, whose closest point (0.58, 0.44) lies inside [0, 1]^2.
W, B = np.array([3.0, 4.0]), -3.5


def _linear_decide(x, idx):
  del idx
  return np.asarray(x) @ W + B <= 0     # adversarial: label 0 (argmax of a tie is 0)


def _linear_labels(x):
  return (np.asarray(x).reshape(len(x), -1) @ W + B > 0).astype(int)


def test_translations_paper_code_order():
  assert L.translations(1) == [(0, 0), (1, 0), (0, -1), (-1, 0), (0, 1)]
  for d in (2, 3):
    t = L.translations(d)
    assert len(t) == 4 * d + 1 and len(set(t)) == len(t) and all(abs(a) + abs(b) in (0, d) for a, b in t)


def test_translate_replicates_edges_like_scipy_nearest():
  from scipy.ndimage import shift
  img = np.random.default_rng(0).integers(0, 255, (2, 5, 6, 3)).astype(np.uint8)
  for dy, dx in L.translations(2):
    np.testing.assert_array_equal(L.translate(img, dy, dx), shift(img, (0, dy, dx, 0), mode="nearest", order=0))


def test_gap_golden():
  """Train accuracy 1.0, test accuracy 0.6: balanced accuracy (and AUC of the binary score)
  (1 + 1.0 - 0.6) / 2 = 0.7 (the paper code prints 50 + (train - test) * 50 = 70%)."""
  labels = np.zeros(10, int)
  predicted = np.r_[np.zeros(5, int), np.zeros(3, int), np.ones(2, int)]
  s = L.gap_score(lambda x: predicted, np.zeros((10, 1, 1, 1), np.float32), labels)
  r = M.membership_report(s, np.arange(10) < 5, num_bootstrap=0)
  assert r["auc"] == pytest.approx(0.7) and r["balanced_accuracy"] == pytest.approx(0.7)


def test_art_calibration_golden():
  tau, acc = L.calibrate_threshold([3, 4, 5], [1, 2, 6])
  assert tau == pytest.approx(34 * 0.06) and acc == pytest.approx(5 / 6)


def test_hopskipjump_finds_the_linear_boundary_from_above():
  x0 = np.array([[1.0, 1.0]], np.float32)
  r = L.hopskipjump_l2(_linear_decide, x0, jax.random.key(0), gamma=1e-3)
  assert r.found.all() and 0.7 - 1e-6 <= r.distance[0] <= 0.7 * 1.02, r.distance
  assert _linear_decide(r.adversarial, None).all()
  assert r.gradient_queries[0] == sum(int(min(100 * math.sqrt(j), 1e4)) for j in range(1, 65)) == 34487
  assert r.queries[0] <= L.hsj_max_queries(2, gamma=1e-3)
  # A per-example cap is never passed, and fewer queries give a coarser (never smaller) distance.
  capped = L.hopskipjump_l2(_linear_decide, x0, jax.random.key(0), gamma=1e-3, max_queries=400)
  assert capped.queries[0] <= 400 and capped.distance[0] >= 0.7 - 1e-6


def test_hopskipjump_stops_at_distance_zero_when_the_original_is_answered_adversarial():
  """A randomised defence can flip x0's own label: the binary search then ends on x0 (distance 0) and the
  gradient step would divide by a probe radius of 0 (the cpu arena's label_boundary x gaussian cell sent NaNs)."""
  def decide(x, idx):
    assert np.isfinite(x).all()
    return np.ones(len(x), bool)   # every point adversarial, x0 included
  x0 = np.full((3, 12), 0.5, np.float32)
  r = L.hopskipjump_l2(decide, x0, jax.random.key(0), num_iterations=3, initial_num_evals=4)
  # the start and each step halve the distance to x0 until float32 cannot tell them apart; then it stops
  assert r.found.all() and (r.distance == 0).all() and (r.gradient_queries < 4 + 5 + 6).all()


def test_noise_score_on_the_linear_model():
  """E[score] = Phi(distance / sigma) (no clipping matters here); misclassified points score 0."""
  x = np.array([[0.6, 0.6], [0.3, 0.3]], np.float32).reshape(2, 1, 1, 2)   # class 1 at 0.14; class 0
  s = L.noise_robustness(_linear_labels, x, np.array([1, 1]), jax.random.key(0), sigma=0.14, num_samples=20000)
  assert s[0] == pytest.approx(norm.cdf(1.0), abs=0.01) and s[1] == 0
  tiny = L.noise_robustness(_linear_labels, x, np.array([1, 1]), jax.random.key(0), sigma=1e-4, num_samples=37)
  assert tiny[0] == 1.0 and np.allclose(s * 20000, np.round(s * 20000))


class _IdealMemGuard:
  """The label-only paper code's idealised MemGuard: 1/K + eps at the argmax, 1/K - eps/(K-1) elsewhere."""

  def __init__(self, oracle, eps=1e-3):
    self._o, self.eps = oracle, eps
    self.num_classes, self.input_shape = oracle.num_classes, oracle.input_shape

  def query(self, x):
    p = self._o.query(x)
    k = p.shape[-1]
    out = np.full_like(p, 1 / k - self.eps / (k - 1))
    out[np.arange(len(p)), p.argmax(-1)] = 1 / k + self.eps
    return out

  queries_used = property(lambda self: self._o.queries_used)
  budget_left = property(lambda self: self._o.budget_left)


def test_ideal_memguard_golden():
  base = Victim.from_apply(lambda x: x.reshape(len(x), -1)[:, :10] * 10, 10, (1, 1, 10))
  p = _IdealMemGuard(base).query(np.random.default_rng(0).random((4, 1, 1, 10)).astype(np.float32))
  assert np.allclose(p.max(-1), 0.101) and np.allclose(np.sort(p, -1)[:, :-1], 0.0998889, atol=1e-7)
  assert np.allclose(p.sum(-1), 1)


@pytest.fixture(scope="module")
def tiny_game():
  """(inputs, client): a 4-class game of 24 images; client(defence=None | 'label', **account) is a new account of
  one of two services compiled once for the module."""
  model = models.get_model("cnn_tiny", 4)
  variables = model.init(jax.random.key(1), np.zeros((1, 8, 8, 3), np.float32))
  services = {d: Service.from_model(model, variables, input_shape=(8, 8, 3), defence=d and defences.build(d))
              for d in (None, "label")}
  client = lambda defence=None, **kw: Victim.of(services[defence], **kw)
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (24, 8, 8, 3)).astype(np.uint8)
  labels = client().query(images).argmax(-1)
  labels[:6] = (labels[:6] + 1) % 4          # a quarter misclassified
  keep = np.zeros((2, 24), bool)
  keep[0, ::2], keep[1, 1::2] = True, True
  return M.QueryInputs(images, labels, keep, lambda k: client()), client


SMALL = dict(gap=M.NoOptions(), label_augmentation=M.LabelAugmentationOptions(d=1),
             label_noise=M.LabelNoiseOptions(num_samples=8, sigma=0.1, num_calibration=24),
             label_boundary=M.LabelBoundaryOptions(max_queries=80, initial_num_evals=10, num_calibration=24))


@pytest.mark.parametrize("name", list(SMALL))
def test_label_only_scores_ignore_argmax_preserving_outputs(tiny_game, name):
  """Label-only scores are bit-identical behind the `label` defence and the idealised MemGuard; misclassified
  points score 0 (gap, noise, boundary); every query is counted."""
  inputs, client = tiny_game
  plain, label, guard = client(), client("label"), _IdealMemGuard(client())
  outs = [M.query_attack(name, o, inputs, jax.random.key(2), SMALL[name]) for o in (plain, label, guard)]
  for s, _ in outs[1:]:
    np.testing.assert_array_equal(s, outs[0][0])
  if name != "label_augmentation":
    assert (outs[0][0][:6] == 0).all()
  assert plain.queries_used == label.queries_used > 0
  if name == "label_boundary":
    assert plain.queries_used <= 24 * 80 and outs[0][1]["threshold"] >= 0


@pytest.mark.parametrize("name", ["label_augmentation", "label_noise", "label_boundary"])
def test_memo_fits_the_shadow_side_once_for_every_target(tiny_game, name):
  """With a memo (the arena's, one per victim), the second target's attack asks the shadows nothing and scores as
  a fresh attack does; another key or another option is fitted anew."""
  inputs, client = tiny_game
  asked = []
  shadow = lambda k: (asked.append(k), client())[1]
  memo = {}
  mine = inputs._replace(shadow_oracle=shadow, memo=memo)
  label = lambda: client("label")
  first = M.query_attack(name, label(), mine, jax.random.key(2), SMALL[name])
  n = len(asked)
  assert n > 0 and len(memo) == 1
  second = M.query_attack(name, client(), mine, jax.random.key(2), SMALL[name])
  fresh = M.query_attack(name, label(), inputs, jax.random.key(2), SMALL[name])
  assert len(asked) == n                                    # nothing asked of the shadows the second time
  for s, extras in (second, fresh):
    np.testing.assert_array_equal(s, first[0])
    assert {k: v for k, v in extras.items() if k != "num_calibration"} == \
        {k: v for k, v in first[1].items() if k != "num_calibration"}
  M.query_attack(name, label(), mine, jax.random.key(3), SMALL[name])
  assert len(asked) == 2 * n and len(memo) == 2           # another key: fitted again


def test_label_only_budget_too_small_is_one_line(tiny_game):
  inputs, client = tiny_game
  small = client(budget=100)
  with pytest.raises(BudgetExceeded, match="label_augmentation needs up to 5 queries per example, 120 for 24") as e:
    M.query_attack("label_augmentation", small, inputs, jax.random.key(0))
  assert "\n" not in str(e.value) and small.queries_used == 0
  with pytest.raises(BudgetExceeded, match="label_boundary needs up to 80 queries per example"):
    M.query_attack("label_boundary", small, inputs, jax.random.key(0), M.LabelBoundaryOptions(max_queries=80))
  # 8 x 8 x 3 inputs: HopSkipJump's start needs 1 + 10 + ceil(log2(192^1.5)) = 23 queries, plus the label.
  with pytest.raises(UserError, match="label_boundary needs max_queries >= 24 per example"):
    M.query_attack("label_boundary", small, inputs, jax.random.key(0), M.LabelBoundaryOptions(max_queries=23))
  assert small.queries_used == 0
