r"""Trains one model, or K models at once, on a dataset; writes results.json.

  python experiments/train.py --preset=smoke --workdir=runs/demo
  python experiments/train.py --preset=cpu --data_dir=../shared/data --workdir=runs/cpu
  python experiments/train.py --preset=paper --arch=wrn16_8 --dataset=cifar10 --workdir=runs/wrn16_8

Presets (explicit flags override them):
  smoke: cnn_small on 4,000 embedded shapes10 images, 5 epochs; under a minute on 2 CPU cores.
  cpu:   resnet20 on 15,000 real CIFAR-10 images (cifar10_jpeg.npz), 10 epochs, cosine;
         about 15 minutes on 2 CPU cores (resnet20 trains at ~188 img/s there).
  paper: the architecture's standard recipe on full CIFAR-10 (algorithms.md, section 11); for a GPU.

Rerunning with the same --workdir resumes from the last epoch's checkpoint.
Writes <workdir>/results.json (test_accuracy, num_params, train_images_per_sec,
compile_seconds, wall_seconds, ...), metrics.jsonl (one line per epoch), config.json,
and keep.npy when --num_models > 1.
"""

import os
import sys
import time

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import common  # noqa: E402

PRESETS = {
    "smoke": dict(dataset="shapes10", arch="cnn_small", num_train=4000, num_epochs=5, batch_size=128,
                  learning_rate=0.05, schedule="cosine", weight_decay=5e-4, nesterov=True, momentum=0.9),
    "cpu": dict(dataset="cifar10_jpeg", arch="resnet20", num_train=15000, num_epochs=10, batch_size=128,
                learning_rate=0.1, schedule="cosine", weight_decay=5e-4, nesterov=True, momentum=0.9),
    "paper": dict(dataset="cifar10", num_train=0, batch_size=128, num_epochs=200),
}
# Per-architecture recipes for --preset=paper (algorithms.md, section 11).
PAPER_RECIPES = {
    "wrn": dict(learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="multistep",
                milestones_epochs="60,120,160", lr_decay_factor=0.2),
    "resnet_cifar": dict(learning_rate=0.1, momentum=0.9, nesterov=False, weight_decay=1e-4, schedule="multistep",
                         milestones_epochs="100,150", lr_decay_factor=0.1),
    "other": dict(learning_rate=0.1, momentum=0.9, nesterov=False, weight_decay=5e-4, schedule="cosine"),
}

flags.DEFINE_enum("preset", "smoke", list(PRESETS), "Scale of the run; explicit flags override it.")
flags.DEFINE_string("dataset", None, "Dataset name (shapes10, patterns20, cifar10, cifar10_jpeg, cifar100, ...).")
flags.DEFINE_string("arch", None, "Architecture (wrn16_8, wrn22_8, resnet32, resnet18, vgg16, cnn_small, ...).")
flags.DEFINE_string("workdir", None, "Output folder; a rerun with the same folder resumes.")
flags.DEFINE_string("data_dir", None, "Folder with <dataset>.npz files (else $MLPRIV_DATA_DIR, else TFDS).")
flags.DEFINE_integer("seed", 0, "Root seed; model k uses fold_in(key(seed), k).")
flags.DEFINE_integer("num_models", 1, "Train this many models at once (train_k).")
flags.DEFINE_float("keep_fraction", 1.0, "With num_models > 1: fraction of the data each model keeps "
                   "(0.5 gives LiRA's balanced masks).")
flags.DEFINE_integer("chunk_size", None, "With num_models > 1: models per jitted step (memory/compile time).")
flags.DEFINE_enum("model_axis", "auto", ["auto", "vmap", "unroll"], "How K models share a step.")
flags.DEFINE_integer("num_train", None, "Use the first num_train training images (0: all).")
flags.DEFINE_integer("num_epochs", None, "Epochs.")
flags.DEFINE_integer("batch_size", None, "Images per step (per model).")
flags.DEFINE_float("learning_rate", None, "Peak learning rate.")
flags.DEFINE_float("momentum", None, "SGD momentum.")
flags.DEFINE_boolean("nesterov", None, "Nesterov momentum.")
flags.DEFINE_float("weight_decay", None, "Coupled (PyTorch-style) weight decay.")
flags.DEFINE_enum("schedule", None, ["multistep", "cosine", "constant"], "Learning-rate schedule.")
flags.DEFINE_string("milestones_epochs", None, "Comma-separated epochs of the multistep decays.")
flags.DEFINE_float("lr_decay_factor", None, "Multistep decay factor.")
flags.DEFINE_boolean("augment", True, "Reflect-pad-4 crop and horizontal flip.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype (parameters stay float32).")
flags.DEFINE_float("dropout_rate", 0.0, "WRN dropout.")
FLAGS = flags.FLAGS


