"""DP-SGD (clipping, noise, Poisson sampling, the engine), its accounting and its audit (the 'dp' extra)."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from conftest import program
from mlpriv_jax import data, dp, models, train
from mlpriv_jax.errors import UserError
from mlpriv_jax.train import dpsgd

B = 16   # the expected batch size of the gradient tests


@pytest.fixture(scope="module")
def shapes():
  ds = data.load_dataset("shapes10")
  return ds.x_train[:512], ds.y_train[:512]


@pytest.fixture(scope="module")
def tiny():
  m = models.get_model("cnn_tiny_gn", 10, conv_impl="lax")
  return m, m.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]


def _batch(x, y, mask):
  return {"x": jnp.asarray(x)[None], "y": jnp.asarray(y)[None], "mask": jnp.asarray(mask)[None]}


def _dp_grad(model, params, batch, *, sigma=0.0, clip=1.0, augmult=1, augment=False, key=1, expected=B):
  fn = dpsgd.make_dp_grad_fn(model, dpsgd.DPConfig(sigma, clip, augmult=augmult), expected, augment=augment)
  return jax.jit(fn)(params, {}, batch, jax.random.key(key))


def _norm(tree):
  return float(jnp.sqrt(sum(jnp.sum(t ** 2) for t in jax.tree.leaves(tree))))


def test_each_example_is_clipped_to_C(shapes, tiny):
  model, params = tiny
  x, y = shapes[0][:B], shapes[1][:B]
  plain = jax.jit(train.make_grad_fn(model, augment=False))
  clip = 0.05   # below every per-example norm here, so each is scaled
  for j in (0, 5, 11):
    mask = np.arange(B) == j
    g, _ = _dp_grad(model, params, _batch(x, y, mask), clip=clip)
    g_j, _ = plain(params, {}, {"x": jnp.asarray(x[j : j + 1]), "y": jnp.asarray(y[j : j + 1])}, jax.random.key(1))
    clipped = jax.tree.map(lambda t: t * B, g)   # the sum of one clipped row
    assert _norm(g_j) > clip and _norm(clipped) <= clip * (1 + 1e-6)
    chex.assert_trees_all_close(clipped, jax.tree.map(lambda t: t * clip / _norm(g_j), g_j), atol=1e-7, rtol=1e-5)


def test_augmult_views_share_one_clipped_vector(shapes, tiny):
  model, params = tiny
  x, y = shapes[0][:B], shapes[1][:B]
  g, _ = _dp_grad(model, params, _batch(x, y, np.arange(B) == 3), clip=0.05, augmult=4, augment=True)
  assert _norm(g) * B <= 0.05 * (1 + 1e-6)


def test_sigma_zero_and_no_clipping_is_plain_sgd(shapes, tiny):
  model, params = tiny
  x, y = shapes[0][:B], shapes[1][:B]
  g, aux = _dp_grad(model, params, _batch(x, y, np.ones(B, bool)), clip=math.inf)
  ref, ref_aux = jax.jit(train.make_grad_fn(model, augment=False))(params, {}, {"x": jnp.asarray(x),
                                                                              "y": jnp.asarray(y)},
                                                                   jax.random.key(1))
  chex.assert_trees_all_close(g, ref, atol=1e-6, rtol=1e-5)
  np.testing.assert_allclose(aux["loss"], ref_aux["loss"], rtol=1e-5)
  np.testing.assert_allclose(aux["logits"][0], ref_aux["logits"], atol=1e-5)


def test_padded_rows_contribute_nothing(shapes, tiny):
  model, params = tiny
  x, y = shapes[0][:B].copy(), shapes[1][:B].copy()
  mask = np.arange(B) < 9
  g, _ = _dp_grad(model, params, _batch(x, y, mask))
  x[9:], y[9:] = 255 - x[9:], (y[9:] + 1) % 10
  g2, _ = _dp_grad(model, params, _batch(x, y, mask))
  chex.assert_trees_all_equal(g, g2)


def test_auto_convs_give_the_lax_gradient(shapes, tiny):
  """On CPU the per-example gradients of an 'auto' model run im2col convs: the same clipped, noised sum as lax."""
  model, params = tiny
  auto = models.with_conv_impl(model, "auto")
  x, y = shapes[0][:B], shapes[1][:B]
  batch = _batch(x, y, np.arange(B) < 13)   # padded rows too
  for clip, sigma in ((0.05, 0.0), (math.inf, 0.0), (1.0, 2.0)):   # every row clipped, none, with noise
    g, aux = _dp_grad(model, params, batch, clip=clip, sigma=sigma, augment=True)
    g_auto, aux_auto = _dp_grad(auto, params, batch, clip=clip, sigma=sigma, augment=True)
    chex.assert_trees_all_close(g_auto, g, atol=1e-6, rtol=1e-4)
    np.testing.assert_allclose(aux_auto["logits"], aux["logits"], atol=1e-4)
    np.testing.assert_allclose(aux_auto["loss"], aux["loss"], rtol=1e-5)
  fn = lambda m: dpsgd.make_dp_grad_fn(m, dpsgd.DPConfig(1.0), B, augment=False)
  jaxpr = lambda m: str(jax.make_jaxpr(fn(m))(params, {}, batch, jax.random.key(0)))
  assert "conv_general_dilated" in jaxpr(model)
  assert ("conv_general_dilated" in jaxpr(auto)) == (jax.default_backend() != "cpu")


def test_noise_has_std_sigma_C_on_the_sum():
  """An empty batch: the update is the noise alone, N(0, (sigma C)^2) / B per coordinate; within 1% over 1.1M."""
  model = models.get_model("cnn_small_gn", 10, conv_impl="lax")
  params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
  x, y, mask = np.zeros((8, 32, 32, 3), np.uint8), np.zeros(8, np.int32), np.zeros(8, bool)
  sigma, clip = 2.0, 0.5
  fn = jax.jit(dpsgd.make_dp_grad_fn(model, dpsgd.DPConfig(sigma, clip), B, augment=False))
  draws = [np.concatenate([np.ravel(t) for t in jax.tree.leaves(fn(params, {}, _batch(x, y, mask),
                                                                    jax.random.key(k))[0])]) * B
           for k in range(12)]
  z = np.concatenate(draws)
  assert z.size > 1_000_000
  assert abs(z.std() / (sigma * clip) - 1) < 0.01
  assert abs(z.mean()) < 5 * sigma * clip / math.sqrt(z.size)
  assert np.corrcoef(draws[0], draws[1])[0, 1] < 0.01   # each step its own key


def test_poisson_batch_sizes_are_binomial():
  n, q, steps = 400, 0.1, 3000
  keep = np.zeros(512, bool)
  keep[:n] = True
  sample = jax.jit(jax.vmap(dpsgd.poisson_sample, in_axes=(None, None, None, 0)))
  order, count = sample(jax.random.key(0), jnp.asarray(keep), jnp.float32(q), jnp.arange(steps))
  count = np.asarray(count)
  # mean and variance of Binomial(n, q) = (40, 36), each within 4 standard errors
  assert abs(count.mean() - n * q) < 4 * math.sqrt(n * q * (1 - q) / steps)
  assert abs(count.var() / (n * q * (1 - q)) - 1) < 4 * math.sqrt(2 / steps)
  # per example: sampled q of the time (Binomial(steps, q) each), never outside the keep mask
  included = np.zeros(512)
  for o, c in zip(np.asarray(order), count):
    np.add.at(included, o[:c], 1)
  assert included[n:].sum() == 0
  p = scipy.stats.binomtest(int(included[:n].sum()), n * steps, q).pvalue
  assert p > 1e-3
  chi2 = (((included[:n] - steps * q) ** 2) / (steps * q * (1 - q))).sum()
  assert scipy.stats.chi2.sf(chi2, n) > 1e-3


def test_a_large_sample_takes_two_passes_not_a_truncation():
  order = jnp.arange(64)
  batch = dpsgd.gather_sample(order, 13, jnp.arange(64 * 2).reshape(64, 2), jnp.arange(64), num_chunks=2, rows=8)
  assert batch["x"].shape == (2, 8, 2)
  np.testing.assert_array_equal(np.asarray(batch["y"])[np.asarray(batch["mask"])], np.arange(13))


def test_batchnorm_model_is_refused_with_its_groupnorm_name(shapes):
  cfg = train.TrainConfig(num_epochs=1, batch_size=B)
  with pytest.raises(UserError, match="cnn_tiny_gn"):
    train.train(models.get_model("cnn_tiny", 10), cfg, *shapes, jax.random.key(0), dp=dpsgd.DPConfig(1.0))


def test_groupnorm_variants_keep_the_parameter_count():
  for name in ("cnn_small", "wrn16_4", "resnet20"):
    assert models.count_params(models.get_model(name + "_gn", 10)) == models.count_params(models.get_model(name, 10))
  assert models.canonical_name("wres16_gn") == "wrn16_8_gn"
  with pytest.raises(UserError):
    models.canonical_name("foo_gn")


@pytest.mark.slow
def test_dp_train_k_model_k_is_dp_train_of_model_k(shapes):
  """The Poisson samples and the noise are functions of the model's key: train_k's model 1 is train's model 1."""
  model = models.get_model("cnn_tiny_gn", 10, conv_impl="lax")
  x, y = shapes[0][:256], shapes[1][:256]
  keep = np.asarray(train.balanced_keep(jax.random.key(3), 2, len(x)))
  cfg = train.TrainConfig(num_epochs=1, batch_size=B, learning_rate=0.5, weight_decay=0.0, schedule="constant",
                          augment=False)
  rec = dpsgd.DPConfig(noise_multiplier=1.0, clip_norm=1.0)
  together = train.train_k(model, cfg, x, y, keep, jax.random.key(0), dp=rec, model_axis="unroll")
  alone = train.train(model, cfg, x, y, jax.random.key(0), keep=keep[1], model_index=1, dp=rec,
                      steps_per_epoch=math.ceil(keep.sum(1).max() / B))
  chex.assert_trees_all_close(jax.tree.map(lambda v: v[1], together.state.params), alone.state.params, atol=1e-5)
  noiseless = train.train(model, cfg, x, y, jax.random.key(0), keep=keep[1], model_index=1,
                          dp=dpsgd.DPConfig(noise_multiplier=0.0), steps_per_epoch=math.ceil(keep.sum(1).max() / B))
  assert _norm(jax.tree.map(jnp.subtract, noiseless.state.params, alone.state.params)) > 0.1


