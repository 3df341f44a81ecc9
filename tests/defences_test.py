import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlpriv_jax import defences as D
from mlpriv_jax import models
from mlpriv_jax.oracle import BudgetExceeded, QueryError, Victim

C = 10


def _probs(key, n=64, c=C, concentration=0.3):
  return jax.random.dirichlet(key, jnp.full((c,), concentration), (n,))


def _x(n=64):
  return jax.random.uniform(jax.random.key(9), (n, 32, 32, 3))


@pytest.fixture(scope="module")
def proxy():
  m = models.get_model("cnn_tiny", C)
  v = m.init(jax.random.key(5), jnp.zeros((1, 32, 32, 3)))
  return D.proxy_from_model(m, v)


@pytest.fixture(scope="module")
def guard_params():
  # Members: confident outputs; non-members: flatter ones (what an overfit victim gives).
  members = _probs(jax.random.key(1), 512, concentration=0.05)
  nonmembers = _probs(jax.random.key(2), 512, concentration=1.0)
  return D.train_defence_classifier(jax.random.key(3), members, nonmembers, num_steps=400)


def _all_defences(proxy, guard_params):
  return [D.top_k(3), D.label_only(), D.logit_noise(1.0), D.logit_noise(0.5, "laplace"),
          D.reverse_sigmoid(0.7, 0.2), D.mad(0.5, proxy), D.mad(0.3, proxy, ydist="l2"),
          D.mad(0.2, proxy, ydist="kl"), D.mad(0.5, proxy, oracle="argmax"), D.memguard(1.0, guard_params),
          D.chain(D.mad(0.5, proxy, oracle="argmax"), D.top_k(5)), D.build("dawn", 0.3, watermark_master=MASTER),
          D.chain(D.build("dawn", 0.3, watermark_master=MASTER), D.top_k(3))]


MASTER = bytes(range(32))   # DAWN's master secret


def _release(d, probs, x=None, key=jax.random.key(0)):
  """The defence's answer to a client whose account key is `key` (a per-client defence bound to it)."""
  x = _x(len(probs)) if x is None else x
  out, _ = jax.jit(d.apply)(x, probs, D.client_state(d, key), key)
  return out


def test_outputs_stay_on_the_simplex(proxy, guard_params):
  probs = _probs(jax.random.key(0))
  for d in _all_defences(proxy, guard_params):
    out = _release(d, probs)
    chex.assert_shape(out, probs.shape)
    chex.assert_tree_all_finite(out)
    assert float(out.min()) >= 0, d.name
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5, err_msg=d.name)


def test_label_keeping_defences_keep_top1(proxy, guard_params):
  probs = _probs(jax.random.key(1))
  for d in [D.top_k(1), D.top_k(4), D.label_only(), D.rounding(1), D.rounding(2),
            D.mad(1.0, proxy, oracle="argmax"), D.mad(2.0, proxy, oracle="argmax", ydist="l2"),
            D.memguard(1.0, guard_params)]:
    np.testing.assert_array_equal(_release(d, probs).argmax(-1), probs.argmax(-1), err_msg=d.name)


def test_mad_changes_labels_without_argmax(proxy):
  probs = _probs(jax.random.key(1))
  flips = (_release(D.mad(2.0, proxy), probs).argmax(-1) != probs.argmax(-1)).mean()
  assert flips > 0.5  # a full-budget MAD jumps to a vertex


@pytest.mark.parametrize("ydist,eps", [("l1", 0.3), ("l1", 1.0), ("l2", 0.2), ("kl", 0.1)])
@pytest.mark.parametrize("oracle", ["extreme", "argmax"])
def test_mad_respects_its_budget(proxy, ydist, eps, oracle):
  probs = _probs(jax.random.key(2))
  out = _release(D.mad(eps, proxy, ydist=ydist, oracle=oracle), probs)
  if ydist == "l1":
    dist = jnp.abs(out - probs).sum(-1)
  elif ydist == "l2":
    dist = jnp.linalg.norm(out - probs, axis=-1)
  else:
    dist = (probs * (jnp.log(probs + 1e-30) - jnp.log(out + 1e-30))).sum(-1)
  assert float(dist.max()) <= eps * (1 + 1e-4) + 1e-6
  assert float(dist.mean()) > 0.5 * eps  # the budget is used, not ignored
  chex.assert_trees_all_close(_release(D.mad(0.0, proxy, ydist=ydist, oracle=oracle), probs), probs)


