r"""Data-free extraction on embedded data: how far DFME gets with no pool at all, and whether DisGUIDE (hard labels)
beats a student trained on as many uniform-noise queries.

  python benchmarks/datafree.py --out=benchmarks/results/datafree_smoke.json
  python benchmarks/datafree.py --preset=paper --data_dir=gpu_data --out=datafree_paper.json   # a GPU's work

smoke: the victim is shapes10's cnn_small (train.py's smoke recipe), the students cnn_small; DFME runs
`--dfme_budget` queries with a generator and batch sized for 2 CPU cores (`--batch_size`, `--ngf`). paper: a
CIFAR-10 resnet18 victim (`--victim_epochs` of the cosine recipe below), resnet18 students, the paper's batch 256,
ngf 64 and 20M queries (Truong et al. 2021 report 0.92x the victim's accuracy at 20M on CIFAR-10; their victim is
a ResNet-34-8x, their student a ResNet-18-8x); `benchmarks/gpu_check.sh` runs it at a reduced budget and
extrapolates. DFME reports the student's accuracy and fidelity every `--report_every` queries; the figure is the
first budget at which the student's accuracy reaches half the victim's. DisGUIDE runs `--disguide_budget` queries
(0: skipped); the baseline spends the same queries on uniform noise images, labelled with the victim's top-1
(`top1` on a pool of noise), and takes the same number of SGD steps (1 + replay_steps per batch of queries).
Every curve point says how many of the victim's classes its answers covered since the point before; the white-box
reach check (`--reach_steps`) asks whether the generator could cover them given the victim's own gradient, which
separates a starved estimator (more queries help) from a victim that answers synthetic images with a few classes.
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

flags.DEFINE_enum("preset", "smoke", ["smoke", "paper"], "smoke: shapes10 on CPU; paper: CIFAR-10, a GPU's work.")
flags.DEFINE_string("data_dir", None, "Where cifar10_jpeg.npz is (the paper preset).")
flags.DEFINE_integer("victim_epochs", None, "The victim's training epochs (default: smoke train.py's 5, paper 30).")
flags.DEFINE_integer("num_train", None, "The victim's training images (default: smoke 4,000, paper 50,000).")
flags.DEFINE_integer("dfme_budget", None, "DFME's queries (default: smoke 600,000; paper 20M).")
flags.DEFINE_integer("disguide_budget", None, "DisGUIDE's queries and the noise baseline's (default: smoke 100,000; "
                     "paper 0, skipped).")
flags.DEFINE_integer("batch_size", None, "Generated images per step, both attacks (default: smoke 64, paper 256).")
flags.DEFINE_integer("ngf", None, "The generator's width (default: smoke 32, paper 64).")
flags.DEFINE_integer("report_every", None, "Queries between DFME's measurements (default: smoke 50,000; paper 1M).")
flags.DEFINE_integer("reach_steps", 300, "Steps of the white-box reach check (0: skipped): how many of the "
                     "victim's classes a generator reaches with the victim's own gradient.")
flags.DEFINE_integer("seed", 0, "The attacks' seed (the victim is trained with seed 0).")
flags.DEFINE_string("out", None, "Also write the JSON here.")
FLAGS = flags.FLAGS


def generator_reach(victim, v_vars, image_shape, *, steps, batch_size, ngf, key, objective):
  """How many of the victim's classes DFME's generator reaches when it is given the victim's own gradient (white-box,
  no estimator, no student): Adam (1e-3) on the generator for `steps` steps, maximising either the entropy of the
  victim's mean vote over the batch ('entropy': the most a class-blind disagreement signal can ask for) or each
  image's log-probability of a class fixed by its index in the batch ('targeted'). Returns the victim's top-1
  counts on 10 fresh batches from the trained generator."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from mlpriv_jax.attacks.extraction.datafree import Generator, to_images

  gen, tx = Generator(256, ngf, image_shape), optax.adam(1e-3)
  params = gen.init(key, jnp.zeros((2, 256)))["params"]
  opt = tx.init(params)
  probs = lambda p, k: jax.nn.softmax(victim.apply(
      v_vars, to_images(gen.apply({"params": p}, jax.random.normal(k, (batch_size, 256)))), train=False)[0])

  def loss(p, k):
    pv = probs(p, k)
    if objective == "targeted":
      return -jnp.log(pv[jnp.arange(batch_size), jnp.arange(batch_size) % pv.shape[-1]] + 1e-12).mean()
    vote = pv.mean(0) + 1e-6
    return (vote * jnp.log(vote)).sum()

  @jax.jit
  def step(p, opt, k):
    updates, opt = tx.update(jax.grad(loss)(p, k), opt, p)
    return optax.apply_updates(p, updates), opt
  for i in range(steps):
    params, opt = step(params, opt, jax.random.fold_in(key, i))
  top1 = np.concatenate([np.asarray(probs(params, jax.random.fold_in(key, steps + j))).argmax(-1) for j in range(10)])
  return np.bincount(top1, minlength=victim.num_classes)


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
  paper = FLAGS.preset == "paper"
  default = lambda v, smoke, big: (big if paper else smoke) if v is None else v
  dfme_budget = default(FLAGS.dfme_budget, 600_000, 20_000_000)
  disguide_budget = default(FLAGS.disguide_budget, 100_000, 0)
  batch_size, ngf = default(FLAGS.batch_size, 64, 256), default(FLAGS.ngf, 32, 64)
  report_every = default(FLAGS.report_every, 50_000, 1_000_000)
  if paper:
    dataset, arch, n = "cifar10_jpeg", "resnet18", 50_000
    cfg = train.TrainConfig(num_epochs=30, batch_size=128, learning_rate=0.1, momentum=0.9, nesterov=True,
                            weight_decay=5e-4, schedule="cosine", augment=True)
  else:
    r = train_presets.smoke()
    dataset, arch, n, cfg = r.dataset, r.arch, r.num_train, r.train
  if FLAGS.num_train is not None:
    n = FLAGS.num_train
  if FLAGS.victim_epochs is not None:
    cfg = dataclasses.replace(cfg, num_epochs=FLAGS.victim_epochs)
  ds = data.load_dataset(dataset, FLAGS.data_dir)
  mean, std = data.channel_stats(ds.x_train)
  victim = models.get_model(arch, ds.num_classes, mean=mean, std=std)
  t0 = time.time()
  v_vars = train.variables_of(train.train(victim, cfg, ds.x_train[:n], ds.y_train[:n], jax.random.key(0)).state)
  ev = G.evaluator(victim, v_vars, ds.x_test, ds.y_test)
  timing["victim_seconds"] = time.time() - t0
  log(f"victim {arch} on {ds.name}: accuracy {ev.victim_accuracy:.3f}")
  student = lambda: models.get_model("resnet18" if paper else "cnn_small", ds.num_classes, mean=(0.5,) * 3,
                                     std=(12 ** -0.5,) * 3)
  key = streams.derive(jax.random.key(100 + FLAGS.seed), streams.EXTRACTION)

  # DFME, with its curve
  curve = []

  def progress(queries, state, record):
    m = G.evaluate(student_model, state, ev)
    curve.append(dict(queries=queries, accuracy=m["accuracy"], fidelity=m["fidelity"],
                      answered_classes=record["answered_classes"],
                      top_class_share=round(record["top_class_share"], 3), seconds=round(record["seconds"], 1)))
    log(f"dfme {queries} queries: accuracy {m['accuracy']:.3f} ({m['accuracy_ratio']:.2f}x), fidelity "
        f"{m['fidelity']:.3f}, the victim answered {record['answered_classes']} classes (the top one "
        f"{record['top_class_share']:.0%}); {record['seconds']:.0f} s, about {record['seconds_left']:.0f} s left")
    if FLAGS.out:   # the curve so far, in case the run is stopped (a GPU step's timeout)
      from mlpriv_jax.utils import write_json
      write_json(FLAGS.out, dict(partial=True, victim_accuracy=ev.victim_accuracy, dfme=dict(curve=curve)))
  student_model = student()
  o = E.DfmeOptions(batch_size=batch_size, ngf=ngf, report_every=report_every)
  t0 = time.time()
  res = E.run("dfme", Victim(victim, v_vars, budget=dfme_budget), None, budget=dfme_budget,
              surrogate=student_model, key=key, config=None, options=o, progress=progress)
  timing["dfme_seconds"] = time.time() - t0
  half = next((c["queries"] for c in curve if c["accuracy"] >= 0.5 * ev.victim_accuracy), None)
  last = curve[-1] if curve else {}
  summary = (f"DFME: accuracy {last.get('accuracy', float('nan')):.3f} "
             f"({last.get('accuracy', float('nan')) / ev.victim_accuracy:.2f}x) at {last.get('queries')} queries, "
             f"half the victim's at {half if half is not None else 'never'}")
  out = dict(victim_accuracy=ev.victim_accuracy,
             dfme=dict(options=dataclasses.asdict(o), curve=curve, half_victim_accuracy_at=half,
                       queries_per_second=(last.get("queries") or 0) / max(timing["dfme_seconds"], 1e-9),
                       note=res.extra.get("note")))

  if disguide_budget:   # DisGUIDE against uniform noise at the same queries and SGD steps
    od = E.DisguideOptions(batch_size=batch_size, ngf=ngf, report_every=disguide_budget)
    t0 = time.time()
    dg = E.run("disguide", Victim(victim, v_vars, budget=disguide_budget), None, budget=disguide_budget,
               surrogate=student(), key=key, config=None, options=od)
    timing["disguide_seconds"] = time.time() - t0
    dg_m = G.evaluate(student(), dg.state, ev)
    noise = np.asarray(jax.random.uniform(streams.derive(key, 9), (disguide_budget, *ds.image_shape)) * 255,
                       np.uint8)
    base_cfg = train.TrainConfig(num_epochs=1 + od.replay_steps, batch_size=od.batch_size, learning_rate=od.lr_student,
                                 momentum=0.9, nesterov=False, weight_decay=od.weight_decay, schedule="cosine",
                                 augment=False)
    t0 = time.time()
    base = E.run("top1", Victim(victim, v_vars, budget=disguide_budget), noise, budget=disguide_budget,
                 surrogate=student(), key=key, config=base_cfg)
    timing["noise_baseline_seconds"] = time.time() - t0
    base_m = G.evaluate(student(), base.state, ev)
    noise_top1 = np.bincount(np.asarray(train.predict(victim, v_vars, noise)).argmax(-1), minlength=ds.num_classes)
    dg_seen = [r["answered_classes"] for r in dg.extra["history"]]
    log(f"disguide {disguide_budget} queries: accuracy {dg_m['accuracy']:.3f}, fidelity {dg_m['fidelity']:.3f}; "
        f"uniform noise: accuracy {base_m['accuracy']:.3f}, fidelity {base_m['fidelity']:.3f}")
    summary += (f"; DisGUIDE at {disguide_budget}: fidelity {dg_m['fidelity']:.3f} against {base_m['fidelity']:.3f} "
                f"from uniform noise")
    out.update(disguide=dict(options=dataclasses.asdict(od), budget=disguide_budget, answered_classes=max(dg_seen),
                             **dg_m),
               noise_baseline=dict(budget=disguide_budget, epochs=base_cfg.num_epochs, victim_top1=noise_top1.tolist(),
                                   **base_m))

  if FLAGS.reach_steps:   # does the generator reach the victim's classes when the victim's gradient is given?
    reach = {}
    for objective in ("entropy", "targeted"):
      counts = generator_reach(victim, v_vars, ds.image_shape, steps=FLAGS.reach_steps, batch_size=batch_size,
                               ngf=ngf, key=streams.derive(key, 10), objective=objective)
      reach[objective] = dict(classes=int((counts > 0).sum()), victim_top1=counts.tolist())
      log(f"white-box generator, {objective}: the victim answers {reach[objective]['classes']} classes {counts}")
    summary += (f"; a white-box generator ({FLAGS.reach_steps} steps) reaches {reach['entropy']['classes']} of the "
                f"victim's {ds.num_classes} classes maximising the vote's entropy, {reach['targeted']['classes']} "
                f"with targeted classes")
    out.update(white_box_reach=dict(steps=FLAGS.reach_steps, **reach))

  out = dict(what=f"data-free extraction of {ds.name}'s {arch} (accuracy {ev.victim_accuracy:.3f}), no pool",
             summary=summary,
             provenance=dict(command=" ".join(["python", "benchmarks/datafree.py"] + sys.argv[1:]), commit=commit(),
                             date=datetime.date.today().isoformat(), machine=machine()),
             **out, timing={k: round(v, 1) for k, v in timing.items()}, wall_seconds=round(time.time() - t_start, 1))
  from mlpriv_jax.utils import print_json
  print_json(out, FLAGS.out)


if __name__ == "__main__":
  app.run(main)