@pytest.mark.parametrize("bad", [dict(clip_norm=0.0), dict(clip_norm=-1.0), dict(noise_multiplier=-1.0),
                                 dict(noise_multiplier=math.nan), dict(augmult=0)])
def test_bad_dp_config(bad):
  with pytest.raises(UserError):
    dpsgd.DPConfig(**dict(dict(noise_multiplier=1.0), **bad)).validate()


# --- accounting: dp-accounting's values on published settings ---------------------------------------------------

TF_PRIVACY_ORDERS = [1.25, 1.5, 1.75, 2., 2.25, 2.5, 3., 3.5, 4., 4.5] + list(range(5, 64)) + [128, 256, 512]


@pytest.mark.parametrize("sigma,q,steps,delta,accountant,orders,expected", [
    # TF-Privacy's MNIST tutorial setting (N = 60000, B = 150, 15 epochs) and its 1e5-example test
    (1.3, 150 / 60000, 6000, 1e-5, "rdp", TF_PRIVACY_ORDERS, 0.7242234026),
    (1.0, 100 / 1e5, 30000, 1e-7, "rdp", TF_PRIVACY_ORDERS, 1.4154988495),
    # TF-Privacy's compute_dp_sgd_privacy example: q = 0.01, sigma = 0.7, 120 steps
    (0.7, 0.01, 120, 1e-5, "rdp", None, 3.2392676),
    (0.7, 0.01, 120, 1e-5, "pld", None, 2.4612381),
    (0.7, 1.0, 2, 1e-5, "rdp", None, 10.8602036),
    (0.7, 1.0, 2, 1e-5, "pld", None, 10.1224946),
])
def test_compute_epsilon_published_values(sigma, q, steps, delta, accountant, orders, expected):
  eps = dp.compute_epsilon(sigma, q, steps, delta, accountant=accountant, orders=orders)
  assert abs(eps - expected) < 1e-6 * max(1, expected) + 5e-8


