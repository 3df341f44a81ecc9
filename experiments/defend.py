r"""Evaluates a trained victim under output defences: the utility each costs benign users.

  python experiments/train.py --preset=smoke --workdir=runs/victim
  python experiments/defend.py --victim_workdir=runs/victim --workdir=runs/defend
  python experiments/defend.py --victim_workdir=runs/victim --defences=mad,mad_argmax --epsilons=0.1,0.5,1,2 \
      --workdir=runs/defend_mad

For every defence (and every epsilon, for those that take one) the victim's test
images are queried through `Victim.query` with that defence; results.json holds,
per defence and epsilon: accuracy of the released top-1, label_flip_rate, mean L1
and KL distortion (with std), and seconds per 1,000 queries. MAD's proxy is a
randomly initialised copy of the victim's architecture (the paper's choice);
MemGuard's defence classifier is trained on the victim's outputs for training
images (members) and held-out test images (non-members), disjoint from the
evaluated ones. Results are written after each entry; a rerun skips done entries.

Presets: smoke (500 test images, eps 0.5 and 1.0), cpu (2,000; eps 0.1, 0.5, 1.0),
paper (all test images; eps 0.1, 0.2, 0.5, 1.0, 1.5, 2.0).
"""

import os
import sys
import time

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import common  # noqa: E402

PRESETS = {
    "smoke": dict(num_test=500, epsilons="0.5,1.0", num_guard=500, guard_steps=500),
    "cpu": dict(num_test=2000, epsilons="0.1,0.5,1.0", num_guard=2000, guard_steps=2000),
    "paper": dict(num_test=0, epsilons="0.1,0.2,0.5,1.0,1.5,2.0", num_guard=5000, guard_steps=5000),
}
ALL = "none,label,top1,round2,gaussian,revsig,misinfo,mad,mad_argmax,memguard"

flags.DEFINE_enum("preset", "smoke", list(PRESETS), "Scale of the run; explicit flags override it.")
flags.DEFINE_string("victim_workdir", None, "Workdir of experiments/train.py holding the victim.")
flags.DEFINE_string("workdir", None, "Output folder.")
flags.DEFINE_string("data_dir", None, "Folder with <dataset>.npz files (else $MLPRIV_DATA_DIR, else TFDS).")
flags.DEFINE_list("defences", ALL.split(","), "Defences to evaluate.")
flags.DEFINE_string("epsilons", None, "Comma-separated strengths for the defences that take one.")
flags.DEFINE_integer("num_test", None, "Evaluate on the first num_test test images (0: all).")
flags.DEFINE_integer("num_guard", None, "MemGuard: members and non-members each for its defence classifier.")
flags.DEFINE_integer("guard_steps", None, "MemGuard: Adam steps of its defence classifier.")
flags.DEFINE_integer("batch_size", 250, "Queries per call.")
flags.DEFINE_integer("seed", 0, "Root seed.")
FLAGS = flags.FLAGS


def setting(name):
  return common.setting(FLAGS, PRESETS, name)


