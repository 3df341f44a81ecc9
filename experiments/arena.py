r"""The arena: every attack against every defence at every strength and budget, one command, one report.

  python experiments/arena.py --preset=smoke --workdir=runs/arena          # embedded data, ~15 min on 2 cores
  python experiments/arena.py --preset=smoke --workdir=runs/arena --collate_only   # the report from the cells
  python experiments/arena.py --preset=cpu --data_dir=../shared/data --workdir=runs/arena_cpu   # real CIFAR

One victim (a membership game: the victim trains on half of --num_examples, the attacker's shadows on balanced
halves) behind each defence setting, and a DP-SGD victim per --dp_epsilons; every membership attack and every
extraction attack at every budget and surrogate; PRADA's queries-to-flag per extraction stream. Each measurement is
a cell file under <workdir>/cells/ (a rerun computes only the missing ones). The report: arena.json, cells.csv,
report.md and report.html (plots embedded) in the workdir; see `mlpriv_jax.arena.scoring` for how a defence is
judged (its worst attack per family; dominated settings).

--defences takes names, with strengths after a colon: `label,round2,revsig:0.5/1,mad_argmax:0.5,memguard:1`.

A deployed victim: after a first run has trained it, serve it and add its row (every attack through HTTP):
  python experiments/serve.py --victim=runs/arena/victim/target --keys_file=keys.json --defence=... &
  MLPRIV_API_KEY=... python experiments/arena.py --preset=smoke --workdir=runs/arena --victim_url=http://127.0.0.1:8000
"""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import common  # noqa: E402

_ALL_MIA = ("shokri", "loss", "confidence", "entropy", "mentropy", "lira_online", "lira_offline", "rmia_online",
            "rmia_offline", "gap", "label_augmentation", "label_noise", "label_boundary")
_ALL_EXTRACTION = ("knockoff_random", "knockoff_adaptive", "cloudleak", "jbda")
_VICTIM = dict(momentum=0.9, nesterov=True, schedule="cosine", weight_decay=5e-4, augment=False)
PRESETS = {
    "smoke": dict(dataset="shapes10", arch="cnn_small", num_examples=1000, num_shadows=4,
                  victim=dict(_VICTIM, num_epochs=20, batch_size=64, learning_rate=0.05),
                  defences="label,top1,round2,revsig:0.5,mad_argmax:0.5,memguard:1",
                  membership_attacks=",".join(_ALL_MIA), extraction_attacks=",".join(_ALL_EXTRACTION),
                  budgets="250,1000", surrogates="cnn_tiny", query_set="figures20",
                  surrogate=dict(num_epochs=8, batch_size=32, learning_rate=0.05, momentum=0.9, schedule="cosine",
                                 weight_decay=5e-4, augment=False),
                  num_test=500, label_examples=200, num_population=500, dp_epsilons="8",
                  dp_game=dict(arch="cnn_tiny_gn", num_examples=2000, num_epochs=30, batch_size=256,
                               learning_rate=2.0, weight_decay=0.0),
                  attack_options=dict(label_boundary=dict(max_queries=100, initial_num_evals=10),
                                      label_noise=dict(num_samples=10), cloudleak=dict(num_rounds=2))),
    # CloudLeak is left out of cpu: at 5,000 queries it took 447 s per setting on 2 cores (its surrogate retrained
    # each round), 75 min for the 10 settings; run it with --extraction_attacks or on the paper preset
    "cpu": dict(dataset="cifar10_jpeg", arch="cnn_small", num_examples=4000, num_shadows=8,
                victim=dict(_VICTIM, num_epochs=20, batch_size=128, learning_rate=0.05, augment=True),
                defences="label,top1,round2,gaussian:0.5/2,revsig:0.5/2,mad_argmax:0.5/1,memguard:0.5/1",
                membership_attacks=",".join(_ALL_MIA),
                extraction_attacks="knockoff_random,knockoff_adaptive,jbda",
                budgets="1000,5000", surrogates="cnn_small", query_set="cifar100",
                surrogate=dict(num_epochs=10, batch_size=128, learning_rate=0.05, momentum=0.9, schedule="cosine",
                               weight_decay=5e-4, augment=True),
                num_test=1000, label_examples=300, num_population=1000, dp_epsilons="1,8",
                dp_game=dict(arch="cnn_tiny_gn", num_examples=8000, num_shadows=8, num_epochs=20, batch_size=256,
                             learning_rate=2.0, weight_decay=0.0),
                attack_options=dict(label_boundary=dict(max_queries=300, initial_num_evals=20),
                                    label_noise=dict(num_samples=30), cloudleak=dict(num_rounds=3))),
    # for a GPU; unmeasured
    "paper": dict(dataset="cifar10", arch="wrn28_2", num_examples=50000, num_shadows=64,
                  victim=dict(_VICTIM, num_epochs=100, batch_size=256, learning_rate=0.1, augment=True),
                  defences="label,top1,top3,round1,round2,gaussian:0.5/1/2,revsig:0.5/1/2,mad_argmax:0.1/0.5/1,"
                           "misinfo:0.5/0.9,memguard:0.1/0.5/1",
                  membership_attacks=",".join(_ALL_MIA), extraction_attacks=",".join(_ALL_EXTRACTION),
                  budgets="1000,5000,10000,50000", surrogates="wrn16_4,resnet20", query_set="cifar100",
                  surrogate=dict(num_epochs=100, batch_size=64, learning_rate=0.01, momentum=0.5, schedule="cosine",
                                 weight_decay=0.0, augment=False),
                  num_test=10000, label_examples=1000, num_population=10000, dp_epsilons="1,4,8",
                  dp_game=dict(arch="wrn16_4_gn", num_epochs=100, batch_size=4096, learning_rate=2.0, momentum=0.0,
                               nesterov=False, weight_decay=0.0),
                  attack_options=dict(label_boundary=dict(max_queries=2500, initial_num_evals=100))),
}

