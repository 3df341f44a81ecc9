r"""Trains one model, or K models at once, on a dataset; writes results.json and the model artifact.

  python experiments/train.py --preset=smoke --workdir=runs/demo
  python experiments/train.py --preset=cpu --data_dir=../shared/data --workdir=runs/cpu
  python experiments/train.py --preset=paper --arch=wrn16_8 --dataset=cifar10 --workdir=runs/wrn16_8

Presets (`mlpriv_jax.presets.train`, each with its measured wall and figure; explicit flags override them):
smoke (cnn_small on 4,000 embedded shapes10 images), cpu (resnet20 on 15,000 real CIFAR-10 images), paper (the
architecture's published recipe on full CIFAR-10, for a GPU).

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

common.define_base("train")
common.define_train_flags()
common.define_dp_flags()
common.define_host_flags()
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
  from mlpriv_jax import config as configs
  from mlpriv_jax.lab import training
  from mlpriv_jax.presets import train as presets
  paths = dict(common.train_paths("train"), dataset="dataset", arch="arch", num_train="num_train",
               num_models="num_models", keep_fraction="keep_fraction", chunk_size="chunk_size",
               model_axis="model_axis", dtype="dtype", dropout_rate="dropout_rate", seed="seed")
  cfg = configs.replace(common.config("train", {}), dict(dp=common.dp_target()))
  if FLAGS.preset == "paper" and FLAGS.arch:   # another architecture gets its own family's published recipe
    cfg = configs.replace(cfg, dict(train=presets.paper_train(FLAGS.arch)))
  cfg = common.config("train", paths, base=cfg)
  training.run(cfg, workdir=FLAGS.workdir, data_dir=FLAGS.data_dir, run_config=dict(preset=FLAGS.preset),
               log=common.log)


if __name__ == "__main__":
  common.run(main)