def test_mad_closed_form_equals_explicit_last_layer_jacobian():
  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      h = nn.tanh(nn.Dense(16)(x))
      return nn.Dense(C, name="head")(h)
  net = Net()
  x = jax.random.normal(jax.random.key(0), (1, 5))
  params = net.init(jax.random.key(1), x)["params"]
  nll = lambda kernel: -jax.nn.log_softmax(net.apply({"params": {**params, "head": {**params["head"],
                                                                                     "kernel": kernel}}}, x))[0]
  G = jax.jacrev(nll)(params["head"]["kernel"]).reshape(C, -1)     # row k: d nll_k / d W
  p = jax.nn.softmax(net.apply({"params": params}, x))[0]
  for seed in range(5):
    y, yt = _probs(jax.random.key(10 + seed), 2)
    a, b = G.T @ yt, G.T @ y
    explicit = jnp.sum((a / jnp.linalg.norm(a) - b / jnp.linalg.norm(b)) ** 2)
    np.testing.assert_allclose(D.angular_deviation(p, y, yt), explicit, rtol=1e-4, atol=1e-5)


def test_mad_deviates_the_gradient_more_than_random_noise_of_the_same_l1(proxy):
  probs = _probs(jax.random.key(3), 128)
  x = _x(128)
  p = proxy(x)
  eps = 0.5
  mad_out = _release(D.mad(eps, proxy), probs, x)
  # Random noise of the same L1 size: move toward a random point of the simplex by the same L1 distance.
  r = _probs(jax.random.key(4), 128, concentration=1.0)
  l1_mad = jnp.abs(mad_out - probs).sum(-1, keepdims=True)
  alpha = jnp.clip(l1_mad / jnp.abs(r - probs).sum(-1, keepdims=True), 0, 1)
  rand_out = (1 - alpha) * probs + alpha * r
  dev = lambda out: jax.vmap(D.angular_deviation)(p, probs, out)
  assert float(dev(mad_out).mean()) > 1.2 * float(dev(rand_out).mean())  # measured 0.136 against 0.098


def test_memguard_brings_its_classifier_to_one_half(guard_params):
  probs = _probs(jax.random.key(5), 200, concentration=0.1)
  s_noisy, found = jax.jit(lambda p: D.memguard_noise(guard_params, p))(probs)
  g = D.defence_classifier_score(guard_params, s_noisy)
  assert float(found.mean()) >= 0.95
  assert float((jnp.abs(g - 0.5) <= 0.05).mean()) >= 0.95
  np.testing.assert_array_equal(s_noisy.argmax(-1), probs.argmax(-1))


def test_memguard_answer_does_not_depend_on_its_batch(guard_params):
  """Continuous batching hands queries to slots in turn: a wrong slot-to-query bookkeeping would show here."""
  probs = _probs(jax.random.key(11), 40, concentration=0.1)
  noise = jax.jit(D.memguard_noise, static_argnames="slots")   # one compilation per (slots, batch size)
  full, found = noise(guard_params, probs)
  for slots in (1, 7, 40):
    other, other_found = noise(guard_params, probs, slots=slots)
    chex.assert_trees_all_close(other, full, atol=1e-5)
    np.testing.assert_array_equal(other_found, found)
  rev, _ = noise(guard_params, probs[::-1])
  chex.assert_trees_all_close(rev[::-1], full, atol=1e-5)
  for i in (0, 13, 39):
    chex.assert_trees_all_close(noise(guard_params, probs[i:i + 1])[0][0], full[i], atol=1e-5)