def main(argv):
  del argv
  import jax
  import numpy as np

  from mlpriv_jax import data, defences, train
  from mlpriv_jax.utils import write_json
  from mlpriv_jax.victim import Victim, load_trained

  if not FLAGS.workdir:
    raise ValueError("--workdir is required")
  if not FLAGS.victim_workdir:
    raise ValueError("--victim_workdir is required (train one with experiments/train.py)")
  for name in FLAGS.defences:
    defences.named.check_name(name)
  epsilons = [float(e) for e in str(setting("epsilons")).split(",") if e.strip()]
  if any(not e >= 0 for e in epsilons):
    raise ValueError(f"epsilons must be >= 0, got {epsilons}")
  if FLAGS.batch_size < 1:
    raise ValueError(f"--batch_size must be >= 1, got {FLAGS.batch_size}")

  model, variables, cfg = load_trained(FLAGS.victim_workdir)
  ds = data.load_dataset(cfg["dataset"], FLAGS.data_dir, seed=cfg.get("seed", 0))
  n_test = setting("num_test") or len(ds.x_test)
  n_guard = setting("num_guard")
  if n_test > len(ds.x_test):
    raise ValueError(f"--num_test {n_test} exceeds the {len(ds.x_test)} test images of {ds.name}")
  x_test, y_test = ds.x_test[:n_test], ds.y_test[:n_test]
  key = jax.random.key(FLAGS.seed)
  original = np.asarray(jax.nn.softmax(train.predict(model, variables, x_test)))

  proxy = memguard_params = None
  if {"mad", "mad_argmax"} & set(FLAGS.defences):
    proxy_vars = model.init(jax.random.fold_in(key, 1), np.zeros((1, *ds.image_shape), np.float32))
    proxy = defences.proxy_from_model(model, proxy_vars)
  if "memguard" in FLAGS.defences:
    # Members: the victim's training images; non-members: test images after the evaluated ones.
    held_out = ds.x_test[n_test:n_test + n_guard]
    if len(held_out) < 10:
      held_out = ds.x_test[n_test // 2:]
      x_test, y_test, original = x_test[: n_test // 2], y_test[: n_test // 2], original[: n_test // 2]
      print(f"memguard: too few held-out test images; evaluating on {len(x_test)}, training g on the rest",
            flush=True)
    n = min(n_guard, len(held_out), cfg["num_train"])
    members = jax.nn.softmax(train.predict(model, variables, ds.x_train[:n]))
    nonmembers = jax.nn.softmax(train.predict(model, variables, held_out[:n]))
    memguard_params = defences.train_defence_classifier(jax.random.fold_in(key, 2), members, nonmembers,
                                                        num_steps=setting("guard_steps"))
    g = lambda p: np.asarray(defences.defence_classifier_score(memguard_params, p))
    print(f"memguard: defence classifier accuracy {((g(members) > 0.5).mean() + (g(nonmembers) <= 0.5).mean()) / 2:.3f}"
          f" on {n} members + {n} non-members", flush=True)

  path = os.path.join(FLAGS.workdir, "results.json")
  common.claim_workdir(FLAGS.workdir, dict(victim_workdir=os.path.abspath(FLAGS.victim_workdir),
                                           num_test=len(x_test), seed=FLAGS.seed, preset=FLAGS.preset),
                       keys=("victim_workdir", "num_test", "seed", "preset"))
  results = common.load_json(path) or {}
  results.setdefault("victim", dict(arch=model.name, dataset=ds.name, workdir=FLAGS.victim_workdir,
                                    accuracy=float((original.argmax(-1) == y_test).mean()), num_test=len(x_test)))
  results.setdefault("defences", {})
  os.makedirs(FLAGS.workdir, exist_ok=True)
  for name in FLAGS.defences:
    grid = epsilons if defences.takes_epsilon(name) else [0.0]
    skipped = [e for e in grid if not defences.epsilon_in_range(name, e)]
    if skipped:
      print(f"{name}: skipping strengths outside its range: {skipped}", flush=True)
    for eps in (e for e in grid if defences.epsilon_in_range(name, e)):
      entry = f"{eps:g}"
      if entry in results["defences"].get(name, {}):
        continue
      d = defences.make_defence(name, eps, proxy_probs=proxy, memguard_params=memguard_params)
      victim = Victim(model, variables, defence=d, key=jax.random.fold_in(key, 3), input_shape=ds.image_shape)
      b = FLAGS.batch_size
      t0 = time.perf_counter()
      first = victim.query(x_test[:b])                  # compiles
      t1 = time.perf_counter()
      rest = [victim.query(x_test[s:s + b]) for s in range(b, len(x_test), b)]
      t2 = time.perf_counter()
      released = np.concatenate([first, *rest])
      m = defences.defence_utility(released, original, y_test)
      n_timed = len(x_test) - min(b, len(x_test))
      m.update(compile_seconds=t1 - t0,
               seconds_per_1000_queries=(t2 - t1) / n_timed * 1000 if n_timed else (t1 - t0) / len(x_test) * 1000,
               queries_used=victim.queries_used)
      results["defences"].setdefault(name, {})[entry] = m
      write_json(path, results)
      print(f"{name:11s} eps={entry:5s} acc {m['accuracy']:.4f} flips {m['label_flip_rate']:.4f} "
            f"L1 {m['l1']:.3f} KL {m['kl']:.3f} {m['seconds_per_1000_queries']:.3f} s/1k queries", flush=True)
  print(f"results in {path}", flush=True)


if __name__ == "__main__":
  common.run(main)
