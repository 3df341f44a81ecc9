r"""Evaluates a trained victim under output defences: the utility each costs benign users.

  python experiments/train.py --preset=smoke --workdir=runs/victim
  python experiments/defend.py --victim=runs/victim --workdir=runs/defend
  python experiments/defend.py --victim=runs/victim --defences=mad,mad_argmax --epsilons=0.1,0.5,1,2 \
      --workdir=runs/defend_mad

--victim is a model artifact, or the workdir of any program that wrote one (train.py, mia.py, survey_tables.py
with --victim=<workdir>/victim_wres16). For every defence (and every epsilon, for those that take one) the
victim's test images are queried through `Victim.query` with that defence; results.json holds, per defence and
strength: accuracy of the released top-1, label_flip_rate, mean L1 and KL distortion (with std), and seconds per
1,000 queries (`mlpriv_jax.lab.defend`), as results.jsonl rows and their summary in results.json. A rerun skips
done settings.

Presets (`mlpriv_jax.presets.defend`): smoke (500 test images, strengths 0.5 and 1), cpu (2,000; 0.1, 0.5, 1),
paper (every test image; 0.1 to 2).
"""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import common  # noqa: E402

common.define_base("defend")
flags.DEFINE_string("victim", None, "The victim: a model artifact, or a workdir holding one.")
flags.DEFINE_string("victim_workdir", None, "Alias of --victim.")
flags.DEFINE_list("defences", None, "Defences to evaluate (default: every one).")
flags.DEFINE_string("epsilons", None, "Comma-separated strengths for the defences that take one.")
flags.DEFINE_integer("num_test", None, "Evaluate on the first num_test test images (0: all).")
flags.DEFINE_integer("num_guard", None, "MemGuard: members and non-members each for its defence classifier.")
flags.DEFINE_integer("guard_steps", None, "MemGuard: Adam steps of its defence classifier.")
flags.DEFINE_integer("batch_size", None, "Queries per call.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from mlpriv_jax.errors import UserError
  from mlpriv_jax.lab import defend
  victim = FLAGS.victim or FLAGS.victim_workdir
  if not victim:
    raise UserError("--victim is required (a model artifact; train one with experiments/train.py)")
  cfg = common.config("defend", dict(
      defences=("defences", tuple), epsilons=("strengths", lambda t: tuple(common.parse_floats(t, "--epsilons"))),
      num_test="num_test", num_guard="num_guard", guard_steps="guard_steps", batch_size="batch_size", seed="seed"))
  defend.run(cfg, victim=victim, workdir=FLAGS.workdir, data_dir=FLAGS.data_dir, run_config=dict(preset=FLAGS.preset),
             log=common.log)


if __name__ == "__main__":
  common.run(main)
