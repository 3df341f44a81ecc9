"""Proving theft after the fact: Dataset Inference's Blind Walk and test, DAWN's per-client watermark, IPGuard's
fingerprint, and the verdicts drawn from them."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from mlpriv_jax import data, defences, models, train
from mlpriv_jax.defences import dawn as dawn_defence
from mlpriv_jax.errors import UserError
from mlpriv_jax.oracle import Victim
from mlpriv_jax.ownership import dataset_inference as DI
from mlpriv_jax.ownership import dawn as DW
from mlpriv_jax.ownership import ipguard as IG
from mlpriv_jax.ownership import verdicts


class _Constant:
  """An oracle whose top-1 is always `label(x)` (a stand-in suspect), counting its queries."""

  def __init__(self, label, num_classes=10):
    self.label, self.num_classes, self.input_shape, self.queries_used, self.budget_left = label, num_classes, \
        (32, 32, 3), 0, None

  def query(self, x):
    self.queries_used += len(x)
    return np.eye(self.num_classes, dtype=np.float32)[self.label(np.asarray(x))]


WALK = DI.DatasetInferenceOptions(num_directions=4, max_steps=6, chunk=3)


def _points(n=7):
  x = np.asarray(jax.random.uniform(jax.random.key(0), (n, 32, 32, 3)), np.float32)
  return x, np.arange(n) % 10


def test_blind_walk_distances_and_queries_by_hand():
  x, y = _points()
  key = jax.random.key(1)
  base = np.stack([np.asarray(DI._directions(jax.random.fold_in(key, i), (32, 32, 3), 4)) for i in range(len(x))])
  norm = lambda d: np.stack([np.abs(d[:, 0]).max((-3, -2, -1)), np.sqrt((d[:, 1] ** 2).sum((-3, -2, -1))),
                             np.abs(d[:, 2]).sum((-3, -2, -1))], 1)
  at = lambda k: norm(np.clip(x[:, None, None] + k * base, 0, 1) - x[:, None, None])
  # A suspect that never gives the true label: every walk stops at k = 1, one query each.
  wrong = _Constant(lambda q: np.full(len(q), 0))
  d, q = DI.blind_walk(wrong, x, np.full(len(x), 5), key, WALK)
  chex.assert_shape(d, (len(x), 3, 4))
  np.testing.assert_allclose(d, at(1), rtol=1e-5)
  assert q == wrong.queries_used == len(x) * 3 * 4
  # One that always does: no walk flips, each ends at k = max_steps + 1 after max_steps queries.
  right = _Constant(lambda q: np.full(len(q), 1))
  d, q = DI.blind_walk(right, x, np.full(len(x), 1), key, WALK)
  np.testing.assert_allclose(d, at(7), rtol=1e-5)
  assert q == len(x) * 3 * 4 * 6
  # The walks do not depend on how the points are chunked
  d3, _ = DI.blind_walk(right, x, np.full(len(x), 1), key, dataclasses.replace(WALK, chunk=5))
  np.testing.assert_array_equal(d3, d)


def test_blind_walk_distances_of_a_linear_model_are_its_closed_form_distances_to_the_boundary():
  """A binary linear suspect, label 1 iff w.x + b > 0, at margin m = w.x + b > 0: along direction delta with
  w.delta < 0 its boundary is t* = m / -(w.delta) steps away, so the walk flips at k = ceil(t*) and its feature is
  ceil(t*) ||delta||_p (wherever the walk stays inside [0, 1]); a direction with w.delta >= 0 never flips."""
  x = np.full((3, 32, 32, 3), 0.5, np.float32)   # three points, each walking its own directions
  w = np.asarray(jax.random.normal(jax.random.key(7), (32 * 32 * 3,)), np.float64)
  margin = 0.3
  b = margin - float(x[0].reshape(-1).astype(np.float64) @ w)
  linear = _Constant(lambda q: (q.reshape(len(q), -1).astype(np.float64) @ w + b > 0).astype(int))
  o = DI.DatasetInferenceOptions(num_directions=6, max_steps=50)
  key = jax.random.key(8)
  d, _ = DI.blind_walk(linear, x, np.ones(3, int), key, o)
  checked = 0
  for i in range(3):
    base = np.asarray(DI._directions(jax.random.fold_in(key, i), (32, 32, 3), o.num_directions), np.float64)
    for n in range(3):
      for j in range(o.num_directions):
        delta = base[n, j]
        slope = float(delta.ravel() @ w)
        if slope >= 0:
          continue
        t = margin / -slope
        k = int(np.ceil(t))
        if k > o.max_steps or np.abs(k * delta).max() >= 0.49 or abs(t - round(t)) < 1e-3:
          continue   # clipped at [0, 1], never flipped, or on a step's edge (float rounding decides)
        size = [np.abs(delta).max(), np.sqrt((delta ** 2).sum()), np.abs(delta).sum()][n]
        np.testing.assert_allclose(d[i, n, j], k * size, rtol=1e-4)
        assert t * size <= d[i, n, j] * (1 + 1e-4) < (t + 1) * size
        checked += 1
  assert checked >= 10, checked


def test_blind_walk_stops_each_walk_when_its_label_flips():
  """A suspect whose label flips once the image's mean moves by more than 0.002: every walk stops at its own k."""
  x, y = _points(4)
  x = np.full_like(x, 0.5)
  flip = _Constant(lambda q: np.where(np.abs(q.mean((1, 2, 3)) - 0.5) > 2e-3, 9, 0))
  d, q = DI.blind_walk(flip, x, np.zeros(4, int), jax.random.key(2), DI.DatasetInferenceOptions(max_steps=50))
  assert 4 * 30 < q < 4 * 30 * 50 and np.all(d > 0)


