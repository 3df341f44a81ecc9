r"""Ownership verification on embedded data, in the threat models of Dataset Inference's paper (Maini et al. 2021):
thieves who query the victim with images of its own distribution, with soft labels (the paper's "logit-query") or
with labels only ("label-query"), against independent models of that distribution.

  python benchmarks/ownership.py --out=benchmarks/results/ownership_smoke.json

For each seed, the arena (`arena.run`) with one victim (shapes10's cnn_tiny on 500 private images), KnockoffNets'
random thief (`knockoff_random`, a cnn_tiny surrogate) with a pool of other shapes10 images at each budget, through
no defence (soft labels), `top1` (labels only) and, with `--dawn_rate`, DAWN, and the owner's verifiers on every
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
flags.DEFINE_string("budgets", "1000,4000", "The thieves' budgets (queries).")
flags.DEFINE_string("victim_arch", "cnn_tiny", "The victim's architecture (and the negatives').")
flags.DEFINE_integer("victim_epochs", 40, "Epochs of the victim on its 500 private images (and of the negatives).")
flags.DEFINE_string("surrogate_arch", "cnn_tiny", "The thieves' architecture.")
flags.DEFINE_integer("surrogate_epochs", 30, "Epochs of each surrogate on its transfer set.")
flags.DEFINE_integer("num_independent", 4, "Independent models per seed (the negatives).")
flags.DEFINE_integer("num_points", 100, "Dataset Inference's private and public points (half fit g, half are walked "
                     "through each suspect; the paper's code takes 1,000).")
flags.DEFINE_string("verifiers", "dataset_inference,ipguard,dawn", "The owner's verifiers (Dataset Inference among "
                    "them).")
flags.DEFINE_float("dawn_rate", 0.0, "DAWN's fraction of watermarked answers: a third thief through it (0: none).")
flags.DEFINE_string("workdir", None, "Where the arenas' workdirs go (<workdir>/seed<s>); a rerun resumes them.")
flags.DEFINE_string("out", None, "Also write the JSON here.")
FLAGS = flags.FLAGS

SOFT, LABEL = "none", "top1"   # the settings of the two thieves of the paper's threat models


def config(seed: int, budgets, victim_arch: str, victim_epochs: int, surrogate_arch: str, surrogate_epochs: int,
           num_independent: int, dawn_rate: float, num_points: int, verifiers):
  from mlpriv_jax.arena.run import ArenaConfig
  from mlpriv_jax.games.extraction import ExtractionAudit
  from mlpriv_jax.games.membership import MembershipAudit, MembershipGame
  from mlpriv_jax.games.ownership import OwnershipAudit
  from mlpriv_jax.presets.arena import _victim
  return ArenaConfig(
      game=MembershipGame("shapes10", victim_arch, 1000, 0,
                          _victim(num_epochs=victim_epochs, batch_size=32, learning_rate=0.05), seed=seed),
      membership=MembershipAudit(()),
      extraction=ExtractionAudit(("knockoff_random",), budgets=tuple(budgets), surrogates=(surrogate_arch,),
                                 query_set="shapes10",
                                 surrogate=_victim(num_epochs=surrogate_epochs, batch_size=64, learning_rate=0.05)),
      defences=((LABEL, ()),) + ((("dawn", (dawn_rate,)),) if dawn_rate else ()),
      monitor=False, aware=False, num_test=500,
      ownership=OwnershipAudit(tuple(verifiers), num_points=num_points, num_independent=num_independent))


def main(argv):
  del argv
  import numpy as np

  from mlpriv_jax import config as configs
  from mlpriv_jax.arena import cells as C
  from mlpriv_jax.arena import run as arena
  from mlpriv_jax.arena.proof import NEGATIVE
  from mlpriv_jax.games import ownership as O
  from mlpriv_jax.games import victims
  from mlpriv_jax.oracle import Victim
  from mlpriv_jax.utils import write_json

  log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
  t_start = time.time()
  if "dataset_inference" not in FLAGS.verifiers.split(","):
    raise app.UsageError("the benchmark's figure is Dataset Inference's: --verifiers must include dataset_inference")
  seeds = [int(s) for s in FLAGS.seeds.split(",")]
  budgets = [int(b) for b in FLAGS.budgets.split(",")]
  root = FLAGS.workdir or os.path.join(REPO, "runs", "ownership_bench")
  per_seed, walls, itself = {}, {}, {}
  args = (FLAGS.victim_arch, FLAGS.victim_epochs, FLAGS.surrogate_arch, FLAGS.surrogate_epochs, FLAGS.num_independent,
          FLAGS.dawn_rate, FLAGS.num_points, FLAGS.verifiers.split(","))
  for seed in seeds:
    cfg = config(seed, budgets, *args)
    workdir = os.path.join(root, f"seed{seed}")
    report = arena.run(cfg, workdir=workdir, run_config=dict(benchmark="ownership", seed=seed), log=log)
    walls[seed] = report["provenance"].get("compute_seconds")   # every run of this arena, a resumed one's included
    if "dataset_inference" in cfg.ownership.verifiers:   # the reference: Dataset Inference on the victim itself
      target = os.path.join(workdir, "victim", "target")
      v = victims.load(target)
      audit = O.OwnershipAudit(("dataset_inference",), num_points=FLAGS.num_points)
      itself[seed] = O.verify_artifact(target, Victim(v.model, v.variables), audit, log=log)["verifiers"][
          "dataset_inference"]["p_value"]
      log(f"seed {seed}: Dataset Inference on the victim itself: p {itself[seed]:.2g}")
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
  med = lambda setting, b: summary[f"{setting}@{b}"]["dataset_inference_median_p"]
  figure = (f"Dataset Inference, median p at m = 10 over {len(seeds)} seeds, soft-label / label-only thief: "
            + ", ".join(f"{b} queries {med(SOFT, b):.2g} / {med(LABEL, b):.2g}" for b in budgets)
            + f"; independent models below 0.05: {int((neg < 0.05).sum())} of {len(neg)}; the victim itself: "
            + ", ".join(f"{p:.2g}" for p in itself.values()))
  doc = dict(
      what=(f"proving theft from {FLAGS.victim_arch} victims on 500 shapes10 images: KnockoffNets thieves querying "
            f"the victim's distribution ({FLAGS.surrogate_arch} surrogates), {FLAGS.num_points} points"),
      summary=figure,
      provenance=dict(date=datetime.date.today().isoformat(), commit=commit(), machine=machine(),
                      command="python benchmarks/ownership.py "
                      + " ".join(a for a in sys.argv[1:] if not a.startswith(("--out", "--workdir")))),
      config=dict(seeds=seeds, budgets=budgets, arena=configs.as_dict(config(seeds[0], budgets, *args))),
      thieves={"soft labels (logit-query)": SOFT, "labels only (label-query)": LABEL},
      by_thief=summary,
      independent=dict(dataset_inference_p=neg.tolist(), fraction_below_0_05=float(np.mean(neg < 0.05)),
                       fraction_below_0_01=float(np.mean(neg < 0.01))),
      victim_itself=dict(dataset_inference_p={str(k): p for k, p in itself.items()}),
      rows=rows, arena_compute_seconds_per_seed={str(s): w for s, w in walls.items()},
      wall_seconds=time.time() - t_start)
  print(json.dumps({k: doc[k] for k in ("summary", "by_thief", "independent")}, indent=1))
  if FLAGS.out:
    write_json(FLAGS.out, doc)


if __name__ == "__main__":
  app.run(main)
