"""The query door: the Oracle protocol, the service/account split, buckets, and every extraction attack
against a stub that has nothing but the protocol."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlpriv_jax import data, defences, models, train
from mlpriv_jax.attacks import extraction as E
from conftest import StubOracle
from mlpriv_jax.oracle import BudgetExceeded, Oracle, Service, Victim, query_all


@pytest.fixture(scope="module")
def tiny():
  m = models.get_model("cnn_tiny", 10)
  return m, m.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def _x(n, seed=0):
  return np.asarray(jax.random.uniform(jax.random.key(seed), (n, 32, 32, 3)))


def test_identity_victim_is_the_softmax_for_every_batch_size_and_compiles_once_per_bucket(tiny):
  model, v = tiny
  # The model is traced once by the service's shape check, then once per bucket (1, 8, 64 for the sizes below).
  apply_fn = chex.assert_max_traces(lambda variables, x: model.apply(variables, x, train=False)[0], n=4)
  victim = Victim.of(Service(apply_fn, v, 10, (32, 32, 3)))
  x = _x(64)
  want = np.asarray(jax.nn.softmax(model.apply(v, jnp.asarray(x), train=False)[0]))
  for b in (1, 7, 64, 3, 5, 50, 64, 2, 8):   # after the first of each bucket nothing compiles again
    got = victim.query(x[:b])
    chex.assert_shape(got, (b, 10))
    np.testing.assert_allclose(got, want[:b], atol=1e-6, rtol=1e-5)
  assert victim.queries_used == 1 + 7 + 64 + 3 + 5 + 50 + 64 + 2 + 8
  with pytest.raises(AssertionError, match="traced > 4"):
    victim.query(_x(100))                     # bucket 512: one compilation more
  guarded = Victim.of(Service.from_model(model, v, max_traces=1))
  guarded.query(x[:3])
  guarded.query(x[:5])
  with pytest.raises(AssertionError, match="compiled 2 times, more than max_traces=1"):
    guarded.query(x[:9])


def test_large_batches_are_answered_in_chunks_of_the_largest_bucket(tiny):
  model, v = tiny
  victim = Victim(model, v, buckets=(8, 32))
  x = _x(75)
  want = np.asarray(jax.nn.softmax(model.apply(v, jnp.asarray(x), train=False)[0]))
  np.testing.assert_allclose(victim.query(x), want, atol=1e-6, rtol=1e-5)
  assert victim.queries_used == 75


def test_clients_of_one_service_have_their_own_ledgers_and_share_the_compiled_function(tiny):
  model, v = tiny
  service = Service.from_model(model, v, defence=defences.logit_noise(1.0), max_traces=1)
  a, b = Victim.of(service, budget=10, key=jax.random.key(1)), Victim.of(service, budget=20, key=jax.random.key(1))
  x = _x(8)
  np.testing.assert_array_equal(a.query(x), b.query(x))   # same key, same count: the same answer
  a.query(x[:2])
  assert (a.queries_used, a.budget_left, b.queries_used, b.budget_left) == (10, 0, 8, 12)
  with pytest.raises(BudgetExceeded):
    a.query(x[:1])
  # Other weights of the same shapes go through the same compiled function.
  plain = Service.from_model(model, v)
  Victim.of(plain).query(x)
  v2 = model.init(jax.random.key(7), jnp.zeros((1, 32, 32, 3)))
  want = np.asarray(jax.nn.softmax(model.apply(v2, jnp.asarray(x), train=False)[0]))
  np.testing.assert_allclose(Victim.of(plain.with_variables(v2)).query(x), want, atol=1e-6, rtol=1e-5)
  assert plain.num_traces == 1


def test_from_apply_makes_any_jax_function_a_victim():
  w = jax.random.normal(jax.random.key(0), (3, 4))
  apply_fn = lambda x: x.mean(axis=(1, 2)) @ w           # images -> logits, the user's own model
  victim = Victim.from_apply(apply_fn, 4, (8, 8, 3), budget=5)
  assert isinstance(victim, Oracle)
  x = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
  want = jax.nn.softmax(apply_fn(jnp.asarray(x, jnp.float32) / 255))
  np.testing.assert_allclose(victim.query(x), want, atol=1e-6)
  assert victim.budget_left == 0
  with pytest.raises(ValueError, match="answers shape \\[2, 4\\] for 2 queries; expected \\[2, 5\\]"):
    Victim.from_apply(apply_fn, 5, (8, 8, 3))


def test_query_all_and_bad_batch_size(tiny):
  victim = Victim(*tiny)
  assert query_all(victim, _x(10), batch_size=3).shape == (10, 10) and victim.queries_used == 10
  with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
    query_all(victim, _x(2), batch_size=0)


@pytest.mark.slow
def test_every_extraction_attack_uses_only_the_protocol_and_keeps_its_budget(tiny):
  model, v = tiny
  pool = data.load_dataset("patterns20")
  x, fine, coarse = pool.x_train[:400], pool.y_train[:400], pool.y_train_coarse[:400]
  surrogate = models.get_model("cnn_tiny", 10)
  cfg = train.TrainConfig(num_epochs=1, batch_size=16, learning_rate=0.05, augment=False)
  options = dict(knockoff_random=dict(checkpoints=(30,)), knockoff_adaptive=dict(pool_labels=fine, pool_coarse=coarse),
                 cloudleak=dict(options=E.CloudLeakOptions(num_rounds=2, steps=1)), jbda=dict(), top1=dict(),
                 smoothing=dict(checkpoints=(30,)),
                 recovery=dict(pool_labels=fine, defence=("revsig", 0.5),
                               options=E.RecoveryOptions(num_shadows=2, epochs=2)),
                 dfme=dict(options=E.DfmeOptions(batch_size=4, nz=8, ngf=4, d_iter=2)),   # 16 queries an iteration
                 disguide=dict(options=E.DisguideOptions(batch_size=8, nz=8, ngf=4, replay_steps=1)))
  assert set(options) == set(E.REGISTRY)
  for name in E.REGISTRY:
    stub = StubOracle(model, v, budget=80)
    assert isinstance(stub, Oracle)
    images = x[:10] if E.get(name).pool == "seeds" else x
    res = E.run(name, stub, images, budget=60, surrogate=surrogate, key=jax.random.key(0), config=cfg,
                **options[name])
    assert res.queries_used == stub.queries_used <= 60, name
    copies = E.SmoothingOptions().copies if name == "smoothing" else 1   # each image queried k times
    assert res.images.shape[0] == res.answers.shape[0] == res.queries_used // copies, name
    assert res.snapshots and res.snapshots[-1][1] is res.state, name
    assert all(q <= res.queries_used for q, _ in res.snapshots), name
  with pytest.raises(BudgetExceeded, match="knockoff_random needs 60 queries; the oracle has 20 left"):
    E.run("knockoff_random", StubOracle(model, v, budget=20), x, budget=60, surrogate=surrogate,
          key=jax.random.key(0), config=cfg)
  with pytest.raises(ValueError, match="unknown extraction attack 'knockoff'; known: knockoff_random"):
    E.get("knockoff")
