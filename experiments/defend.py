r"""Evaluates a trained victim under output defences: the utility each costs benign users.

  python experiments/train.py --preset=smoke --workdir=runs/victim
  python experiments/defend.py --victim=runs/victim --workdir=runs/defend
  python experiments/defend.py --victim=runs/victim --defences=mad,mad_argmax --epsilons=0.1,0.5,1,2 \
      --workdir=runs/defend_mad

--victim is a model artifact, or the workdir of any program that wrote one (train.py, mia.py, survey_tables.py
with --victim=<workdir>/victim_wres16). For every defence (and every epsilon, for those that take one) the
victim's test images are queried through `Victim.query` with that defence; results.json holds, per defence and
epsilon: accuracy of the released top-1, label_flip_rate, mean L1 and KL distortion (with std), and seconds per
1,000 queries (`mlpriv_jax.lab.defend`). A rerun skips done entries.

Presets: smoke (500 test images, eps 0.5 and 1.0), cpu (2,000; eps 0.1, 0.5, 1.0),
paper (all test images; eps 0.1, 0.2, 0.5, 1.0, 1.5, 2.0).
"""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import common  # noqa: E402

PRESETS = {
    "smoke": dict(num_test=500, epsilons="0.5,1.0", num_guard=500, guard_steps=500),
    "cpu": dict(num_test=2000, epsilons="0.1,0.5,1.0", num_guard=2000, guard_steps=2000),
    "paper": dict(num_test=0, epsilons="0.1,0.2,0.5,1.0,1.5,2.0", num_guard=5000, guard_steps=5000),
}
ALL = "none,label,top1,round2,gaussian,revsig,misinfo,mad,mad_argmax,memguard"

common.define_base(PRESETS)
flags.DEFINE_string("victim", None, "The victim: a model artifact, or a workdir holding one.")
flags.DEFINE_string("victim_workdir", None, "Alias of --victim.")
flags.DEFINE_list("defences", ALL.split(","), "Defences to evaluate.")
flags.DEFINE_string("epsilons", None, "Comma-separated strengths for the defences that take one.")
flags.DEFINE_integer("num_test", None, "Evaluate on the first num_test test images (0: all).")
flags.DEFINE_integer("num_guard", None, "MemGuard: members and non-members each for its defence classifier.")
flags.DEFINE_integer("guard_steps", None, "MemGuard: Adam steps of its defence classifier.")
flags.DEFINE_integer("batch_size", 250, "Queries per call.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from mlpriv_jax.errors import UserError
  from mlpriv_jax.lab import defend
  s = common.settings(PRESETS, ("num_test", "epsilons", "num_guard", "guard_steps"))
  victim = FLAGS.victim or FLAGS.victim_workdir
  if not victim:
    raise UserError("--victim is required (a model artifact; train one with experiments/train.py)")
  defend.run(victim=victim, workdir=FLAGS.workdir, defence_names=FLAGS.defences,
             strengths=common.parse_floats(s["epsilons"], "--epsilons"), data_dir=FLAGS.data_dir,
             num_test=s["num_test"], num_guard=s["num_guard"], guard_steps=s["guard_steps"],
             batch_size=FLAGS.batch_size, seed=FLAGS.seed, run_config=dict(preset=FLAGS.preset), log=common.log)


if __name__ == "__main__":
  common.run(main)