def test_epsilon_orders_and_limits():
  eps = lambda s=1.0, q=0.05, t=200, a="pld": dp.compute_epsilon(s, q, t, 1e-5, accountant=a)
  assert eps() <= eps(a="rdp")
  assert eps(t=100) < eps() < eps(t=400)
  assert eps(q=0.02) < eps() < eps(q=0.1)
  assert eps(s=2.0) < eps() < eps(s=0.8)
  assert dp.compute_epsilon(0.0, 0.05, 200, 1e-5) == math.inf


@pytest.mark.parametrize("target", [1.0, 8.0])
def test_calibrate_noise_meets_the_target_from_below(target):
  q, steps, delta = 0.05, 300, 1e-5
  sigma = dp.calibrate_noise(target, q, steps, delta)
  eps = dp.compute_epsilon(sigma, q, steps, delta)
  assert 0.99 * target <= eps <= target
  assert dp.compute_epsilon(sigma * 0.999, q, steps, delta) > eps


@pytest.mark.parametrize("args", [(0.0, 0.05, 100, 1e-5), (-1.0, 0.05, 100, 1e-5), (1.0, 0.0, 100, 1e-5),
                                  (1.0, 1.5, 100, 1e-5), (1.0, 0.05, 0, 1e-5), (1.0, 0.05, 100, 0.0),
                                  (1.0, 0.05, 100, 1.0), (1e-4, 1.0, 10_000, 1e-5), (math.inf, 0.05, 100, 1e-5)])