def test_embedding_is_one_row_per_point_norm_major():
  d = np.arange(12, dtype=np.float32).reshape(2, 3, 2)   # [points, norms, directions]
  e = DI.embed(d, mean=np.zeros(3), std=np.ones(3))
  np.testing.assert_array_equal(e[0], [0, 1, 2, 3, 4, 5])
  np.testing.assert_array_equal(DI.embed(d, np.array([0, 2, 4]), np.array([1, 2, 4]))[1], [6, 7, 3, 3.5, 1.5, 1.75])


def test_p_value_is_small_when_public_scores_higher_and_not_otherwise():
  o = DI.DatasetInferenceOptions(num_resamples=20)
  r = np.random.default_rng(0)
  key = jax.random.key(3)
  assert DI.p_value(r.normal(0, 1, 50), r.normal(3, 1, 50), key, o) < 1e-3
  assert DI.p_value(r.normal(0, 1, 50), r.normal(0, 1, 50), key, o) > 0.05
  assert DI.p_value(r.normal(3, 1, 50), r.normal(0, 1, 50), key, o) > 0.9
  with pytest.raises(UserError, match="reveals 10 points"):
    DI.p_value(np.zeros(5), np.zeros(5), key, o)


def test_p_value_of_one_draw_of_every_point_is_welchs_one_sided_test():
  """With m = n and one draw, the p-value is scipy's one-sided Welch test, and that is Welch's t and
  Welch-Satterthwaite's degrees of freedom worked by hand."""
  r = np.random.default_rng(2)
  priv, pub = r.normal(0, 1, 12), r.normal(0.7, 2, 12)
  o = DI.DatasetInferenceOptions(num_revealed=12, num_resamples=1)
  p = DI.p_value(priv, pub, jax.random.key(5), o)
  want = scipy.stats.ttest_ind(pub, priv, equal_var=False, alternative="greater").pvalue
  va, vb = pub.var(ddof=1) / 12, priv.var(ddof=1) / 12
  t = (pub.mean() - priv.mean()) / np.sqrt(va + vb)
  df = (va + vb) ** 2 / (va ** 2 / 11 + vb ** 2 / 11)
  assert p == pytest.approx(want, rel=1e-12) and p == pytest.approx(scipy.stats.t.sf(t, df), rel=1e-9)


def test_regressor_separates_what_it_is_trained_on():
  r = np.random.default_rng(1)
  priv, pub = r.normal(0, 1, (40, 30)).astype(np.float32), r.normal(0.8, 1, (40, 30)).astype(np.float32)
  g = DI.fit_regressor(jax.random.key(4), priv, pub, DI.DatasetInferenceOptions(regressor_steps=300))
  assert float(DI.regressor(g, pub).mean()) > float(DI.regressor(g, priv).mean()) + 0.5


