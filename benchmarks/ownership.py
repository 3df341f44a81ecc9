r"""Ownership verification on embedded data, in the threat models of Dataset Inference's paper (Maini et al. 2021):
thieves who query the victim with images of its own distribution, with soft labels (the paper's "logit-query") or
with labels only ("label-query"), against independent models of that distribution.

  python benchmarks/ownership.py --out=benchmarks/results/ownership_smoke.json

For each seed, the arena (`arena.run`) with one victim (shapes10's cnn_small on 500 private images), KnockoffNets'
random thief (`knockoff_random`, a cnn_small surrogate) with a pool of other shapes10 images at each budget, through
no defence (soft labels), `top1` (labels only) and DAWN at `--dawn_rate`, and the owner's three verifiers on every
surrogate and on `--num_independent` independent models (the victim's recipe on disjoint shapes10 images). Dataset
Inference reveals m = 10 points of each kind (harmonic mean of p over 100 draws, as the paper's tables); the figure is
the median p over the seeds per thief, and the fraction of independent models with p < 0.05. IPGuard's and DAWN's
p-values are against the negatives of the same seed (`games.ownership.judge`).
"""

import datetime
import json
import os
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks.provenance import commit, machine  # noqa: E402

flags.DEFINE_string("seeds", "0,1,2", "The arenas' seeds (victim, thieves and negatives of each).")
flags.DEFINE_string("budgets", "1000,5000", "The thieves' budgets (queries).")
flags.DEFINE_integer("surrogate_epochs", 20, "Epochs of each surrogate on its transfer set.")
flags.DEFINE_integer("num_independent", 4, "Independent models per seed (the negatives).")
flags.DEFINE_float("dawn_rate", 0.005, "DAWN's fraction of watermarked answers.")
flags.DEFINE_string("workdir", None, "Where the arenas' workdirs go (<workdir>/seed<s>); a rerun resumes them.")
flags.DEFINE_string("out", None, "Also write the JSON here.")
FLAGS = flags.FLAGS

SOFT, LABEL = "none", "top1"   # the settings of the two thieves of the paper's threat models


def config(seed: int, budgets, surrogate_epochs: int, num_independent: int, dawn_rate: float):
  from mlpriv_jax.arena.run import ArenaConfig
  from mlpriv_jax.games.extraction import ExtractionAudit
  from mlpriv_jax.games.membership import MembershipAudit, MembershipGame
  from mlpriv_jax.games.ownership import OwnershipAudit
  from mlpriv_jax.presets.arena import _victim
  return ArenaConfig(
      game=MembershipGame("shapes10", "cnn_small", 1000, 0, _victim(num_epochs=20, batch_size=64, learning_rate=0.05),
                          seed=seed),
      membership=MembershipAudit(()),
      extraction=ExtractionAudit(("knockoff_random",), budgets=tuple(budgets), surrogates=("cnn_small",),
                                 query_set="shapes10",
                                 surrogate=_victim(num_epochs=surrogate_epochs, batch_size=64, learning_rate=0.05)),
      defences=((LABEL, ()), ("dawn", (dawn_rate,))),
      monitor=False, aware=False, num_test=500,
      ownership=OwnershipAudit(("dataset_inference", "ipguard", "dawn"), num_points=100,
                               num_independent=num_independent))


def main(argv):
  del argv
  import numpy as np

  from mlpriv_jax import config as configs
  from mlpriv_jax.arena import cells as C
  from mlpriv_jax.arena import run as arena
  from mlpriv_jax.arena.proof import NEGATIVE
  from mlpriv_jax.games import ownership as O
  from mlpriv_jax.utils import write_json

  log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
  t_start = time.time()
  seeds = [int(s) for s in FLAGS.seeds.split(",")]
  budgets = [int(b) for b in FLAGS.budgets.split(",")]
  root = FLAGS.workdir or os.path.join(REPO, "runs", "ownership_bench")
  per_seed, walls = {}, {}
  for seed in seeds:
    cfg = config(seed, budgets, FLAGS.surrogate_epochs, FLAGS.num_independent, FLAGS.dawn_rate)
    t = time.time()
    workdir = os.path.join(root, f"seed{seed}")
    arena.run(cfg, workdir=workdir, run_config=dict(benchmark="ownership", seed=seed), log=log)
    walls[seed] = time.time() - t
    cells = [c for c in C.load_cells(workdir, log) if c["family"] in ("ownership", "extraction", "utility")]
    per_seed[seed] = cells

  audit = O.OwnershipAudit(fprs=(0.01, 0.05))
  rows, negatives_p, summary = [], [], {}
  for seed, cells in per_seed.items():
    own = [c for c in cells if c["family"] == "ownership"]
    negs = [O.unflatten(c["metrics"]) for c in own if c["attack"] == NEGATIVE]
    negatives_p += [n["dataset_inference"]["p_value"] for n in negs]
    fid = {(c["setting"], c["budget"]): c["metrics"] for c in cells if c["family"] == "extraction"}
    util = {c["setting"]: c["metrics"] for c in cells if c["family"] == "utility"}
    for c in own:
      if c["attack"] == NEGATIVE:
        continue
      raw = O.unflatten(c["metrics"])
      verdict = O.judge([raw], negs, audit)
      rows.append(dict(seed=seed, setting=c["setting"], budget=c["budget"],
                       fidelity=fid[(c["setting"], c["budget"])].get("fidelity"),
                       accuracy=fid[(c["setting"], c["budget"])].get("accuracy"),
                       victim_accuracy=util.get(c["setting"], {}).get("accuracy"),
                       **{f"{v}_p": verdict[v]["p_values"][0] for v in verdict},
                       **{f"{v}_{f}": r[f] for v, r in raw.items() for f in O.FIELDS[v] if f != "queries"},
                       **({"dawn_null_agreed": raw["dawn"]["null_agreed"]} if "dawn" in raw else {})))
  for setting in sorted({r["setting"] for r in rows}):
    for b in budgets:
      ps = [r["dataset_inference_p"] for r in rows if r["setting"] == setting and r["budget"] == b]
      summary[f"{setting}@{b}"] = dict(dataset_inference_median_p=float(np.median(ps)), dataset_inference_p=ps,
                                       below_0_01=int(sum(p < 0.01 for p in ps)), seeds=len(ps))
  neg = np.asarray(negatives_p)
  doc = dict(
      benchmark="ownership", date=datetime.date.today().isoformat(), commit=commit(), machine=machine(),
      command="python benchmarks/ownership.py " + " ".join(a for a in sys.argv[1:] if not a.startswith("--out")),
      config=dict(seeds=seeds, budgets=budgets, surrogate_epochs=FLAGS.surrogate_epochs,
                  num_independent=FLAGS.num_independent, dawn_rate=FLAGS.dawn_rate,
                  arena=configs.as_dict(config(seeds[0], budgets, FLAGS.surrogate_epochs, FLAGS.num_independent,
                                                  FLAGS.dawn_rate))),
      thieves={"soft labels (logit-query)": SOFT, "labels only (label-query)": LABEL},
      summary=summary,
      independent=dict(dataset_inference_p=neg.tolist(), fraction_below_0_05=float(np.mean(neg < 0.05)),
                       fraction_below_0_01=float(np.mean(neg < 0.01))),
      rows=rows, wall_seconds_per_seed={str(s): w for s, w in walls.items()}, wall_seconds=time.time() - t_start)
  print(json.dumps({k: doc[k] for k in ("summary", "independent", "wall_seconds")}, indent=1))
  if FLAGS.out:
    write_json(FLAGS.out, doc)


if __name__ == "__main__":
  app.run(main)