common.define_base(PRESETS, workdir_help="Output folder; a rerun computes only the missing cells.")
flags.DEFINE_string("defences", None, "Defences with strengths: name or name:s1/s2 (none is always in).")
flags.DEFINE_string("membership_attacks", None, "Membership attacks, comma-separated ('' for none).")
flags.DEFINE_string("extraction_attacks", None, "Extraction attacks, comma-separated ('' for none).")
flags.DEFINE_string("budgets", None, "Extraction budgets (queries), comma-separated.")
flags.DEFINE_string("surrogates", None, "Surrogate architectures, comma-separated.")
flags.DEFINE_string("dp_epsilons", None, "Epsilons of the DP-SGD victims ('' for none).")
flags.DEFINE_integer("num_examples", None, "The membership universe (the victim trains on half).")
flags.DEFINE_integer("num_shadows", None, "The attacker's shadow models.")
flags.DEFINE_boolean("monitor", True, "Measure PRADA's queries-to-flag on each extraction stream.")
flags.DEFINE_boolean("collate_only", False, "Rebuild the report from the cells; compute nothing.")
flags.DEFINE_string("victim_url", None, "Add the setting `served`: the arena's victim as served at this URL "
                    "(experiments/serve.py --victim=<workdir>/victim/target, behind the server's own defence).")
flags.DEFINE_string("api_key", None, "API key for --victim_url (default: $MLPRIV_API_KEY).")
flags.DEFINE_string("model_name", "victim", "Model name at --victim_url.")
FLAGS = flags.FLAGS


def _names(text):
  return tuple(n.strip() for n in str(text).split(",") if n.strip())


def _defences(text):
  from mlpriv_jax.errors import UserError
  out = []
  for item in _names(text):
    name, _, strengths = item.partition(":")
    try:
      out.append((name, tuple(float(s) for s in strengths.split("/") if s)))
    except ValueError:
      raise UserError(f"--defences: strengths of {name} must be numbers separated by '/', got {strengths!r}") from None
  return tuple(out)


def main(argv):
  del argv
  from mlpriv_jax import train
  from mlpriv_jax.arena import run
  s = common.settings(PRESETS, ("defences", "membership_attacks", "extraction_attacks", "budgets", "surrogates",
                                "dp_epsilons", "num_examples", "num_shadows"))
  cfg = run.ArenaConfig(
      dataset=s["dataset"], arch=s["arch"], num_examples=s["num_examples"], num_shadows=s["num_shadows"],
      victim_config=train.TrainConfig(**s["victim"]).validate(), defences=_defences(s["defences"]),
      membership_attacks=_names(s["membership_attacks"]), extraction_attacks=_names(s["extraction_attacks"]),
      budgets=tuple(int(b) for b in common.parse_floats(s["budgets"], "--budgets")),
      surrogates=_names(s["surrogates"]), query_set=s["query_set"],
      surrogate_config=train.TrainConfig(**s["surrogate"]).validate(), num_test=s["num_test"],
      label_examples=s["label_examples"], num_population=s["num_population"],
      attack_options=tuple((k, tuple(sorted(v.items()))) for k, v in sorted(s["attack_options"].items())),
      dp_epsilons=tuple(common.parse_floats(s["dp_epsilons"], "--dp_epsilons")),
      dp_game=tuple(sorted(s["dp_game"].items())), monitor=FLAGS.monitor, seed=FLAGS.seed)
  run.run(cfg, workdir=FLAGS.workdir, data_dir=FLAGS.data_dir, collate_only=FLAGS.collate_only,
          run_config=dict(preset=FLAGS.preset), victim_url=FLAGS.victim_url,
          api_key=FLAGS.api_key or os.environ.get("MLPRIV_API_KEY"), model_name=FLAGS.model_name, log=common.log)


if __name__ == "__main__":
  common.run(main)