def resolve_settings():
  """Preset values, then the architecture's paper recipe, then explicit flags."""
  s = dict(momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="cosine", milestones_epochs="",
           lr_decay_factor=0.2, learning_rate=0.1)
  s.update(PRESETS[FLAGS.preset])
  if FLAGS.preset == "paper":
    arch = FLAGS.arch or "wrn16_8"
    s["arch"] = arch
    family = common.arch_family(arch)
    s.update(PAPER_RECIPES[family])
  for name in ("dataset", "arch", "num_train", "num_epochs", "batch_size", "learning_rate", "momentum", "nesterov",
               "weight_decay", "schedule", "milestones_epochs", "lr_decay_factor"):
    if FLAGS[name].present or (s.get(name) is None and FLAGS[name].value is not None):
      s[name] = FLAGS[name].value
  return s


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp
  import numpy as np

  from mlpriv_jax import data, models, train
  from mlpriv_jax.utils import append_jsonl, write_json

  t_start = time.time()
  s = resolve_settings()
  if not FLAGS.workdir:
    raise ValueError("--workdir is required")
  if FLAGS.num_models < 1:
    raise ValueError(f"--num_models must be >= 1, got {FLAGS.num_models}")
  if s["num_train"] is not None and s["num_train"] < 0:
    raise ValueError(f"--num_train must be >= 0, got {s['num_train']}")
  models.canonical_name(s["arch"])  # an unknown name fails before any data is loaded
  milestones = tuple(int(m) for m in str(s["milestones_epochs"]).split(",") if m.strip())
  config = train.TrainConfig(
      num_epochs=s["num_epochs"], batch_size=s["batch_size"], learning_rate=s["learning_rate"],
      momentum=s["momentum"], nesterov=s["nesterov"], weight_decay=s["weight_decay"], schedule=s["schedule"],
      milestones_epochs=milestones, lr_decay_factor=s["lr_decay_factor"], augment=FLAGS.augment).validate()

  ds = data.load_dataset(s["dataset"], FLAGS.data_dir, seed=FLAGS.seed)
  x_train, y_train = ds.x_train, ds.y_train
  if s["num_train"]:
    if s["num_train"] > len(x_train):
      raise ValueError(f"--num_train {s['num_train']} exceeds the {len(x_train)} training images of {ds.name}")
    x_train, y_train = x_train[: s["num_train"]], y_train[: s["num_train"]]
  mean, std = data.channel_stats(x_train)
  model = models.get_model(s["arch"], ds.num_classes, mean=mean, std=std, dropout_rate=FLAGS.dropout_rate,
                           dtype=jnp.bfloat16 if FLAGS.dtype == "bfloat16" else jnp.float32)
  num_params = models.count_params(model, (1, *ds.image_shape))

  workdir = FLAGS.workdir
  run_config = dict(s, preset=FLAGS.preset, seed=FLAGS.seed, num_models=FLAGS.num_models,
                    keep_fraction=FLAGS.keep_fraction, dtype=FLAGS.dtype, augment=FLAGS.augment,
                    dropout_rate=FLAGS.dropout_rate, arch=model.name, dataset=ds.name, data_source=ds.source,
                    num_train=len(x_train), num_classes=ds.num_classes, mean=mean, std=std,
                    image_shape=list(ds.image_shape))
  common.claim_workdir(workdir, run_config, keys=("arch", "dataset", "num_classes", "num_models", "seed", "num_train"))
  print(f"{model.name}: {num_params:,} parameters; {ds.name} ({ds.source}): {len(x_train)} train, "
        f"{len(ds.x_test)} test images; {config.num_epochs} epochs on {jax.default_backend()}", flush=True)

  key = jax.random.key(FLAGS.seed)
  metrics_path = os.path.join(workdir, "metrics.jsonl")

  def on_epoch_end(record):
    append_jsonl(metrics_path, record)
    acc = record.get("test_accuracy")
    acc = f"{np.mean(acc):.4f}" if acc is not None else "-"
    print(f"epoch {record['epoch']:4d}/{config.num_epochs} models {record['models']} "
          f"loss {record['train_loss']:.4f} test_acc {acc} {record['images_per_sec']:.0f} img/s", flush=True)

  meta = dict(dataset=ds.name, seed=FLAGS.seed)
  eval_data = (ds.x_test, ds.y_test)
  if FLAGS.num_models == 1:
    result = train.train(model, config, x_train, y_train, jax.random.fold_in(key, common.STREAM_TRAIN),
                         ckpt_path=os.path.join(workdir, "checkpoint.msgpack"), eval_data=eval_data,
                         on_epoch_end=on_epoch_end, meta=meta)
    test_accuracy = float(train.evaluate(model, result.state, *eval_data))
  else:
    keep = np.asarray(train.balanced_keep(jax.random.fold_in(key, common.STREAM_KEEP), FLAGS.num_models,
                                          len(x_train), FLAGS.keep_fraction))
    common.save_npy(os.path.join(workdir, "keep.npy"), keep)
    result = train.train_k(model, config, x_train, y_train, keep, jax.random.fold_in(key, common.STREAM_TRAIN),
                           chunk_size=FLAGS.chunk_size, workdir=workdir, eval_data=eval_data,
                           on_epoch_end=on_epoch_end, meta=meta, model_axis=FLAGS.model_axis)
    test_accuracy = [float(a) for a in train.evaluate(model, result.state, *eval_data,
                                                      num_models=FLAGS.num_models, model_axis=FLAGS.model_axis)]
  results = dict(test_accuracy=test_accuracy, num_params=num_params, train_images_per_sec=result.train_images_per_sec,
                 compile_seconds=result.compile_seconds, wall_seconds=time.time() - t_start,
                 arch=model.name, dataset=ds.name, num_models=FLAGS.num_models, epochs=config.num_epochs,
                 backend=jax.default_backend(), device=str(jax.devices()[0].device_kind))
  write_json(os.path.join(workdir, "results.json"), results)
  print(f"test accuracy {np.mean(test_accuracy):.4f}; results in {os.path.join(workdir, 'results.json')}", flush=True)


if __name__ == "__main__":
  common.run(main)