# --- DAWN ---------------------------------------------------------------------------------------------------------

MASTER = b"0123456789abcdef0123456789abcdef"


def test_dawn_triggers_at_its_rate_per_client_and_alters_only_them():
  x = np.asarray(jax.random.randint(jax.random.key(5), (4000, 32, 32, 3), 0, 256), np.uint8)
  a, b = (dawn_defence.client_secret(MASTER, bytes([c]) * 8) for c in (1, 2))
  ta, tb = dawn_defence.triggers(a, x, 0.05), dawn_defence.triggers(b, x, 0.05)
  assert 140 < ta.sum() < 260 and 140 < tb.sum() < 260   # 200 expected; 5 sd either side
  assert (ta & tb).sum() < 30                             # two clients' triggers are independent (10 expected)
  # a pure function of (secret, query bytes): the same triggers in any batch split
  np.testing.assert_array_equal(np.concatenate([dawn_defence.triggers(a, x[:1234], 0.05),
                                                dawn_defence.triggers(a, x[1234:], 0.05)]), ta)
  # a float query triggers as the 8-bit image it encodes
  np.testing.assert_array_equal(dawn_defence.triggers(a, x.astype(np.float32) / 255, 0.05), ta)
  # through the service: only triggers change, by a swap that moves the top-1; the rest is bit-equal
  probs = np.asarray(jax.nn.softmax(jax.random.normal(jax.random.key(6), (4000, 10))))
  d = defences.build("dawn", 0.05, watermark_master=MASTER)
  out, _ = d.apply(jnp.asarray(x, jnp.float32) / 255, jnp.asarray(probs), dawn_defence.DawnState(jnp.asarray(a)), None)
  out = np.asarray(out)
  np.testing.assert_array_equal(out[~ta], probs[~ta])
  assert np.all(out[ta].argmax(-1) != probs[ta].argmax(-1))
  np.testing.assert_allclose(np.sort(out, -1), np.sort(probs, -1))   # a permutation of each answer
  halves = [np.asarray(d.apply(jnp.asarray(x[s:s + 700], jnp.float32) / 255, jnp.asarray(probs[s:s + 700]),
                               dawn_defence.DawnState(jnp.asarray(a)), None)[0]) for s in (0, 700)]
  np.testing.assert_array_equal(np.concatenate(halves), out[:1400])   # and answers alike in any batch split
  # vmapped over clients (the shape a vmapped account takes)
  both = jax.vmap(lambda s: d.apply(jnp.asarray(x[:64], jnp.float32) / 255, jnp.asarray(probs[:64]), s, None)[0])(
      dawn_defence.DawnState(jnp.asarray(np.stack([a, b]))))
  np.testing.assert_array_equal(np.asarray(both[0]), out[:64])


def test_dawn_key_file_holds_a_secret_of_at_least_16_bytes(tmp_path):
  """The served watermark's master secret comes from the provider's key file, refused at startup unless it holds
  16 bytes or more of hex (and asked for by --defence=dawn alone)."""
  from mlpriv_jax.lab import serving
  path = tmp_path / "dawn.json"
  for text, match in (('{"secret": "00112233445566778899aabbccddeeff"}', None),
                      ('{"key": "00112233445566778899aabbccddeeff"}', "holds no secret"),
                      ('{"secret": ""}', "holds no secret"), ('["00"]', "holds no secret"),
                      ('{"secret": "00112233445566778899aabbccddee"}', "the secret is 15 bytes; DAWN needs at least 16"),
                      ('{"secret": "not hex at all, not hex at all"}', "not hexadecimal"), ('{"secret": ', "is not JSON")):
    path.write_text(text)
    if match is None:
      assert dawn_defence.read_master(str(path)) == bytes(range(0, 256, 17))
    else:
      with pytest.raises(UserError, match=match):
        dawn_defence.read_master(str(path))
  with pytest.raises(UserError, match="no such file"):
    dawn_defence.read_master(str(tmp_path / "missing.json"))
  # refused before the artifact or the keys are read
  with pytest.raises(UserError, match="--defence=dawn needs --dawn_key_file"):
    serving.build(victim="nowhere", keys_file="nowhere", defence="dawn", strength=0.005)
  with pytest.raises(UserError, match="--defence=round2 takes none"):
    serving.build(victim="nowhere", keys_file="nowhere", defence="round2", dawn_key_file=str(path))