def test_calibrate_noise_bad_input(args):
  with pytest.raises(UserError):
    dp.calibrate_noise(*args)


# --- auditing -------------------------------------------------------------------------------------------------------

def _deterministic_normal(mu, n):
  return scipy.stats.norm.ppf(np.linspace(0, 1, n, endpoint=False) + 1 / (2 * n)) + mu


@pytest.mark.parametrize("shift,expected", [(0, 0.0), (1, 1.13346), (2, 2.311945), (4, 4.395568)])
def test_one_run_audit_golden(shift, expected):
  """jax-privacy's golden values: 10^4 members ~ N(shift, 1) vs 10^4 non-members ~ N(0, 1), 95%, delta 1e-6."""
  n = 10_000
  scores = np.concatenate([_deterministic_normal(shift, n), _deterministic_normal(0, n)])
  eps = dp.epsilon_lower_bound(scores, np.arange(2 * n) < n, delta=1e-6)
  np.testing.assert_allclose(eps, expected, rtol=1e-5, atol=1e-9)


def test_audit_worked_values():
  # A perfect attack on 1000 + 1000 canaries at a threshold fixed in advance: CP_upper(0, 1000, 0.025) =
  # 1 - 0.025^(1/1000), eps = log((1 - 1e-5 - u) / u) = 5.6006.
  u = 1 - 0.025 ** (1 / 1000)
  perfect = np.r_[np.ones(1000), np.zeros(1000)]
  member = np.arange(2000) < 1000
  np.testing.assert_allclose(dp.epsilon_lower_bound(perfect, member, delta=1e-5, method="clopper_pearson",
                                                    threshold=0.5), math.log((1 - 1e-5 - u) / u), rtol=1e-9)
  # Steinke et al.: m = 1000 canaries, r = 100 guesses, 90 right, delta -> 0 (Appendix D's code: 1.631)
  scores, half = np.zeros(1000), np.arange(1000) < 500
  scores[:90] = scores[500:510] = 1
  np.testing.assert_allclose(dp.epsilon_lower_bound(scores, half, delta=1e-12, threshold=0.5), 1.6308, atol=1e-3)
  # Bonferroni over thresholds costs something; a useless attack proves nothing
  assert dp.epsilon_lower_bound(perfect, member, delta=1e-5, method="clopper_pearson") < 5.6006
  rng = np.random.default_rng(0)
  assert dp.epsilon_lower_bound(rng.normal(size=2000), member, delta=1e-5) == 0.0


