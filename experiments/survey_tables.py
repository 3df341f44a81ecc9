r"""The survey's Tables 1-2: KnockoffNets (random) surrogates of a WRN-16 and a VGG-16 victim.

  python experiments/survey_tables.py --preset=smoke --workdir=runs/tables        # embedded data, CPU
  python experiments/survey_tables.py --preset=cpu --data_dir=../shared/data --workdir=runs/tables_cpu
  python experiments/survey_tables.py --preset=paper --workdir=runs/tables_paper  # GPU

For each table: train the victim (or reuse its checkpoint in the workdir), write it as the artifact
<workdir>/victim_<name>/, query it once with B random images of the pool, train a surrogate of each architecture
(wres16, wres22, res32, res18, vgg16) on the answers, and report `accuracy (ratio)` and `fidelity (ratio)` beside
the survey's figures (`mlpriv_jax.lab.tables`). Writes tables.md, tables.json and results.jsonl; a rerun reuses
finished victims and rows.

Presets (architectures map the survey's names to what the preset trains):
  smoke: shapes10 victims (4,000 images, 5 epochs), figures20 pool, B = 2,000, 15 surrogate epochs;
         stand-ins wrn10_1, wrn16_1, resnet8, resnet18_narrow and vgg11_narrow (VGG-11 at widths / 8, victim
         and surrogate, at lr 0.02) for VGG-16; about 6 min.
  cpu:   CIFAR-10 victims (10,000 images of cifar10_jpeg, 8 epochs), CIFAR-100 pool, B = 10,000,
         6 surrogate epochs; stand-ins as smoke with resnet20 for res32.
  paper: full CIFAR-10 victims (WRN recipe, 200 epochs), B = 50,000 CIFAR-100 queries,
         the real architectures; surrogates with knockoffnets' defaults for 100 epochs.
"""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import common  # noqa: E402

SURVEY_NAMES = ("wres16", "wres22", "res32", "res18", "vgg16")
NARROW = {"wres16": "wrn16_1", "wres22": "wrn22_1", "res32": "resnet8", "res18": "resnet18_narrow",
          "vgg16": "vgg16_narrow"}
# Shallower still: minutes on 2 CPU cores (VGG-11, config A, for VGG-16: the narrow VGG-16 reached 72-89% as a
# victim and 0.29-0.39x as a surrogate in the smoke budget; VGG-11 at lr 0.02, 97% and 0.56-0.64x).
SMOKE = dict(NARROW, wres16="wrn10_1", wres22="wrn16_1", vgg16="vgg11_narrow")
PRESETS = {
    "smoke": dict(victim_dataset="shapes10", num_train=4000, query_set="figures20", budget=2000, archs=SMOKE,
                  victim=dict(num_epochs=5, batch_size=64, learning_rate=0.05, momentum=0.9, nesterov=True,
                              weight_decay=5e-4, schedule="cosine", augment=True, warmup_epochs=1),
                  # 15 epochs: at 10 the deep narrow rows underfit their 2,000 answers (agreement on them 0.70-0.84)
                  # and swung with the seed (resnet18_narrow 0.26-0.75x over five keys); at 15 they fit (0.92-0.93)
                  surrogate=dict(num_epochs=15, batch_size=32, learning_rate=0.05, momentum=0.9, nesterov=False,
                                 weight_decay=5e-4, schedule="cosine", augment=False, warmup_epochs=0.5),
                  lr_by_arch={"vgg11_narrow": 0.02}, num_test=500),   # the narrow VGGs diverge at 0.05
    "cpu": dict(victim_dataset="cifar10_jpeg", num_train=10000, query_set="cifar100", budget=10000,
                archs=dict(NARROW, res32="resnet20"),
                victim=dict(num_epochs=8, batch_size=128, learning_rate=0.1, momentum=0.9, nesterov=True,
                            weight_decay=5e-4, schedule="cosine", augment=True, warmup_epochs=1),
                surrogate=dict(num_epochs=6, batch_size=128, learning_rate=0.05, momentum=0.9, nesterov=False,
                               weight_decay=5e-4, schedule="cosine", augment=True, warmup_epochs=1), num_test=2000),
    "paper": dict(victim_dataset="cifar10", num_train=0, query_set="cifar100", budget=50000,
                  archs={n: n for n in SURVEY_NAMES},
                  victim=dict(num_epochs=200, batch_size=128, learning_rate=0.1, momentum=0.9, nesterov=True,
                              weight_decay=5e-4, schedule="multistep", milestones_epochs=(60, 120, 160),
                              lr_decay_factor=0.2, augment=True),
                  surrogate=dict(num_epochs=100, batch_size=64, learning_rate=0.01, momentum=0.5, nesterov=False,
                                 weight_decay=0.0, schedule="multistep", milestones_epochs=(60,), lr_decay_factor=0.1,
                                 augment=False), num_test=0),
}

common.define_base(PRESETS, workdir_help="Output folder; a rerun reuses finished victims and rows.")
flags.DEFINE_list("surrogates", list(SURVEY_NAMES), "Rows: the survey's surrogate names.")
flags.DEFINE_list("tables", ["table1", "table2"], "Which tables to produce.")
flags.DEFINE_boolean("res18_imagenet_stem", False, "Also a res18 row with the ImageNet stem (7x7/2 conv + max-pool).")
flags.DEFINE_integer("num_train", None, "Override: victim training images (0: all).")
flags.DEFINE_integer("budget", None, "Override: queries B per victim.")
flags.DEFINE_integer("victim_epochs", None, "Override: victim epochs.")
flags.DEFINE_integer("surrogate_epochs", None, "Override: surrogate epochs.")
flags.DEFINE_integer("num_test", None, "Override: victim test images scored (0: all).")
flags.DEFINE_list("archs", [], "Override: survey name=architecture pairs, e.g. wres16=wrn16_8,res32=resnet8 "
                  "(a victim's name maps its victim too).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from mlpriv_jax.lab import tables
  s = common.settings(PRESETS, ("num_train", "budget", "num_test"))
  overrides = {k: FLAGS[k].value for k in ("num_train", "budget", "victim_epochs", "surrogate_epochs", "num_test",
                                           "archs") if common.given(k)}
  archs, rows = dict(s["archs"], **tables.parse_archs(FLAGS.archs)), list(FLAGS.surrogates)
  if FLAGS.res18_imagenet_stem:
    archs["res18_imagenet"] = "resnet18_imagenet" if FLAGS.preset == "paper" else "resnet18_imagenet_narrow"
    rows.append("res18_imagenet")
  tables.run(workdir=FLAGS.workdir, victim_dataset=s["victim_dataset"], query_set=s["query_set"],
             num_train=s["num_train"], budget=s["budget"], archs=archs,
             victim_config=tables.config_of(tables.with_epochs(s["victim"], FLAGS.victim_epochs, "victim_epochs")),
             surrogate_config=tables.config_of(tables.with_epochs(s["surrogate"], FLAGS.surrogate_epochs, "surrogate_epochs")),
             num_test=s["num_test"], rows=rows, tables=FLAGS.tables, data_dir=FLAGS.data_dir, seed=FLAGS.seed,
             lr_by_arch=s.get("lr_by_arch"),
             run_config=dict(preset=FLAGS.preset, overrides=overrides), log=common.log)


if __name__ == "__main__":
  common.run(main)
