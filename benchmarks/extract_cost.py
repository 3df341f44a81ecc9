r"""What an extraction run costs, and how much of it is compilation: KnockoffNets with 5 budget checkpoints
(a surrogate trained on each prefix of the transfer set, as extract.py does) and a 5-round CloudLeak run.

  python benchmarks/extract_cost.py --out=benchmarks/results/extract_cost_cpu.json
  PYTHONPATH=<an older checkout> python benchmarks/extract_cost.py ...     # the same runs on older code

Uses only functions that every version of the library has had (knockoff_random, train_surrogate, cloudleak,
Victim), so one script times the code before and after a change. Compilation is counted with JAX's own
monitoring events (`/jax/core/compile/backend_compile_duration`). Prints one JSON object.
"""

import os
import sys
import time

from absl import app, flags

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # PYTHONPATH wins

flags.DEFINE_string("arch", "cnn_small", "Victim and surrogate architecture (randomly initialised victim).")
flags.DEFINE_integer("budget", 2000, "Queries of the KnockoffNets run.")
flags.DEFINE_list("checkpoints", ["250", "500", "1000", "1500", "2000"], "Budgets the surrogate is trained at.")
flags.DEFINE_integer("cloudleak_budget", 1000, "Queries of the CloudLeak run.")
flags.DEFINE_integer("cloudleak_rounds", 5, "CloudLeak rounds.")
flags.DEFINE_integer("num_epochs", 2, "Surrogate epochs.")
flags.DEFINE_string("out", None, "Also write the JSON here.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp

  import mlpriv_jax
  from mlpriv_jax import data, models, train
  from mlpriv_jax.attacks import extraction as E
  try:
    from mlpriv_jax.oracle import Victim
  except ImportError:                  # before the oracle module
    from mlpriv_jax.victim import Victim

  compiles = {"count": 0, "seconds": 0.0}

  def listen(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
      compiles["count"] += 1
      compiles["seconds"] += duration
  jax.monitoring.register_event_duration_secs_listener(listen)

  def timed(fn):
    c0, s0, t0 = compiles["count"], compiles["seconds"], time.perf_counter()
    fn()
    return dict(wall_seconds=time.perf_counter() - t0, compile_seconds=compiles["seconds"] - s0,
                compilations=compiles["count"] - c0)

  pool = data.load_dataset("patterns20")
  victim_model = models.get_model(FLAGS.arch, 10)
  variables = victim_model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  surrogate = models.get_model(FLAGS.arch, 10)
  cfg = train.TrainConfig(num_epochs=FLAGS.num_epochs, batch_size=64, learning_rate=0.05, schedule="cosine",
                          augment=False)
  checkpoints = sorted(int(c) for c in FLAGS.checkpoints)

  def knockoff():
    oracle = Victim(victim_model, variables, budget=FLAGS.budget)
    idx, answers = E.knockoff_random(oracle, pool.x_train, FLAGS.budget, jax.random.key(1))
    for b in checkpoints:
      E.train_surrogate(surrogate, cfg, pool.x_train[idx[:b]], answers[:b], jax.random.key(2))

  def cloudleak():
    oracle = Victim(victim_model, variables, budget=FLAGS.cloudleak_budget)
    E.cloudleak(oracle, pool.x_train, FLAGS.cloudleak_budget, jax.random.key(3), surrogate, cfg,
                num_rounds=FLAGS.cloudleak_rounds)

  report = dict(backend=jax.default_backend(), jax=jax.__version__, library=os.path.dirname(mlpriv_jax.__file__),
                arch=FLAGS.arch, num_epochs=FLAGS.num_epochs,
                knockoff=dict(budget=FLAGS.budget, checkpoints=checkpoints, **timed(knockoff)),
                cloudleak=dict(budget=FLAGS.cloudleak_budget, rounds=FLAGS.cloudleak_rounds, **timed(cloudleak)))
  for k in ("knockoff", "cloudleak"):
    report[k]["run_seconds"] = report[k]["wall_seconds"] - report[k]["compile_seconds"]
  from mlpriv_jax.utils import print_json
  print_json(report, FLAGS.out)


if __name__ == "__main__":
  app.run(main)
