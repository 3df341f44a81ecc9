r"""Model extraction against a trained victim: KnockoffNets (random, adaptive), CloudLeak-style, JBDA.

  python experiments/train.py --preset=smoke --workdir=runs/victim
  python experiments/extract.py --victim=runs/victim --attack=knockoff_random --workdir=runs/knockoff
  python experiments/extract.py --victim=runs/victim --attack=cloudleak --budget=1000 --workdir=runs/cl
  python experiments/extract.py --victim=runs/victim --defence=mad_argmax --epsilon=0.5 ...
  python experiments/extract.py --victim=runs/mia --attack=knockoff_random --budget=500 --workdir=runs/ko_mia
  python experiments/train.py --preset=smoke --dataset=figures20 --workdir=runs/extractor   # the attacker's own
  python experiments/extract.py --victim=runs/victim --attack=cloudleak --surrogate_init=runs/extractor ...

--victim is a model artifact, or the workdir of any program that wrote one. The attack sees only the oracle
(with the chosen defence); the evaluation afterwards uses the victim's test set and its undefended top-1
(fidelity), as the survey does (`mlpriv_jax.lab.extraction`). Writes results.json, results.jsonl, curve.png.

Presets (`mlpriv_jax.presets.extract`): smoke (embedded figures20 pool, 2,000 queries, cnn_small surrogate),
cpu (CIFAR-100 pool, 10,000 queries, resnet20 surrogate), paper (CIFAR-100, 50,000 queries, knockoffnets' training
defaults).
"""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import common  # noqa: E402

common.define_base("extract")
common.define_train_flags("the surrogate")
flags.DEFINE_string("victim", None, "The victim: a model artifact, or a workdir holding one.")
flags.DEFINE_string("victim_workdir", None, "Alias of --victim.")
common.define_endpoint_flags("Attack the victim served at this URL (experiments/serve.py, or any Open Inference "
                             "Protocol v2 endpoint) instead of the artifact's in-process victim; --victim still "
                             "evaluates the surrogate.")
flags.DEFINE_string("attack", None, "Extraction attack (knockoff_random, knockoff_adaptive, cloudleak, jbda; "
                    "default: the preset's).")
flags.DEFINE_string("surrogate_arch", None, "Surrogate architecture (wres16, wres22, res32, res18, vgg16, ...).")
flags.DEFINE_string("query_set", None, "The attacker's pool (figures20, patterns20, cifar100, ...).")
flags.DEFINE_string("surrogate_init", None, "A pretrained extractor (a model artifact: experiments/train.py on the "
                    "attacker's labelled pool): the surrogate starts from its frozen body, only a new head trains.")
flags.DEFINE_enum("surrogate_tune", None, ["head", "last_block"], "What trains on the pretrained extractor: its "
                  "new head (CloudLeak's; the default) or also its last block, from the extractor's weights.")
flags.DEFINE_integer("budget", None, "Queries the attacker may make.")
flags.DEFINE_string("checkpoints", None, "Comma-separated budgets at which the curve is measured.")
flags.DEFINE_string("defence", "none", "The victim's output defence (see experiments/defend.py).")
flags.DEFINE_float("epsilon", 0.5, "Strength of the defence, where it takes one.")
flags.DEFINE_integer("cloudleak_rounds", None, "CloudLeak: active-learning rounds.")
flags.DEFINE_enum("cloudleak_method", None, ["featurefool", "pgd"], "CloudLeak: how candidates are made.")
flags.DEFINE_integer("jbda_seeds", None, "JBDA: seed images, the first test images (held out from evaluation).")
flags.DEFINE_integer("num_test", None, "Evaluate on the first num_test test images (0: all).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from mlpriv_jax import config as configs
  from mlpriv_jax.errors import UserError, integer
  from mlpriv_jax.games.extraction import pretrained_surrogates
  from mlpriv_jax.lab import extraction
  victim = FLAGS.victim or FLAGS.victim_workdir
  if not victim:
    raise UserError("--victim is required (a model artifact; train one with experiments/train.py)")
  cfg = common.config("extract", dict(
      common.train_paths("extraction.surrogate"), attack=("extraction.attacks", lambda a: (a,)),
      surrogate_arch=("extraction.surrogates", lambda a: (a,)), query_set="extraction.query_set",
      surrogate_init=("extraction.surrogate_init", os.path.abspath),
      surrogate_tune="extraction.surrogate_tune",
      cloudleak_rounds="extraction.options.cloudleak.num_rounds",
      cloudleak_method="extraction.options.cloudleak.method", defence="defence", jbda_seeds="jbda_seeds",
      num_test="num_test", seed="seed"))
  if common.given("defence"):
    cfg = configs.replace(cfg, dict(strength=FLAGS.epsilon))
  if common.given("budget") or common.given("checkpoints"):   # the curve's budgets: the checkpoints below the budget
    budget = FLAGS.budget if common.given("budget") else cfg.budget
    if common.given("checkpoints"):   # each one a budget of the curve: an integer in [1, --budget]
      checkpoints = [int(c) if c.is_integer() else c for c in common.parse_floats(FLAGS.checkpoints, "--checkpoints")]
      for c in checkpoints:
        integer(c, "each of --checkpoints", at_least=1, at_most=integer(budget, "--budget", at_least=1))
    else:
      checkpoints = [c for c in cfg.extraction.budgets if c < budget]   # the preset's, below the budget given
    budgets = tuple(sorted({int(c) for c in checkpoints} | {budget}))
    cfg = configs.replace(cfg, {"extraction.budgets": budgets})
  if common.given("surrogate_init"):   # the surrogate starts from the extractor
    cfg = configs.replace(cfg, {"extraction.surrogates": pretrained_surrogates(cfg.extraction.surrogates)})
  extraction.run(cfg, victim=victim, workdir=FLAGS.workdir, data_dir=FLAGS.data_dir,
                 run_config=dict(preset=FLAGS.preset), endpoint=common.endpoint(), log=common.log)


if __name__ == "__main__":
  common.run(main)