def test_dp_ceiling():
  assert dp.dp_ceiling(1.0, 0.0, 0.01) == pytest.approx(math.e * 0.01)
  assert dp.dp_ceiling(8.0, 1e-5, 0.01) == pytest.approx(1 - math.exp(-8) * (1 - 1e-5 - 0.01))
  assert dp.dp_ceiling(math.inf, 1e-5, 0.001) == 1.0


@pytest.mark.parametrize("scores,member,kw", [
    (np.ones(4), np.array([True, False, True, False]), dict(delta=0.0)),
    (np.ones(4), np.array([True, False, True, False]), dict(delta=1e-5, confidence=0.4)),
    (np.ones(4), np.array([True, True, True, True]), dict(delta=1e-5)),
    (np.array([1.0, np.nan, 0, 0]), np.array([True, False, True, False]), dict(delta=1e-5)),
    (np.ones(4), np.array([1, 0, 1, 0]), dict(delta=1e-5)),
    (np.ones(4), np.array([True, False, True, False]), dict(delta=1e-5, method="nasr")),
])
def test_audit_bad_input(scores, member, kw):
  with pytest.raises(UserError):
    dp.epsilon_lower_bound(scores, member, **kw)


# --- the programs ----------------------------------------------------------------------------------------------------

def _dp_train(tmp_path, target, arch="cnn_tiny_gn", **kw):
  from mlpriv_jax.lab import training
  cfg = train.TrainConfig(num_epochs=1, batch_size=32, learning_rate=0.5, weight_decay=0.0, augment=False)
  run = training.TrainRun(dataset="shapes10", arch=arch, train=cfg, num_train=256, dp=target, **kw)
  return training.run(run, workdir=str(tmp_path / "run"), log=lambda *_: None)


@pytest.mark.parametrize("target,arch,match", [
    (dict(epsilon=0.0), "cnn_tiny_gn", "--dp_epsilon must be > 0"),
    (dict(epsilon=-1.0), "cnn_tiny_gn", "--dp_epsilon must be > 0"),
    (dict(epsilon=4.0, delta=0.0), "cnn_tiny_gn", r"--dp_delta must lie in \(0, 1\)"),
    (dict(epsilon=4.0, delta=1.5), "cnn_tiny_gn", r"--dp_delta must lie in \(0, 1\)"),
    (dict(epsilon=4.0, delta=0.01), "cnn_tiny_gn", "above 1/n"),
    (dict(epsilon=4.0, clip_norm=0.0), "cnn_tiny_gn", "--dp_clip_norm must be finite and > 0"),
    (dict(epsilon=4.0), "cnn_tiny", "use its GroupNorm variant cnn_tiny_gn"),
    (dict(epsilon=1e-6), "cnn_tiny_gn", "needs a noise multiplier above 1000"),
])
def test_dp_training_bad_input_is_one_line_and_writes_nothing(tmp_path, target, arch, match):
  with pytest.raises(UserError, match=match) as e:
    _dp_train(tmp_path, dp.DPTarget(**target), arch=arch)
  assert "\n" not in str(e.value) and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_dp_training_records_what_the_accountant_was_fed(tmp_path):
  res = _dp_train(tmp_path, dp.DPTarget(epsilon=4.0, delta=1e-3), num_models=2, keep_fraction=0.5)
  rec = res["dp"]
  assert rec["steps"] == res["steps"]                        # the engine's step count
  assert rec["epsilon"] <= 4.0 and rec["epsilon"] > 3.96
  assert rec["sampling_rate"] == pytest.approx(32 / 128, rel=0.1)   # B / n of the smaller half
  assert dp.compute_epsilon(rec["noise_multiplier"], rec["sampling_rate"], rec["steps"], 1e-3) == rec["epsilon"]