def test_memguard_phase_two_budget_and_repeatability(guard_params):
  probs = _probs(jax.random.key(6), 200, concentration=0.1)
  x = _x(200)
  eps = 0.2
  d = D.memguard(eps, guard_params)
  out = _release(d, probs, x, jax.random.key(0))
  s_noisy, _ = D.memguard_noise(guard_params, probs)
  changed = jnp.abs(out - probs).sum(-1) > 1e-6
  # Every answer is either the original or the noisy vector.
  assert bool(jnp.all(jnp.where(changed, jnp.abs(out - s_noisy).sum(-1) < 1e-5, True)))
  assert float(jnp.abs(out - probs).sum(-1).mean()) <= 1.5 * eps  # E||noise||_1 <= eps; 200 coins
  # The same images queried again, with another call key, get the same answers.
  chex.assert_trees_all_close(_release(d, probs, x, jax.random.key(123)), out)
  v = Victim(*_tiny_parts(), defence=D.memguard(10.0, guard_params))
  np.testing.assert_array_equal(v.query(np.asarray(x[:8])), v.query(np.asarray(x[:8])))


def test_baseline_golden_values():
  y = jnp.array([[0.444, 0.446, 0.11]])
  out = _release(D.rounding(1), y, _x(1))
  np.testing.assert_allclose(out, [[0.4, 0.5, 0.1]], atol=1e-6)   # the tie is broken toward the top-1 class
  np.testing.assert_allclose(_release(D.top_k(2), y, _x(1)), [[0.444 / 0.89, 0.446 / 0.89, 0.0]], rtol=1e-5)
  beta, gamma = 0.5, 0.3
  logit = np.log(np.array(y) / (1 - np.array(y)))
  r = np.array(y) - beta * (1 / (1 + np.exp(-gamma * logit)) - 0.5)
  np.testing.assert_allclose(_release(D.reverse_sigmoid(beta, gamma), y, _x(1)), r / r.sum(), rtol=1e-5)
  # beta = gamma = 1 is degenerate: uniform output.
  np.testing.assert_allclose(_release(D.reverse_sigmoid(1.0, 1.0), y, _x(1)), [[1 / 3] * 3], atol=1e-5)


@pytest.mark.parametrize("make,match", [
    (lambda p: D.mad(-0.1, p), "epsilon must be >= 0"),
    (lambda p: D.memguard(-1.0, None), "epsilon must be >= 0"),
    (lambda p: D.mad(0.1, p, ydist="linf"), "unknown ydist"),
    (lambda p: D.mad(0.1, p, oracle="best"), "unknown oracle"),
    (lambda p: D.top_k(0), "top_k: k must be an integer >= 1"),
    (lambda p: D.rounding(-1), "decimals"),
    (lambda p: D.logit_noise(-1.0), "scale"),
    (lambda p: D.reverse_sigmoid(0.0), "beta and gamma"),
])
def test_bad_defence_arguments(proxy, make, match):
  with pytest.raises(ValueError, match=match):
    make(proxy)


