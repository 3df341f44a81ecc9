r"""Model extraction against a trained victim: KnockoffNets (random, adaptive), CloudLeak-style, JBDA.

  python experiments/train.py --preset=smoke --workdir=runs/victim
  python experiments/extract.py --victim=runs/victim --attack=knockoff_random --workdir=runs/knockoff
  python experiments/extract.py --victim=runs/victim --attack=cloudleak --budget=1000 --workdir=runs/cl
  python experiments/extract.py --victim=runs/victim --defence=mad_argmax --epsilon=0.5 ...
  python experiments/extract.py --victim=runs/mia --attack=knockoff_random --budget=500 --workdir=runs/ko_mia

--victim is a model artifact, or the workdir of any program that wrote one. The attack sees only the oracle
(with the chosen defence); the evaluation afterwards uses the victim's test set and its undefended top-1
(fidelity), as the survey does (`mlpriv_jax.lab.extraction`). Writes results.json, results.jsonl, curve.png.

Presets: smoke (embedded figures20 pool, 2,000 queries, cnn_small surrogate),
cpu (CIFAR-100 pool, 10,000 queries, resnet20 surrogate), paper (CIFAR-100,
50,000 queries, knockoffnets' training defaults: SGD lr 0.01, momentum 0.5, no
weight decay, x0.1 at epoch 60, 100 epochs, batch 64, no augmentation).
"""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import common  # noqa: E402

PRESETS = {
    "smoke": dict(query_set="figures20", budget=2000, surrogate_arch="cnn_small", checkpoints="500,1000,2000",
                  num_epochs=6, batch_size=64, learning_rate=0.05, momentum=0.9, nesterov=False, weight_decay=5e-4,
                  schedule="cosine", milestones_epochs="", lr_decay_factor=0.1, augment=False),
    "cpu": dict(query_set="cifar100", budget=10000, surrogate_arch="resnet20", checkpoints="1000,5000,10000",
                num_epochs=10, batch_size=128, learning_rate=0.05, momentum=0.9, nesterov=False, weight_decay=5e-4,
                schedule="cosine", milestones_epochs="", lr_decay_factor=0.1, augment=True),
    "paper": dict(query_set="cifar100", budget=50000, surrogate_arch="wrn16_8", checkpoints="1000,5000,10000,50000",
                  num_epochs=100, batch_size=64, learning_rate=0.01, momentum=0.5, nesterov=False, weight_decay=0.0,
                  schedule="multistep", milestones_epochs="60", lr_decay_factor=0.1, augment=False),
}

common.define_base(PRESETS)
common.define_train_flags("the surrogate")
flags.DEFINE_string("victim", None, "The victim: a model artifact, or a workdir holding one.")
flags.DEFINE_string("victim_workdir", None, "Alias of --victim.")
flags.DEFINE_string("victim_url", None, "Attack the victim served at this URL (experiments/serve.py, or any Open "
                    "Inference Protocol v2 endpoint) instead of the artifact's in-process victim; --victim still "
                    "evaluates the surrogate.")
flags.DEFINE_string("api_key", None, "API key for --victim_url (default: $MLPRIV_API_KEY, which keeps it out of "
                    "the process list).")
flags.DEFINE_string("model_name", "victim", "Model name at --victim_url.")
flags.DEFINE_string("attack", "knockoff_random", "Extraction attack (knockoff_random, knockoff_adaptive, cloudleak, "
                    "jbda).")
flags.DEFINE_string("surrogate_arch", None, "Surrogate architecture (wres16, wres22, res32, res18, vgg16, ...).")
flags.DEFINE_string("query_set", None, "The attacker's pool (figures20, patterns20, cifar100, ...).")
flags.DEFINE_integer("budget", None, "Queries the attacker may make.")
flags.DEFINE_string("checkpoints", None, "Comma-separated budgets at which the curve is measured.")
flags.DEFINE_string("defence", "none", "The victim's output defence (see experiments/defend.py).")
flags.DEFINE_float("epsilon", 0.5, "Strength of the defence, where it takes one.")
flags.DEFINE_integer("cloudleak_rounds", 5, "CloudLeak: active-learning rounds.")
flags.DEFINE_enum("cloudleak_method", "featurefool", ["featurefool", "pgd"], "CloudLeak: how candidates are made.")
flags.DEFINE_integer("jbda_seeds", 100, "JBDA: seed images, the first test images (held out from evaluation).")
flags.DEFINE_integer("num_test", 0, "Evaluate on the first num_test test images (0: all).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from mlpriv_jax.errors import UserError
  from mlpriv_jax.lab import extraction
  s = common.settings(PRESETS, ("query_set", "budget", "surrogate_arch", "checkpoints", *common.TRAIN_FLAGS))
  victim = FLAGS.victim or FLAGS.victim_workdir
  if not victim:
    raise UserError("--victim is required (a model artifact; train one with experiments/train.py)")
  options = dict(cloudleak=dict(num_rounds=FLAGS.cloudleak_rounds, method=FLAGS.cloudleak_method)).get(FLAGS.attack)
  extraction.run(victim=victim, workdir=FLAGS.workdir, attack=FLAGS.attack, budget=s["budget"],
                 surrogate_arch=s["surrogate_arch"], query_set=s["query_set"], config=common.train_config(s),
                 checkpoints=[int(c) for c in common.parse_floats(s["checkpoints"], "--checkpoints")],
                 defence=FLAGS.defence, strength=FLAGS.epsilon, data_dir=FLAGS.data_dir, num_test=FLAGS.num_test,
                 jbda_seeds=FLAGS.jbda_seeds, attack_options=options, seed=FLAGS.seed,
                 run_config=dict(preset=FLAGS.preset), victim_url=FLAGS.victim_url,
                 api_key=FLAGS.api_key or os.environ.get("MLPRIV_API_KEY"), model_name=FLAGS.model_name,
                 log=common.log)


if __name__ == "__main__":
  common.run(main)
