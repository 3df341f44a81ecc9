r"""Data-free extraction on embedded data: how far DFME gets with no pool at all, and whether DisGUIDE (hard labels)
beats a student trained on as many uniform-noise queries.

  python benchmarks/datafree.py --out=benchmarks/results/datafree_smoke.json

The victim is shapes10's cnn_small (train.py's smoke recipe); the students are cnn_small. DFME runs `--dfme_budget`
queries with a generator and batch sized for 2 CPU cores (`--batch_size`, `--ngf`; the paper's are 256 and 64) and
reports the student's accuracy and fidelity every `--report_every` queries; the figure is the first budget at which
the student's accuracy reaches half the victim's. DisGUIDE runs `--disguide_budget` queries; the baseline spends the
same queries on uniform noise images, labelled with the victim's top-1 (`top1` on a pool of noise), and takes the
same number of SGD steps (1 + replay_steps per batch of queries).
"""

import dataclasses
import datetime
import os
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks.provenance import commit, machine  # noqa: E402

flags.DEFINE_integer("dfme_budget", 600_000, "DFME's queries.")
flags.DEFINE_integer("disguide_budget", 100_000, "DisGUIDE's queries (and the noise baseline's).")
flags.DEFINE_integer("batch_size", 64, "Generated images per step (both attacks).")
flags.DEFINE_integer("ngf", 32, "The generator's width.")
flags.DEFINE_integer("report_every", 50_000, "Queries between DFME's measurements.")
flags.DEFINE_integer("seed", 0, "The attacks' seed (the victim is trained with seed 0).")
flags.DEFINE_string("out", None, "Also write the JSON here.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import jax
  import numpy as np

  from mlpriv_jax import data, models, streams, train
  from mlpriv_jax.attacks import extraction as E
  from mlpriv_jax.games import extraction as G
  from mlpriv_jax.oracle import Victim
  from mlpriv_jax.presets import train as train_presets

  log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
  t_start, timing = time.time(), {}
  recipe = train_presets.smoke()
  ds = data.load_dataset(recipe.dataset)
  mean, std = data.channel_stats(ds.x_train)
  victim = models.get_model(recipe.arch, ds.num_classes, mean=mean, std=std)
  n = recipe.num_train
  t0 = time.time()
  v_vars = train.variables_of(train.train(victim, recipe.train, ds.x_train[:n], ds.y_train[:n],
                                          jax.random.key(0)).state)
  ev = G.evaluator(victim, v_vars, ds.x_test, ds.y_test)
  timing["victim_seconds"] = time.time() - t0
  log(f"victim {recipe.arch} on {ds.name}: accuracy {ev.victim_accuracy:.3f}")
  student = lambda: models.get_model("cnn_small", ds.num_classes, mean=(0.5,) * 3, std=(12 ** -0.5,) * 3)
  key = streams.derive(jax.random.key(100 + FLAGS.seed), streams.EXTRACTION)

  # DFME, with its curve
  curve = []

  def progress(queries, state, record):
    m = G.evaluate(student_model, state, ev)
    curve.append(dict(queries=queries, accuracy=m["accuracy"], fidelity=m["fidelity"],
                      seconds=round(record["seconds"], 1)))
    log(f"dfme {queries} queries: accuracy {m['accuracy']:.3f} ({m['accuracy_ratio']:.2f}x), fidelity "
        f"{m['fidelity']:.3f}; {record['seconds']:.0f} s, about {record['seconds_left']:.0f} s left")
  student_model = student()
  o = E.DfmeOptions(batch_size=FLAGS.batch_size, ngf=FLAGS.ngf, report_every=FLAGS.report_every)
  t0 = time.time()
  res = E.run("dfme", Victim(victim, v_vars, budget=FLAGS.dfme_budget), None, budget=FLAGS.dfme_budget,
              surrogate=student_model, key=key, config=None, options=o, progress=progress)
  timing["dfme_seconds"] = time.time() - t0
  half = next((c["queries"] for c in curve if c["accuracy"] >= 0.5 * ev.victim_accuracy), None)

  # DisGUIDE against uniform noise at the same queries and SGD steps
  od = E.DisguideOptions(batch_size=FLAGS.batch_size, ngf=FLAGS.ngf, report_every=FLAGS.disguide_budget)
  t0 = time.time()
  dg = E.run("disguide", Victim(victim, v_vars, budget=FLAGS.disguide_budget), None, budget=FLAGS.disguide_budget,
             surrogate=student(), key=key, config=None, options=od)
  timing["disguide_seconds"] = time.time() - t0
  dg_m = G.evaluate(student(), dg.state, ev)
  noise = np.asarray(jax.random.uniform(streams.derive(key, 9), (FLAGS.disguide_budget, *ds.image_shape)) * 255,
                     np.uint8)
  cfg = train.TrainConfig(num_epochs=1 + od.replay_steps, batch_size=od.batch_size, learning_rate=od.lr_student,
                          momentum=0.9, nesterov=False, weight_decay=od.weight_decay, schedule="cosine",
                          augment=False)
  t0 = time.time()
  base = E.run("top1", Victim(victim, v_vars, budget=FLAGS.disguide_budget), noise, budget=FLAGS.disguide_budget,
               surrogate=student(), key=key, config=cfg)
  timing["noise_baseline_seconds"] = time.time() - t0
  base_m = G.evaluate(student(), base.state, ev)
  log(f"disguide {FLAGS.disguide_budget} queries: accuracy {dg_m['accuracy']:.3f}, fidelity {dg_m['fidelity']:.3f}; "
      f"uniform noise: accuracy {base_m['accuracy']:.3f}, fidelity {base_m['fidelity']:.3f}")

  last = curve[-1] if curve else {}
  out = dict(
      what=f"data-free extraction of shapes10's {recipe.arch} (accuracy {ev.victim_accuracy:.3f}), no pool",
      summary=(f"DFME: accuracy {last.get('accuracy', float('nan')):.3f} "
               f"({last.get('accuracy', float('nan')) / ev.victim_accuracy:.2f}x) at {last.get('queries')} queries, "
               f"half the victim's at {half if half is not None else 'never'}; DisGUIDE at {FLAGS.disguide_budget}: "
               f"fidelity {dg_m['fidelity']:.3f} against {base_m['fidelity']:.3f} from uniform noise"),
      provenance=dict(command=" ".join(["python", "benchmarks/datafree.py"] + sys.argv[1:]), commit=commit(),
                      date=datetime.date.today().isoformat(), machine=machine()),
      victim_accuracy=ev.victim_accuracy, dfme=dict(options=dataclasses.asdict(o), curve=curve,
                                                    half_victim_accuracy_at=half, note=res.extra.get("note")),
      disguide=dict(options=dataclasses.asdict(od), budget=FLAGS.disguide_budget, **dg_m),
      noise_baseline=dict(budget=FLAGS.disguide_budget, epochs=cfg.num_epochs, **base_m),
      timing={k: round(v, 1) for k, v in timing.items()}, wall_seconds=round(time.time() - t_start, 1))
  from mlpriv_jax.utils import print_json
  print_json(out, FLAGS.out)


if __name__ == "__main__":
  app.run(main)
