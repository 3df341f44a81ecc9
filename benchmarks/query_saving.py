r"""CloudLeak's query saving, split into its two causes: the attacker's pretrained features and its adversarial
queries (Yu et al., NDSS 2020; the survey: "reduce the number of queries ... by a factor of 100").

  python benchmarks/query_saving.py --preset=smoke --out=benchmarks/results/query_saving_smoke.json
  python benchmarks/query_saving.py --preset=cpu --data_dir=../shared/data \
      --out=benchmarks/results/query_saving_cpu.json

One victim, one extractor (the surrogate's architecture trained by the attacker on its labelled pool), then for each
seed three curves of fidelity against queries, at the same budgets and with the same surrogate recipe:
  (a) KnockoffNets random, the surrogate from scratch;
  (b) KnockoffNets random on the pretrained extractor (`models.transfer`: a new head trains, with `--tune=last_block`
      also the last block from the extractor's weights);
  (c) CloudLeak (FeatureFool candidates in the extractor's feature space, margin selection, its rounds) on the
      same extractor; one run per budget, each run's rounds adding their points below it.
The saving of (b) and (c) is the queries (a) spends at its largest budget over the queries each needs to reach (a)'s
fidelity there, interpolated linearly in log-queries between measured points (None: not reached). (c) against (a)
is the survey's figure; (b) against (a) is what the pretrained features alone explain. Because a frozen extractor
can cap the fidelity below (a)'s at the largest budget, each seed also gives the saving at each of (a)'s points: the
queries (a) spent there over those (b) and (c) need to reach its fidelity.
"""

import dataclasses
import datetime
import math
import os
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks.provenance import commit, machine  # noqa: E402

flags.DEFINE_enum("preset", "smoke", ["smoke", "cpu"], "smoke: embedded data; cpu: CIFAR-10 victim, CIFAR-100 pool.")
flags.DEFINE_string("data_dir", None, "Where cifar10_jpeg.npz and cifar100_jpeg.npz are (the cpu preset).")
flags.DEFINE_enum("tune", "last_block", ["head", "last_block"], "What trains on the extractor (`models.transfer`).")
flags.DEFINE_integer("seeds", 3, "Seeds of the three curves (the victim and the extractor are trained once).")
flags.DEFINE_string("out", None, "Also write the JSON here.")
FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Setting:
  victim_data: str
  victim_examples: int
  victim_epochs: int
  pool: str
  extractor_epochs: int
  arch: str
  budgets: tuple              # the curve of (a) and (b); (a)'s fidelity at the largest is the target
  cloudleak_budgets: tuple    # one CloudLeak run each (its rounds give the points below)
  surrogate_epochs: int
  batch_size: int
  augment: bool
  num_test: int


PRESETS = {
    "smoke": Setting("shapes10", 4000, 5, "figures20", 5, "cnn_small", (25, 50, 100, 200, 400, 800, 1600),
                     (50, 200, 800, 1600), 6, 64, False, 2000),
    "cpu": Setting("cifar10_jpeg", 10000, 10, "cifar100_jpeg", 4, "cnn_small", (100, 250, 500, 1000, 2500, 5000),
                   (250, 1000, 5000), 10, 128, True, 2000),
}


def queries_to_reach(curve, target):
  """The queries at which `curve` [(queries, fidelity)] first reaches `target`, interpolated in log-queries between
  the points either side (the first point if it starts above; None if it never reaches it)."""
  curve = sorted(curve)
  for i, (q, f) in enumerate(curve):
    if f >= target:
      if i == 0:
        return float(q)
      (q0, f0) = curve[i - 1]
      t = (target - f0) / (f - f0)
      return float(math.exp(math.log(q0) + t * (math.log(q) - math.log(q0))))
  return None


