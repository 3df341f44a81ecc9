"""Extraction attacks that know the defence: Top-1 trains the victim's own labels behind any label-keeping
defence, Smoothing pays for every copy, D-DAE's recovery network undoes a known deterministic defence, and what an
attack assumes when the defence is not disclosed."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlpriv_jax import data, defences, models, streams, train
from mlpriv_jax.arena import lockstep
from mlpriv_jax.attacks import extraction as E
from mlpriv_jax.data.augment import random_crop_flip
from mlpriv_jax.errors import UserError
from mlpriv_jax.oracle import Victim

CFG = train.TrainConfig(num_epochs=2, batch_size=32, learning_rate=0.05, schedule="cosine", augment=False)


@pytest.fixture(scope="module")
def victim():
  ds, pool = data.load_dataset("shapes10"), data.load_dataset("patterns20")
  model = models.get_model("cnn_tiny", 10)
  cfg = train.TrainConfig(num_epochs=3, batch_size=64, learning_rate=0.05, schedule="cosine", augment=False)
  state = train.train(model, cfg, ds.x_train[:2000], ds.y_train[:2000], jax.random.key(0)).state
  return model, train.variables_of(state), pool


def _run(name, oracle, pool, budget=160, **kw):
  return E.run(name, oracle, pool.x_train[:1000], budget=budget, surrogate=models.get_model("cnn_tiny", 10),
               key=jax.random.key(3), config=CFG, **kw)


def test_top1_behind_a_label_keeping_defence_trains_the_label_only_surrogate(victim):
  """Behind MAD-argmax and rounding (which perturb every answer but keep its argmax), Top-1 trains on exactly the
  undefended victim's labels: its surrogate is bit for bit KnockoffNets' behind the `label` API at the same key."""
  model, variables, pool = victim
  kit = defences.assemble(["mad_argmax"], model, jax.random.key(1), variables=variables)
  label = _run("knockoff_random", Victim(model, variables, defence=defences.label_only()), pool)
  for d in (defences.build("mad_argmax", 0.5, **kit._asdict()), defences.build("round1")):
    res = _run("top1", Victim(model, variables, defence=d), pool)
    clean = np.asarray(train.predict(model, variables, res.images)).argmax(-1)
    assert not np.array_equal(res.answers, np.eye(10, dtype=np.float32)[clean]), d.name   # perturbed, not labels
    np.testing.assert_array_equal(res.answers.argmax(-1), clean)                             # the labels kept
    chex.assert_trees_all_equal(train.variables_of(res.state), train.variables_of(label.state))
  naive = _run("knockoff_random", Victim(model, variables, defence=defences.build("round1")), pool)
  with pytest.raises(AssertionError):   # the naive attack trains on the rounded vectors: another surrogate
    chex.assert_trees_all_equal(train.variables_of(naive.state), train.variables_of(label.state))


def test_smoothing_pays_every_copy_and_averages_the_augmented_answers(victim):
  model, variables, pool = victim
  v = Victim(model, variables, budget=100)
  res = _run("smoothing", v, pool, budget=100, checkpoints=(40,))
  assert v.queries_used == res.queries_used == 99 and len(res.images) == 33      # floor(100 / 3) images, 3 each
  assert [q for q, _ in res.snapshots] == [39, 99]
  # by hand: the three passes' views of the same 33 images, answered undefended, averaged
  key = jax.random.key(3)
  idx = np.asarray(jax.random.permutation(streams.derive(key, streams.KNOCKOFF_QUERIES), 1000)[:33])
  np.testing.assert_array_equal(res.images, pool.x_train[idx])
  x = jnp.asarray(pool.x_train[idx], jnp.float32)
  views = [random_crop_flip(streams.derive(key, streams.SMOOTHING_VIEWS, j), x) for j in range(3)]
  assert all(np.abs(np.asarray(w) - pool.x_train[idx]).max() > 0 for w in views)   # each copy another view
  by_hand = sum(np.asarray(jax.nn.softmax(train.predict(model, variables, np.asarray(w).astype(np.uint8))))
                for w in views) / 3
  np.testing.assert_allclose(res.answers, by_hand, atol=1e-6)
  v = Victim(model, variables)
  with pytest.raises(UserError, match="smoothing queries each image 3 times: a budget of 2 buys no image"):
    _run("smoothing", v, pool, budget=2)
  assert v.queries_used == 0   # refused before any query


def test_recovery_network_undoes_a_known_deterministic_defence_on_held_out_shadow_queries(victim):
  """D-DAE's table on two shadows behind reverse sigmoid: the network fitted on 600 pool images brings 400 others'
  answers much closer (L1) to the shadows' clean outputs than the released ones are."""
  _, _, pool = victim
  shadow = models.get_model("cnn_tiny", 10)
  keep, labels = E.adaptive.shadow_keep(jax.random.key(5), pool.y_train[:3000], 10, 2)
  assert {len(np.unique(labels[k][keep[k]])) for k in range(2)} == {10} and (labels[keep] >= 0).all()
  onehot = np.eye(10, dtype=np.float32)[np.maximum(labels, 0)]
  shadows = train.train_k(shadow, CFG, pool.x_train[:3000], onehot, keep, jax.random.key(6))
  sv = train.variables_of(shadows.state)
  revsig = defences.build("revsig", 0.5)
  p_fit, c_fit = E.recovery_table(shadow, sv, pool.x_train[3000:3600], revsig, jax.random.key(7))
  p_new, c_new = E.recovery_table(shadow, sv, pool.x_train[3600:4000], revsig, jax.random.key(8))
  assert p_fit.shape == c_fit.shape == (1200, 10)
  np.testing.assert_allclose(p_fit[:600], revsig.apply(pool.x_train[3000:3600] / 255.0, c_fit[:600], (), None)[0],
                             atol=1e-6)   # the table's answers are the defence applied by hand
  net = E.train_recovery(jax.random.key(9), p_fit, c_fit, epochs=100)
  before = np.abs(p_new - c_new).sum(-1).mean()
  after = np.abs(net(p_new) - c_new).sum(-1).mean()
  assert after < 0.5 * before, (before, after)