@pytest.fixture(scope="module")
def shapes():
  """A cnn_tiny victim on 300 shapes10 images (overfit, confident) and an independent one on 300 others."""
  ds = data.load_dataset("shapes10")
  cfg = train.TrainConfig(num_epochs=40, batch_size=32, learning_rate=0.05, momentum=0.9, schedule="cosine",
                          augment=False)
  m = models.get_model("cnn_tiny", 10)
  victim = train.variables_of(train.train(m, cfg, ds.x_train[:300], ds.y_train[:300], jax.random.key(7)).state)
  other = train.variables_of(train.train(m, cfg, ds.x_train[300:600], ds.y_train[300:600],
                                         jax.random.key(8)).state)
  return ds, m, victim, other


def test_ipguard_fingerprint_crosses_the_boundary_and_tells_copies_from_independent_models(shapes):
  ds, m, victim, other = shapes
  logits = jax.jit(lambda x: m.apply(victim, x, train=False)[0])
  fp = IG.fingerprint(logits, ds.x_test, jax.random.key(13), 10, IG.IPGuardOptions(num_points=40, max_steps=200))
  assert fp.x.dtype == np.float32 and fp.x.min() >= 0 and fp.x.max() <= 1 and fp.crossed > 0.9
  own = IG.matches(fp, Victim(m, victim))
  indep = IG.matches(fp, Victim(m, other))
  assert own == dict(matched=40, points=40, queries=40)
  assert indep["matched"] < 30, indep


def test_dataset_inference_tells_the_victim_from_an_independent_model(shapes):
  """The victim's own held-out half is flagged (p < 0.01) with a p-value ten times smaller and a statistic twice as
  large as a model trained on other data of the same distribution (such models are not at p ~ 1: the hard negatives
  that the arena calibrates the verdict on)."""
  ds, m, victim, other = shapes
  o = DI.DatasetInferenceOptions(num_directions=4, max_steps=30, num_resamples=30, regressor_steps=500, chunk=30)
  ev = DI.prepare(Victim(m, victim), ds.x_train[:60], ds.y_train[:60], ds.x_test[:60], ds.y_test[:60],
                  jax.random.key(14), o)
  suspect = Victim(m, victim)
  own = DI.verify(ev, suspect)
  indep = DI.verify(ev, Victim(m, other))
  assert own["queries"] == suspect.queries_used > 0
  assert own["p_value"] < 0.01 and indep["p_value"] > 10 * own["p_value"], (own, indep)
  assert own["statistic"] > 2 * indep["statistic"], (own, indep)


def test_detection_rates_by_hand():
  pos, neg = [1e-4, 0.02, 0.3], [0.5, 0.04, 0.9, 0.2]
  d = verdicts.detection(pos, neg, fprs=(0.01, 0.25))
  assert d["tpr_at_0.01"] == pytest.approx(2 / 3)   # no negative flagged: p < 0.04
  assert d["tpr_at_0.25"] == pytest.approx(2 / 3)   # one negative allowed: p < 0.2
  assert d["tpr_p<0.01"] == pytest.approx(1 / 3) and d["fpr_p<0.25"] == pytest.approx(0.5)
  assert verdicts.binomial_p(10, 10, 0.5) == pytest.approx(1 / 1024)
  assert verdicts.binomial_p(0, 10, 0.5) == 1.0 and verdicts.binomial_p(3, 0, 0.1) == 1.0


def test_dawn_triggers_needed_by_hand():
  """A suspect agreeing with every trigger against a null rate floored at 1 / (n + 1): p = (n + 1)^-n, so 3 triggers
  reach 5% (1/64) and 4 reach 1% (1/625); against a null rate of 0.5, all n agree with p = 2^-n: 7 for 1%."""
  assert DW.triggers_needed(1.0, 0.0, 0.05) == 3 and DW.triggers_needed(1.0, 0.0, 0.01) == 4
  assert DW.triggers_needed(1.0, 0.5, 0.01) == 7
  with pytest.raises(ValueError, match="no more than the null rate"):
    DW.triggers_needed(0.1, 0.1, 0.05)
