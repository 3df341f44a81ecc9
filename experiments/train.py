r"""Trains one model, or K models at once, on a dataset; writes results.json and the model artifact.

  python experiments/train.py --preset=smoke --workdir=runs/demo
  python experiments/train.py --preset=cpu --data_dir=../shared/data --workdir=runs/cpu
  python experiments/train.py --preset=paper --arch=wrn16_8 --dataset=cifar10 --workdir=runs/wrn16_8

Presets (explicit flags override them):
  smoke: cnn_small on 4,000 embedded shapes10 images, 5 epochs; under a minute on 2 CPU cores.
  cpu:   resnet20 on 15,000 real CIFAR-10 images (cifar10_jpeg.npz), 10 epochs, cosine;
         about 15 minutes on 2 CPU cores (resnet20 trains at ~188 img/s there).
  paper: the architecture's published recipe on full CIFAR-10 (`mlpriv_jax.lab.recipes`); for a GPU.

DP-SGD (Abadi et al. 2016) with --dp_epsilon: a GroupNorm model, Poisson sampling at rate batch_size / n, the
noise multiplier calibrated by dp-accounting; results.json's `dp` holds the guarantee.

  python experiments/train.py --preset=smoke --arch=cnn_small_gn --dp_epsilon=4 --workdir=runs/dp4

Rerunning with the same --workdir resumes from the last epoch's checkpoint. Writes <workdir>/model/ (the
artifact every other program and the server load), results.json, results.jsonl, metrics.jsonl (one line per
epoch), config.json, and keep.npy plus model_<k>/ when --num_models > 1.
"""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import common  # noqa: E402

PRESETS = {
    "smoke": dict(dataset="shapes10", arch="cnn_small", num_train=4000, num_epochs=5, batch_size=128,
                  learning_rate=0.05, schedule="cosine", weight_decay=5e-4, nesterov=True, momentum=0.9, augment=True),
    "cpu": dict(dataset="cifar10_jpeg", arch="resnet20", num_train=15000, num_epochs=10, batch_size=128,
                learning_rate=0.1, schedule="cosine", weight_decay=5e-4, nesterov=True, momentum=0.9, augment=True),
    "paper": dict(dataset="cifar10", arch="wrn16_8", num_train=0, batch_size=128, num_epochs=200, augment=True),
}

common.define_base(PRESETS)
common.define_train_flags()
common.define_dp_flags()
flags.DEFINE_string("dataset", None, "Dataset name (shapes10, patterns20, cifar10, cifar10_jpeg, cifar100, ...).")
flags.DEFINE_string("arch", None, "Architecture (wrn16_8, wrn22_8, resnet32, resnet18, vgg16, cnn_small, ...).")
flags.DEFINE_integer("num_models", 1, "Train this many models at once (train_k).")
flags.DEFINE_float("keep_fraction", 1.0, "With num_models > 1: fraction of the data each model keeps "
                   "(0.5 gives LiRA's balanced masks).")
flags.DEFINE_integer("chunk_size", None, "With num_models > 1: models per jitted step (memory/compile time).")
flags.DEFINE_enum("model_axis", "auto", ["auto", "vmap", "unroll"], "How K models share a step.")
flags.DEFINE_integer("num_train", None, "Use the first num_train training images (0: all).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype (parameters stay float32).")
flags.DEFINE_float("dropout_rate", 0.0, "WRN dropout.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from mlpriv_jax.lab import recipes, training
  paper = (lambda s: recipes.paper_recipe(FLAGS.arch or s["arch"])) if FLAGS.preset == "paper" else None
  s = common.settings(PRESETS, ("dataset", "arch", "num_train", *common.TRAIN_FLAGS), derived=paper)
  training.run(dataset=s["dataset"], arch=s["arch"], workdir=FLAGS.workdir, config=common.train_config(s),
               data_dir=FLAGS.data_dir, seed=FLAGS.seed, num_train=s["num_train"], num_models=FLAGS.num_models,
               keep_fraction=FLAGS.keep_fraction, chunk_size=FLAGS.chunk_size, model_axis=FLAGS.model_axis,
               dtype=FLAGS.dtype, dropout_rate=FLAGS.dropout_rate, dp_target=common.dp_target(),
               run_config=dict(preset=FLAGS.preset),
               log=common.log)


if __name__ == "__main__":
  common.run(main)