def main(argv):
  del argv
  import jax
  import numpy as np

  from mlpriv_jax import data, models, streams, train
  from mlpriv_jax.attacks import extraction as E
  from mlpriv_jax.games import extraction as G
  from mlpriv_jax.oracle import Victim

  s = PRESETS[FLAGS.preset]
  log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
  t_start, timing = time.time(), {}
  ds = data.load_dataset(s.victim_data, FLAGS.data_dir)
  pool = data.load_dataset(s.pool, FLAGS.data_dir, seed=1)
  recipe = lambda epochs, **kw: train.TrainConfig(**dict(dict(
      num_epochs=epochs, batch_size=s.batch_size, learning_rate=0.05, momentum=0.9, nesterov=True,
      weight_decay=5e-4, schedule="cosine", augment=s.augment), **kw))

  t0 = time.time()
  mean, std = data.channel_stats(ds.x_train)
  victim = models.get_model(s.arch, ds.num_classes, mean=mean, std=std)
  v_vars = train.variables_of(train.train(victim, recipe(s.victim_epochs), ds.x_train[:s.victim_examples],
                                          ds.y_train[:s.victim_examples], jax.random.key(0)).state)
  ev = G.evaluator(victim, v_vars, ds.x_test[:s.num_test], ds.y_test[:s.num_test])
  timing["victim_seconds"] = time.time() - t0
  log(f"victim {s.arch} on {ds.name}: accuracy {ev.victim_accuracy:.3f}")

  t0 = time.time()
  p_mean, p_std = data.channel_stats(pool.x_train)
  ext = models.get_model(s.arch, pool.num_classes, mean=p_mean, std=p_std)
  ext_state = train.train(ext, recipe(s.extractor_epochs), pool.x_train, pool.y_train, jax.random.key(1)).state
  ext_vars = train.variables_of(ext_state)
  ext_acc = float(train.evaluate(ext, ext_state, pool.x_test, pool.y_test))
  timing["extractor_seconds"] = time.time() - t0
  log(f"extractor {s.arch} on {pool.name} ({pool.num_classes} classes): accuracy {ext_acc:.3f}")

  scratch = models.get_model(s.arch, ds.num_classes, mean=p_mean, std=p_std)   # the attacker's own statistics
  pretrained = models.transfer(ext, ext_vars, ds.num_classes, FLAGS.tune, ds.image_shape)
  cfg = recipe(s.surrogate_epochs)
  top = max(s.budgets)

  def fidelity(surrogate, state):
    return float(G.evaluate(surrogate, state, ev)["fidelity"])

  def knockoff(surrogate, key):
    res = E.run("knockoff_random", Victim(victim, v_vars, budget=top), pool.x_train, budget=top,
                surrogate=surrogate, key=key, config=cfg, checkpoints=s.budgets)
    assert res.queries_used == top
    return [(q, fidelity(surrogate, st)) for q, st in res.snapshots]

  def cloudleak(key):
    points = {}
    for b in s.cloudleak_budgets:
      oracle = Victim(victim, v_vars, budget=b)
      res = E.run("cloudleak", oracle, pool.x_train, budget=b, surrogate=pretrained, key=key, config=cfg)
      assert res.queries_used == oracle.queries_used == b
      points.update({q: fidelity(pretrained, st) for q, st in res.snapshots})   # a larger run's point wins
    return sorted(points.items())

  seeds = []
  for seed in range(FLAGS.seeds):
    key = streams.derive(jax.random.key(100 + seed), streams.EXTRACTION)
    row = {}
    for name, fn in (("a_knockoff_scratch", lambda: knockoff(scratch, key)),
                     ("b_knockoff_pretrained", lambda: knockoff(pretrained, key)),
                     ("c_cloudleak_pretrained", lambda: cloudleak(key))):
      t0 = time.time()
      row[name] = fn()
      timing[f"{name}_seconds"] = timing.get(f"{name}_seconds", 0.0) + time.time() - t0
      log(f"seed {seed} {name}: " + ", ".join(f"{q}: {f:.3f}" for q, f in row[name]))
    target = dict(row["a_knockoff_scratch"])[top]
    saving = {}
    for name in ("b_knockoff_pretrained", "c_cloudleak_pretrained"):
      q = queries_to_reach(row[name], target)
      saving[name] = dict(queries=q, saving=None if q is None else top / q)
    along = [dict(queries=q, fidelity=f, **{k: queries_to_reach(row[k], f) for k in saving})
             for q, f in row["a_knockoff_scratch"]]
    seeds.append(dict(seed=seed, target_fidelity=target, curves={k: [list(p) for p in v] for k, v in row.items()},
                      saving=saving, saving_along_a=along))
    log(f"seed {seed}: target {target:.3f}; " + ", ".join(
        f"{k} reaches it at {v['queries']:.0f} queries ({v['saving']:.1f}x)" if v["queries"] else f"{k} never"
        for k, v in saving.items()))

  summary = {}
  for name in ("b_knockoff_pretrained", "c_cloudleak_pretrained"):
    got = [r["saving"][name]["saving"] for r in seeds]
    reached = [g for g in got if g is not None]
    summary[name] = dict(mean=float(np.mean(reached)) if reached else None,
                         sd=float(np.std(reached, ddof=1)) if len(reached) > 1 else None,
                         min=min(reached) if reached else None, max=max(reached) if reached else None,
                         reached=len(reached), seeds=len(got))
  fmt = lambda d: (f"needs {d['mean']:.1f}x fewer queries (sd {d['sd']:.1f}, {d['reached']}/{d['seeds']} seeds)"
                   if d["sd"] is not None else f"needs {d['mean']:.1f}x fewer queries" if d["mean"]
                   else f"never reaches it (0/{d['seeds']} seeds)")
  targets = [r["target_fidelity"] for r in seeds]
  out = dict(
      what=f"queries to reach KnockoffNets-from-scratch's fidelity at {top} queries ({s.victim_data} {s.arch} "
           f"victim, {s.pool} pool)",
      summary=f"CloudLeak on the pretrained extractor ({FLAGS.tune}) {fmt(summary['c_cloudleak_pretrained'])}; "
              f"KnockoffNets on it {fmt(summary['b_knockoff_pretrained'])} (target fidelity "
              f"{np.mean(targets):.3f}, victim accuracy {ev.victim_accuracy:.3f})",
      provenance=dict(command=" ".join(["python", "benchmarks/query_saving.py"] + sys.argv[1:]), commit=commit(),
                      date=datetime.date.today().isoformat(), machine=machine()),
      setting=dict(dataclasses.asdict(s), tune=FLAGS.tune), victim_accuracy=ev.victim_accuracy,
      extractor_accuracy=ext_acc,
      saving=summary, seeds=seeds, timing={k: round(v, 1) for k, v in timing.items()},
      wall_seconds=round(time.time() - t_start, 1))
  from mlpriv_jax.utils import print_json
  print_json(out, FLAGS.out)


if __name__ == "__main__":
  app.run(main)