@pytest.mark.slow
def test_dp_train_program_exit_codes(tmp_path):
  ok = program("train", "--preset=smoke", f"--workdir={tmp_path / 'ok'}", "--arch=cnn_tiny_gn", "--num_train=256",
               "--num_epochs=1", "--batch_size=32", "--dp_epsilon=8")
  assert ok.returncode == 0, ok.stderr[-2000:]
  # A --dp_* flag without --dp_epsilon is caught at the flags (the library checks are tested in process above).
  p = program("train", "--preset=smoke", f"--workdir={tmp_path / 'bad'}", "--arch=cnn_tiny_gn", "--dp_clip_norm=2")
  lines = p.stderr.strip().splitlines()
  assert p.returncode == 2 and len(lines) == 1 and "give --dp_epsilon too" in lines[0], p.stderr[-1000:]
  assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_mia_against_a_dp_target_stays_under_the_guarantee(tmp_path):
  """Target and shadows trained with DP-SGD at epsilon 2: results.json holds the accounted guarantee, every
  attack's audited epsilon stays below it (a bound above it would be a bug), and LiRA's TPR at 1% FPR stays
  below the DP ceiling e^eps FPR + delta, within 3 binomial standard errors."""
  from mlpriv_jax.attacks import membership as M
  from mlpriv_jax.games import membership as G
  from mlpriv_jax.lab import membership
  cfg = train.TrainConfig(num_epochs=4, batch_size=128, learning_rate=2.0, weight_decay=0.0, augment=False,
                          schedule="cosine")
  game = G.MembershipGame("shapes10", "cnn_tiny_gn", 600, 4, cfg, dp=dp.DPTarget(epsilon=2.0))
  audit = G.MembershipAudit(("loss", "lira_online", "rmia_online", "label_noise"), num_bootstrap=0, label_examples=100,
                            options=M.MembershipOptions(label_noise=M.LabelNoiseOptions(num_samples=10)))
  res = membership.run(membership.MiaRun(game, audit, num_test=500), workdir=str(tmp_path / "run"),
                       log=lambda *_: None)
  rec = res["dp"]
  keep = np.load(tmp_path / "run" / "keep.npy")
  assert 1.98 < rec["epsilon"] <= 2.0 and rec["noise_multiplier"] > 0.5
  assert rec["steps"] == 4 * math.ceil(keep.sum(1).max() / 128) and rec["sampling_rate"] == 128 / keep.sum(1).min()
  assert res["audit_delta"] == rec["delta"]   # every attack's audit at the guarantee's delta
  for name, a in res["attacks"].items():
    assert a["epsilon_lower_bound"] <= rec["epsilon"], (name, a)
  ceiling = dp.dp_ceiling(rec["epsilon"], rec["delta"], 0.01)
  tpr = res["attacks"]["lira_online"]["tpr_at_0.01"]
  assert tpr <= ceiling + 3 * math.sqrt(ceiling * (1 - ceiling) / res["num_members"]), tpr


def test_sampling_rates_never_exceed_B_over_n():
  counts = np.array([1933, 2000, 4097])
  q = dpsgd.sampling_rates(256, counts)
  assert (q.astype(np.float64) <= 256 / counts).all() and (256 / counts - q < 2 ** -23).all()
  assert (q * 2 ** 23 == np.round(q * 2 ** 23)).all()   # P[uniform < q] = q exactly for JAX's k / 2^23 uniforms


def test_member_trained_defences_are_refused_under_dp(tmp_path):
  from mlpriv_jax.games import membership as G
  from mlpriv_jax.lab import membership
  game = G.MembershipGame("shapes10", "cnn_tiny_gn", 1000, 2, train.TrainConfig(num_epochs=1, batch_size=64),
                          dp=dp.DPTarget(epsilon=4.0))
  with pytest.raises(UserError, match="memguard trains on the target's members outside DP-SGD"):
    membership.run(membership.MiaRun(game, G.MembershipAudit(("loss",)), defence="memguard", strength=1.0),
                   workdir=str(tmp_path / "bad"), log=lambda *_: None)
  assert not (tmp_path / "bad").exists()
