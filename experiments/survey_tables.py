r"""The survey's Tables 1-2: KnockoffNets (random) surrogates of a WRN-16 and a VGG-16 victim.

  python experiments/survey_tables.py --preset=smoke --workdir=runs/tables        # embedded data, CPU
  python experiments/survey_tables.py --preset=cpu --data_dir=../shared/data --workdir=runs/tables_cpu
  python experiments/survey_tables.py --preset=paper --workdir=runs/tables_paper  # GPU, the survey's recipe
  python experiments/survey_tables.py --preset=gpu --workdir=runs/tables_gpu      # GPU, a recipe for one window

For each table: train the victim (or reuse its checkpoint in the workdir), write it as the artifact
<workdir>/victim_<name>/, query it once with B random images of the pool, train a surrogate of each architecture
(wres16, wres22, res32, res18, vgg16) on the answers, and report `accuracy (ratio)` and `fidelity (ratio)` beside
the survey's figures (`mlpriv_jax.lab.tables`). Writes tables.md, tables.json and results.jsonl; a rerun reuses
finished victims and rows.

Presets (`mlpriv_jax.presets.survey_tables`, each with its measured wall and tables): smoke (embedded data, narrow
stand-ins for the five architectures), cpu (real CIFAR-10 victims, CIFAR-100 queries, B = 10,000), paper (the
survey's scale and architectures, for a GPU), gpu (the paper's scale with a few-epoch bfloat16 recipe, the tables in
one lent GPU window: benchmarks/gpu_check.sh).
"""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import common  # noqa: E402

common.define_base("survey_tables", workdir_help="Output folder; a rerun reuses finished victims and rows.")
flags.DEFINE_list("surrogates", None, "Rows: the survey's surrogate names (default: all five).")
flags.DEFINE_list("tables", None, "Which tables to produce (default: table1, table2).")
flags.DEFINE_boolean("res18_imagenet_stem", False, "Also a res18 row with the ImageNet stem (7x7/2 conv + max-pool).")
flags.DEFINE_integer("num_train", None, "Override: victim training images (0: all).")
flags.DEFINE_integer("budget", None, "Override: queries B per victim.")
flags.DEFINE_integer("victim_epochs", None, "Override: victim epochs.")
flags.DEFINE_integer("surrogate_epochs", None, "Override: surrogate epochs.")
flags.DEFINE_integer("num_test", None, "Override: victim test images scored (0: all).")
flags.DEFINE_list("archs", None, "Override: survey name=architecture pairs, e.g. wres16=wrn16_8,res32=resnet8 "
                  "(a victim's name maps its victim too).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from mlpriv_jax import config as configs
  from mlpriv_jax.lab import tables
  cfg = common.config("survey_tables", dict(surrogates=("rows", tuple), tables=("tables", tuple),
                                            num_train="num_train", budget="budget", num_test="num_test", seed="seed"))
  overrides = {k: FLAGS[k].value for k in ("num_train", "budget", "victim_epochs", "surrogate_epochs", "num_test",
                                           "archs") if common.given(k)}
  archs = dict(cfg.archs, **tables.parse_archs(FLAGS.archs or []))
  if FLAGS.res18_imagenet_stem:
    archs["res18_imagenet"] = "resnet18_imagenet" if FLAGS.preset in ("paper", "gpu") else "resnet18_imagenet_narrow"
    cfg = configs.replace(cfg, dict(rows=(*cfg.rows, "res18_imagenet")))
  change = dict(archs=tuple(archs.items()))
  if common.given("victim_epochs"):
    change["victim"] = tables.with_epochs(cfg.victim, FLAGS.victim_epochs, "victim_epochs")
  if common.given("surrogate_epochs"):
    change["surrogate"] = tables.with_epochs(cfg.surrogate, FLAGS.surrogate_epochs, "surrogate_epochs")
  tables.run(configs.replace(cfg, change), workdir=FLAGS.workdir, data_dir=FLAGS.data_dir,
             run_config=dict(preset=FLAGS.preset, overrides=overrides), log=common.log)


if __name__ == "__main__":
  common.run(main)