def test_an_adaptive_attack_says_what_it_assumed(victim):
  model, variables, pool = victim
  v = Victim(model, variables)
  assert E.known_defence(("revsig", None), v) == (
      "revsig", 0.5, "revsig's strength was not disclosed: the registry's default 0.5 assumed")
  assert E.known_defence(("round2", None), v) == ("round2", None, "")
  assert E.known_defence(None, v) == ("none", None, "the defence was not disclosed: none assumed")
  with pytest.raises(UserError, match="unknown defence 'shield'"):
    E.known_defence(("shield", 1.0), v)
  few = np.arange(len(pool.y_train)) % 5   # a pool of 5 classes cannot relabel 10
  opts = E.RecoveryOptions(num_shadows=2, epochs=2)
  with pytest.raises(UserError, match="recovery trains shadows on 10 of the pool's classes; its labels hold 5"):
    _run("recovery", v, pool, pool_labels=few[:1000], defence=("round2", None), options=opts)
  with pytest.raises(UserError, match="recovery: table_images 5000 is more than the pool's 1000 images"):
    _run("recovery", v, pool, pool_labels=pool.y_train[:1000], defence=("round2", None),
         options=E.RecoveryOptions(num_shadows=2, table_images=5000))
  assert v.queries_used == 0


def test_an_attack_reads_the_defence_a_server_discloses(victim):
  """Over HTTP, the defence the server discloses (--disclose_defence) is what an attack that needs it assumes; an
  undisclosed one is none, said so."""
  pytest.importorskip("fastapi")
  from mlpriv_jax import serve
  from mlpriv_jax.oracle import Service
  model, variables, _ = victim
  key = "sk-alice-0123456789abcdef"
  service = Service.from_model(model, variables, defence=defences.build("revsig", 0.5), buckets=(8,), max_traces=1)
  for disclose, expect in ((True, ("revsig", 0.5, "")), (False, ("none", None, "the defence was not disclosed: "
                                                                              "none assumed"))):
    served = serve.Served(service, serve.KeyRing([(key, serve.Client("alice", 10))]), disclose_defence=disclose,
                          defence="revsig", defence_strength=0.5)
    with serve.BackgroundServer(serve.create_app(served)) as s:
      with serve.RemoteVictim(serve.Endpoint(s.url, key)) as remote:
        assert E.known_defence(None, remote) == expect
        assert E.known_defence(None, lockstep.Tee(remote, {})) == expect   # as the arena hands it over


def test_a_shadow_answered_through_the_defence_is_the_defence_applied_by_hand():
  """The defence-aware membership attacker's shadows answer through its copy of the defence, a Service per shadow:
  their 'logits' are the log of exactly what the defence releases for their softmax, for a deterministic defence
  (reverse sigmoid) and a randomised one (Gaussian logit noise, drawn from each shadow account's own key)."""
  from mlpriv_jax.games import membership
  model = models.get_model("cnn_tiny", 10)
  shadows = jax.vmap(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3))))(jax.random.split(jax.random.key(0), 2))
  x = np.asarray(jax.random.randint(jax.random.key(1), (12, 32, 32, 3), 0, 256), np.uint8)
  keep = np.array([[True, False] * 6, [False, True] * 6])
  kit = membership.AttackerKit(("loss", "lira_offline", "gap"), model, shadows, x, np.zeros(12, np.int64), keep,
                               x[None], np.zeros((2, 12, 1, 10), np.float32), None, np.arange(4), {"fitted": 1})
  key = jax.random.key(2)
  for name, strength in (("revsig", 0.5), ("gaussian", 1.0)):
    aware = membership.aware_kit(kit, name, strength, key)
    assert aware.names == ("loss", "lira_offline") and aware.memo == {}   # the score attacks, a memo of its own
    defence = defences.build(name, strength)
    for k in range(2):
      probs = jax.nn.softmax(model.apply(jax.tree.map(lambda v: v[k], shadows), x / 255.0, train=False)[0])
      account = streams.derive(key, streams.AWARE_ANSWERS, k)
      by_hand, _ = defence.apply(jnp.asarray(x / 255.0, jnp.float32), probs, defence.init(),
                                 jax.random.fold_in(account, 0))   # the account's first call
      np.testing.assert_allclose(np.exp(aware.shadow_logits[k, :, 0]), by_hand, atol=1e-6)
    assert not np.allclose(aware.shadow_logits[0, :, 0], np.log(np.asarray(jax.nn.softmax(
        model.apply(jax.tree.map(lambda v: v[0], shadows), x / 255.0, train=False)[0]))), atol=1e-3)