def test_bad_defence_inputs(proxy):
  with pytest.raises(ValueError, match="k=11 exceeds the number of classes C=10"):
    _release(D.top_k(11), _probs(jax.random.key(0)))
  other = models.get_model("cnn_tiny", 7)
  other_proxy = D.proxy_from_model(other, other.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  with pytest.raises(ValueError, match="proxy gives 7 classes, the victim 10"):
    _release(D.mad(0.5, other_proxy), _probs(jax.random.key(0)))


def _tiny_parts():
  m = models.get_model("cnn_tiny", C)
  return m, m.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


@pytest.fixture(scope="module")
def tiny_victim_parts():
  return _tiny_parts()


def test_victim_counts_and_refuses_past_its_budget(tiny_victim_parts):
  v = Victim(*tiny_victim_parts, budget=100)
  out = v.query(np.asarray(_x(60)))
  assert out.shape == (60, C) and v.queries_used == 60 and v.budget_left == 40
  np.testing.assert_allclose(out.sum(-1), 1, atol=1e-5)
  with pytest.raises(BudgetExceeded, match="a query of 60 examples would pass the budget: 60 of 100 used"):
    v.query(np.asarray(_x(60)))
  assert v.queries_used == 60
  v.query(np.asarray(_x(40)))
  assert v.budget_left == 0


@pytest.mark.parametrize("bad,match", [
    (np.zeros((2, 28, 28, 3), np.float32), r"shape \[B, 32, 32, 3\]"),
    (np.zeros((32, 32, 3), np.float32), r"shape \[B, 32, 32, 3\]"),
    (np.full((2, 32, 32, 3), np.nan, np.float32), "NaN or inf"),
    (np.full((2, 32, 32, 3), 2.0, np.float32), r"lie in \[0, 1\]"),
    (np.zeros((2, 32, 32, 3), np.int32), "float in"),
    (np.zeros((0, 32, 32, 3), np.float32), "empty"),
])
def test_victim_rejects_bad_queries_without_counting(tiny_victim_parts, bad, match):
  v = Victim(*tiny_victim_parts, budget=10)
  with pytest.raises(QueryError, match=match):
    v.query(bad)
  assert v.queries_used == 0


def test_victim_is_reproducible_and_hides_its_model(tiny_victim_parts):
  x = np.asarray(_x(8))
  a = Victim(*tiny_victim_parts, defence=D.logit_noise(1.0), key=jax.random.key(1))
  b = Victim(*tiny_victim_parts, defence=D.logit_noise(1.0), key=jax.random.key(1))
  first = a.query(x)
  np.testing.assert_array_equal(first, b.query(x))
  assert not np.allclose(first, a.query(x))  # the next call folds in another query count
  with pytest.raises(ValueError, match="budget"):
    Victim(*tiny_victim_parts, budget=-1)
  # What an attack gets is the Oracle protocol: no public attribute of the victim, nor of what those hold, is a
  # weight of its model, and nothing can be hung on it.
  weights = [np.asarray(w) for w in jax.tree.leaves(tiny_victim_parts[1])]
  seen = []

  def walk(obj, depth):
    for name in (n for n in dir(obj) if not n.startswith("_")):
      value = getattr(obj, name)
      if callable(value):
        continue
      seen.append(name)
      for leaf in jax.tree.leaves(value):
        if hasattr(leaf, "shape"):
          assert not any(np.shape(leaf) == w.shape and np.array_equal(leaf, w) for w in weights), name
      if depth and not isinstance(value, (int, float, str, tuple, type(None))):
        walk(value, depth - 1)
  walk(a, 3)
  assert set(seen) == {"num_classes", "input_shape", "queries_used", "budget_left", "budget", "defence_name"}
  assert [n for n in dir(a) if not n.startswith("_") and callable(getattr(a, n))] == ["from_apply", "of", "query"]
  with pytest.raises(AttributeError):
    a.variables = None
  np.testing.assert_allclose(Victim(*tiny_victim_parts, defence=D.label_only()).query(x).sum(-1), 1)


def test_adaptive_misinformation_answers_ood_queries_only():
  confident = jnp.array([[0.95] + [0.05 / 9] * 9])
  flat = jnp.full((1, C), 1.0 / C)
  d = D.adaptive_misinformation(tau=0.5)
  chex.assert_trees_all_close(_release(d, confident, _x(1)), confident, atol=1e-6)
  out = _release(d, flat + jnp.array([[0.01] + [-0.01 / 9] * 9]), _x(1))
  assert int(out.argmax()) != 0  # the OOD query's top class is turned away
  np.testing.assert_allclose(out.sum(-1), 1, atol=1e-5)
  with pytest.raises(ValueError, match="tau"):
    D.adaptive_misinformation(tau=0.0)


def test_defence_utility_golden():
  original = jnp.array([[0.7, 0.3], [0.4, 0.6]])
  released = jnp.array([[0.6, 0.4], [0.6, 0.4]])
  m = D.defence_utility(released, original, jnp.array([0, 1]))
  assert m["accuracy"] == 0.5 and m["original_accuracy"] == 1.0 and m["label_flip_rate"] == 0.5
  np.testing.assert_allclose(m["l1"], (0.2 + 0.4) / 2, rtol=1e-6)
  kl = (0.7 * np.log(0.7 / 0.6) + 0.3 * np.log(0.3 / 0.4) + 0.4 * np.log(0.4 / 0.6) + 0.6 * np.log(0.6 / 0.4)) / 2
  np.testing.assert_allclose(m["kl"], kl, rtol=1e-5)
  # a release that only renormalises (as `none` does) costs nothing, never a negative KL from float32 rounding
  p = jax.nn.softmax(jax.random.normal(jax.random.key(0), (256, 10)) * 5)
  same = D.defence_utility(p / p.sum(-1, keepdims=True), p, jnp.zeros(256, jnp.int32))
  assert 0 <= same["kl"] < 1e-6 and same["l1"] < 1e-5 and same["label_flip_rate"] == 0


def test_named_defences():
  for name in D.REGISTRY:
    if name not in ("mad", "mad_argmax", "memguard", "dawn"):
      D.build(name, 0.5)
  with pytest.raises(ValueError, match="dawn needs the defender's master secret"):
    D.build("dawn", 0.01)
  with pytest.raises(ValueError, match="unknown defence 'shield'; known: none"):
    D.build("shield")
  with pytest.raises(ValueError, match="needs a proxy"):
    D.build("mad", 0.5)


def test_assemble_makes_what_the_defences_need_once():
  """`assemble` is the one home of MAD's proxy and MemGuard's classifier: made only for defences that need them,
  from their own streams of the defender's key, and the same proxy for every MAD variant built from the kit."""
  model = models.get_model("cnn_tiny", 4)
  variables = model.init(jax.random.key(1), jnp.zeros((1, 8, 8, 3)))
  x = np.random.default_rng(0).integers(0, 256, (40, 8, 8, 3)).astype(np.uint8)
  assert D.assemble(["label", "round2"], model, jax.random.key(0), input_shape=(8, 8, 3)) == D.DefenderKit()
  master = D.assemble(["dawn"], model, jax.random.key(0)).watermark_master   # DAWN's secret: the key's, 32 bytes
  assert len(master) == 32 and master == D.assemble(["dawn"], model, jax.random.key(0)).watermark_master
  assert master != D.assemble(["dawn"], model, jax.random.key(9)).watermark_master
  kit = D.assemble(["mad", "mad_argmax", "memguard"], model, jax.random.key(0), variables=variables,
                   input_shape=(8, 8, 3), members=x[:20], nonmembers=x[20:30], guard_steps=5)
  again = D.assemble(["mad"], model, jax.random.key(0), input_shape=(8, 8, 3))
  probe = jnp.asarray(x[:4], jnp.float32) / 255
  np.testing.assert_array_equal(kit.proxy_probs(probe), again.proxy_probs(probe))   # a function of the key alone
  other = D.assemble(["mad"], model, jax.random.key(9), input_shape=(8, 8, 3))
  assert not np.array_equal(kit.proxy_probs(probe), other.proxy_probs(probe))
  assert kit.memguard_params is not None and again.memguard_params is None
  for name in ("mad", "mad_argmax"):
    D.build(name, 0.5, **kit._asdict())
  D.build("memguard", 1.0, **kit._asdict())
  with pytest.raises(ValueError, match="memguard needs the victim's variables and member and non-member images"):
    D.assemble(["memguard"], model, jax.random.key(0), input_shape=(8, 8, 3))


@pytest.fixture(scope="module")
def natural_and_synthetic():
  from mlpriv_jax import data
  ds = data.load_dataset("shapes10")
  x = ds.x_test[:1000].astype(np.float32) / 255
  # A Jacobian-augmentation style stream: 20 seeds, then rounds of x + 0.1 * sign(direction) of all earlier points.
  rng = np.random.default_rng(0)
  s = x[:20]
  while len(s) < 1000:
    s = np.concatenate([s, np.clip(s + 0.1 * np.sign(rng.normal(size=s.shape)), 0, 1).astype(np.float32)])
  return x, ds.y_test[:1000], s[:1000]


def test_prada_flags_a_synthetic_stream_and_not_natural_images(natural_and_synthetic):
  natural, labels, synthetic = natural_and_synthetic
  p = D.Prada(delta=0.9)
  for i in range(0, 1000, 50):
    assert not p.observe(natural[i:i + 50], labels[i:i + 50]), (i, p.last_w)
  assert p.last_w is not None and p.last_w > 0.9   # measured 0.97 at the lowest
  q = D.Prada(delta=0.9)
  for i in range(0, 1000, 20):
    if q.observe(synthetic[i:i + 20], np.tile(labels[:20], 1)):
      break
  assert q.attacker_present and q.first_flag_at <= 400, q.first_flag_at   # measured 140
  with pytest.raises(ValueError, match="delta"):
    D.Prada(delta=1.5)


def test_victim_with_prada_refuses_or_degrades(tiny_victim_parts, natural_and_synthetic):
  _, _, synthetic = natural_and_synthetic
  from mlpriv_jax.oracle import QueryRefused
  v = Victim(*tiny_victim_parts, monitor=D.Prada(delta=0.9), budget=2000)
  with pytest.raises(QueryRefused, match="flagged as an extraction attack"):
    for i in range(0, 1000, 50):
      v.query(synthetic[i:i + 50])
  used = v.queries_used
  with pytest.raises(QueryRefused):
    v.query(synthetic[:5])
  assert v.queries_used == used  # refused queries are not answered
  w = Victim(*tiny_victim_parts, monitor=D.Prada(delta=0.9), on_detect="degrade")
  clean = Victim(*tiny_victim_parts)
  outs = [(w.query(synthetic[i:i + 50]), clean.query(synthetic[i:i + 50])) for i in range(0, 1000, 50)]
  a, b = outs[-1]
  np.testing.assert_allclose(np.sort(a, -1), np.sort(b, -1), atol=1e-6)   # same values, top-3 shuffled
  assert (a.argmax(-1) != b.argmax(-1)).mean() > 0.3


def test_defence_registry_ranges_threats_and_needs(proxy, guard_params):
  assert D.check("memguard", 1.0, threat=D.MEMBERSHIP).needs == {"members"}
  with pytest.raises(ValueError, match="memguard defends against membership, not extraction"):
    D.check("memguard", 1.0, threat=D.EXTRACTION)
  with pytest.raises(ValueError, match="mad_argmax defends against extraction, not membership"):
    D.check("mad_argmax", 0.5, threat=D.MEMBERSHIP)
  with pytest.raises(ValueError, match="revsig: strength 0 \\(beta \\(gamma = 0.1\\)\\) is out of range; it must be > 0"):
    D.check("revsig", 0.0)
  with pytest.raises(ValueError, match="gaussian needs a strength"):
    D.build("gaussian")
  assert D.settings("label", [0.5, 1.0]) == [("label", None)]          # parameter-free: once
  assert D.settings("mad", [0.5, 1]) == [("mad", 0.5), ("mad", 1.0)]
  assert D.label("mad", 0.5) == "mad@0.5" and D.label("top1", None) == "top1"
  for name, spec in D.REGISTRY.items():
    assert spec.threats and spec.threats <= D.BOTH, name
    d = D.build(name, 0.5 if spec.strength else None, proxy_probs=proxy, memguard_params=guard_params,
                watermark_master=MASTER)
    out = _release(d, _probs(jax.random.key(0), 8), _x(8))
    tol = (C / 2 + 1) * 10.0 ** -int(name[5:]) if name.startswith("round") else 1e-5   # rounding's own bound
    assert float(out.min()) >= 0 and np.allclose(out.sum(-1), 1.0, atol=tol), name


def test_keeps_label_defences_keep_the_argmax_even_at_ties(proxy, guard_params):
  """`keeps_label` lets the arena give a label-only attack's undefended result to such a defence unchecked, so it
  must hold for every query: checked on Dirichlet draws, near ties, exact ties (numpy's first index wins) and a
  uniform row. The defences not flagged are seen to move some label here (else the flag would be missing)."""
  p = np.asarray(_probs(jax.random.key(3), 256))
  near = p.copy()
  near[:, 1] = near[:, 0] * (1 - 1e-4)                  # a rival a hair below the top
  tied = p.copy()
  tied[:, 3] = tied[:, 7] = tied.max(-1) + 0.05           # the two largest, equal
  probs = np.concatenate([p, near, tied, np.full((1, C), 1 / C)])
  probs = jnp.asarray(probs / probs.sum(-1, keepdims=True), jnp.float32)
  x = jax.random.uniform(jax.random.key(9), (len(probs), 32, 32, 3))
  moved = set()
  for name, spec in D.REGISTRY.items():
    strong = 2.0 if spec.valid(2.0) else 1.0 if spec.valid(1.0) else 0.9
    for strength in ((0.5, strong) if spec.strength else (None,)):
      d = D.build(name, strength, proxy_probs=proxy, memguard_params=guard_params, watermark_master=MASTER)
      same = np.asarray(_release(d, probs, x).argmax(-1)) == np.asarray(probs.argmax(-1))
      if spec.keeps_label:
        assert same.all(), (name, np.flatnonzero(~same)[:5])
      elif not same.all():
        moved.add(name)
  assert {"gaussian", "laplace", "mad", "revsig", "dawn"} <= moved, moved


def _modelguard_lp(y, eps):
  """ModelGuard-W's program for one answer, as the authors' code states it, solved by HiGHS: (value, z)."""
  from scipy.optimize import linprog
  c, t = len(y), int(np.argmax(y))
  # variables: z (C), s (C) with s >= |z - y|
  cost = np.concatenate([np.log(y + 1e-6), np.zeros(c)])
  eye, rows, rhs = np.eye(c), [], []
  rows += [np.concatenate([eye[j], -eye[j]]) for j in range(c)]       # z - s <= y
  rhs += list(y)
  rows += [np.concatenate([-eye[j], -eye[j]]) for j in range(c)]      # -z - s <= -y
  rhs += list(-y)
  rows.append(np.concatenate([np.zeros(c), np.ones(c)]))              # sum s <= eps
  rhs.append(eps)
  rows += [np.concatenate([eye[j] - eye[t], np.zeros(c)]) for j in range(c) if j != t]   # z_j - z_t <= -1e-4
  rhs += [-1e-4] * (c - 1)
  r = linprog(cost, A_ub=np.array(rows), b_ub=np.array(rhs), A_eq=np.concatenate([np.ones(c), np.zeros(c)])[None],
              b_eq=[1.0], bounds=[(0, 1)] * c + [(0, None)] * c, method="highs")
  assert r.status == 0, r.message
  return r.fun, r.x[:c]


def test_modelguard_w_solves_its_linear_program_exactly():
  """The batched solver against HiGHS on Dirichlet answers of 10 and 100 classes, budgets from 0.05 to 1.9: the same
  objective (to float32 precision), a release on the simplex within the L1 budget, its label kept by 1e-4."""
  rng = np.random.default_rng(0)
  for c, alpha in ((10, 0.3), (10, 1.0), (10, 5.0), (100, 0.5)):
    y = rng.dirichlet(np.full(c, alpha), size=6).astype(np.float32)
    y = y / y.sum(-1, keepdims=True)
    for eps in (0.05, 0.5, 1.0, 1.9):
      z = np.asarray(D.modelguard_w(eps).apply(None, jnp.asarray(y), (), None)[0], np.float64)
      for row, out in zip(y.astype(np.float64), z):
        value, _ = _modelguard_lp(row, eps)
        mine = float(np.log(row + 1e-6) @ out)
        assert abs(mine - value) <= 2e-4 * max(1.0, abs(value)), (c, alpha, eps, mine, value)
        t = int(np.argmax(row))
        assert abs(out.sum() - 1) < 1e-5 and out.min() >= -1e-7 and np.abs(out - row).sum() <= eps + 2e-5
        assert (out[t] - np.delete(out, t)).min() >= 1e-4 - 1e-6
  # a budget too small to part a tie by the margin: the program is infeasible, the answer released unchanged
  tie = np.array([[0.4, 0.4, 0.2]], np.float32)
  np.testing.assert_array_equal(np.asarray(D.modelguard_w(1e-5).apply(None, jnp.asarray(tie), (), None)[0]), tie)
