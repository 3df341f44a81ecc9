r"""Cost of each output defence per 1,000 queries, batched, and MAD/MemGuard one query at a time.

  python benchmarks/defence_latency.py --out=benchmarks/results/defence_latency_cpu.json

The victim is a randomly initialised `--arch` (the cost of a defence does not
depend on how well the victim was trained, except MemGuard's, whose search
length depends on how confident the outputs are: its inputs here are the
victim's outputs sharpened to a mean top-1 probability of about 0.71, recorded as
`memguard_inputs_mean_top1`).
"One at a time" is the reference codes' way: MAD with the explicit last-layer
Jacobian (C backward passes through the proxy, `jax.jacrev`) and all 2^(C-1)
argmax-preserving candidates evaluated with it, per query; MemGuard's search
per query, both ours (`memguard`) and the reference's schedule (`memguard_reference`:
steps of 0.1, 300 for every c3, no stall test). Prints one JSON object.
"""

import os
import sys
import time

from absl import app, flags

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # PYTHONPATH wins

flags.DEFINE_string("arch", "cnn_small", "Victim (and MAD proxy) architecture.")
flags.DEFINE_integer("num_queries", 1000, "Queries for the batched timing.")
flags.DEFINE_integer("batch_size", 100, "Queries per call, batched.")
flags.DEFINE_integer("num_single", 20, "Queries timed one at a time (scaled to 1,000).")
flags.DEFINE_float("epsilon", 0.5, "Strength for the defences that take one.")
flags.DEFINE_string("out", None, "Also write the JSON here.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import itertools

  import jax
  import jax.numpy as jnp
  import numpy as np

  from mlpriv_jax import defences as D
  from mlpriv_jax import models

  model = models.get_model(FLAGS.arch, 10)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  proxy_vars = model.init(jax.random.key(1), jnp.zeros((1, 32, 32, 3)))
  proxy = D.proxy_from_model(model, proxy_vars)
  x = jax.random.uniform(jax.random.key(2), (FLAGS.num_queries, 32, 32, 3))
  logits = model.apply(variables, x, train=False)[0]
  probs = jax.nn.softmax(logits / logits.std() * 3.0)   # confident, victim-like outputs
  guard = D.train_defence_classifier(jax.random.key(3), probs[: len(probs) // 2],
                                     jax.random.dirichlet(jax.random.key(4), jnp.ones(10), (len(probs) // 2,)),
                                     num_steps=300)
  report = dict(backend=jax.default_backend(), device=jax.devices()[0].device_kind, arch=FLAGS.arch,
                epsilon=FLAGS.epsilon, batch_size=FLAGS.batch_size, num_queries=FLAGS.num_queries,
                memguard_inputs_mean_top1=float(probs.max(-1).mean()),
                batched_seconds_per_1000={}, one_at_a_time_seconds_per_1000={})

  def per_1000(fn, xs, ps, b):
    fn(xs[:b], ps[:b])                                    # compile
    t = time.perf_counter()
    for s in range(0, len(xs), b):
      jax.block_until_ready(fn(xs[s:s + b], ps[s:s + b]))
    return (time.perf_counter() - t) / len(xs) * 1000

  for name, spec in D.REGISTRY.items():
    d = D.build(name, FLAGS.epsilon if spec.strength else None, proxy_probs=proxy, memguard_params=guard)
    # The victim's forward pass is included: that is what a provider pays per query.
    fn = jax.jit(lambda xb, pb, d=d: d.apply(xb, jax.nn.softmax(model.apply(variables, xb, train=False)[0])
                                             if name != "memguard" else pb, d.init(), jax.random.key(0))[0])
    report["batched_seconds_per_1000"][name] = per_1000(fn, x, probs, FLAGS.batch_size)
    print(f"{name}: {report['batched_seconds_per_1000'][name]:.3f} s / 1k queries", file=sys.stderr, flush=True)

  # MAD-argmax, reference style: explicit Jacobian of the proxy's per-class NLL w.r.t. the last Dense kernel.
  head = [k for k in proxy_vars["params"] if k.startswith("Dense")][-1]

  def nll_rows(kernel, x1):
    params = {**proxy_vars["params"], head: {**proxy_vars["params"][head], "kernel": kernel}}
    return -jax.nn.log_softmax(model.apply({**proxy_vars, "params": params}, x1, train=False)[0])[0]

  masks = jnp.asarray(np.array(list(itertools.product((0.0, 1.0), repeat=10)), np.float32))

  @jax.jit
  def mad_reference(x1, y1):
    g = jax.jacrev(nll_rows)(proxy_vars["params"][head]["kernel"], x1).reshape(10, -1)   # C backward passes
    y = y1[0]
    top = y.argmax()
    cands = masks + 1e-5 * jax.nn.one_hot(top, 10)[None]
    cands = cands / cands.sum(-1, keepdims=True)
    gy = g.T @ y
    gc = cands @ g                                                                          # [2^C, D]
    obj = ((gc / jnp.linalg.norm(gc, axis=-1, keepdims=True) - gy / jnp.linalg.norm(gy)) ** 2).sum(-1)
    obj = jnp.where(masks[:, top] > 0, obj, -jnp.inf)
    target = cands[obj.argmax()]
    a = jnp.clip(FLAGS.epsilon / (jnp.abs(y - target).sum() + 1e-7), 0, 1)
    return ((1 - a) * y + a * target)[None]

  single = lambda fn: per_1000(fn, x[: FLAGS.num_single], probs[: FLAGS.num_single], 1)
  victim_probs = lambda xb: jax.nn.softmax(model.apply(variables, xb, train=False)[0])
  report["one_at_a_time_seconds_per_1000"]["mad_argmax"] = single(
      jax.jit(lambda xb, pb: mad_reference(xb, victim_probs(xb))))
  mg = D.build("memguard", FLAGS.epsilon, memguard_params=guard)
  report["one_at_a_time_seconds_per_1000"]["memguard"] = single(
      jax.jit(lambda xb, pb: mg.apply(xb, pb, mg.init(), jax.random.key(0))[0]))
  ref = D.memguard(FLAGS.epsilon, guard, max_steps=300, refine_steps=300, patience=10**9, step_size=0.1)
  report["memguard_reference_one_at_a_time_seconds_per_1000"] = single(
      jax.jit(lambda xb, pb: ref.apply(xb, pb, ref.init(), jax.random.key(0))[0]))
  report["speedup_batched_vs_one_at_a_time"] = {
      k: v / report["batched_seconds_per_1000"][k] for k, v in report["one_at_a_time_seconds_per_1000"].items()}
  report["memguard_speedup_vs_reference_one_at_a_time"] = (
      report["memguard_reference_one_at_a_time_seconds_per_1000"] / report["batched_seconds_per_1000"]["memguard"])
  from mlpriv_jax.utils import print_json
  print_json(report, FLAGS.out)


if __name__ == "__main__":
  app.run(main)
