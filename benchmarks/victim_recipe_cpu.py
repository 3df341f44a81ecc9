r"""The survey tables' CIFAR-10 victims on 2 CPU cores: the `cpu` preset's recipe against the fast recipe's ideas.

  python benchmarks/victim_recipe_cpu.py --data_dir=../shared/data --out=benchmarks/results/victim_recipe_cpu.json

For each victim stand-in (wrn16_1 for WRN-16-8, vgg16_narrow for VGG-16) this trains, one after the other on the
same machine:
  preset: the `cpu` preset's victim recipe (10,000 images, batch 128, lr 0.1, 8 epochs, cosine, 1 warm-up epoch);
  fast:   the `gpu` preset's ideas at the same number of images seen (what sets the wall on 2 cores): more
          distinct images for fewer epochs, batch 512 with the learning rate scaled linearly (0.4), label
          smoothing 0.1, a warm-up of a quarter of the run, evaluation and checkpoint only at the end;
and reports each run's wall (compile included) and test accuracy on the 10,000 CIFAR-10 test images.
"""

import dataclasses
import datetime
import os
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks.provenance import commit, machine  # noqa: E402

flags.DEFINE_string("data_dir", None, "Folder with cifar10_jpeg.npz.")
flags.DEFINE_list("archs", ["wrn16_1", "vgg16_narrow"], "Victim stand-ins.")
flags.DEFINE_integer("fast_images", 40000, "Distinct training images of the fast recipe.")
flags.DEFINE_integer("fast_epochs", 2, "Its epochs (fast_images x fast_epochs = the preset's 80,000 images seen).")
flags.DEFINE_float("fast_lr", 0.4, "Its peak learning rate at batch 512.")
flags.DEFINE_float("label_smoothing", 0.1, "Its label smoothing.")
flags.DEFINE_list("recipes", ["preset", "fast", "fast_b128"], "Which recipes to run: preset, fast, fast_b128.")
flags.DEFINE_string("out", None, "Also write the JSON here.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import jax
  import numpy as np

  from mlpriv_jax import data, models, train
  from mlpriv_jax.presets import survey_tables as P
  from mlpriv_jax.utils import write_json

  ds = data.load_dataset("cifar10_jpeg", FLAGS.data_dir, seed=0)
  preset = P.cpu()
  recipes = {
      "preset": (preset.num_train, preset.victim),
      "fast": (FLAGS.fast_images, train.TrainConfig(
          num_epochs=FLAGS.fast_epochs, batch_size=512, learning_rate=FLAGS.fast_lr, momentum=0.9, nesterov=True,
          weight_decay=5e-4, schedule="cosine", augment=True, warmup_epochs=FLAGS.fast_epochs / 4,
          label_smoothing=FLAGS.label_smoothing)),
  }
  # The same ideas at the batch that is fastest on 2 cores (batch 512 runs slower per image there).
  recipes["fast_b128"] = (FLAGS.fast_images, dataclasses.replace(recipes["fast"][1], batch_size=128,
                                                                  learning_rate=FLAGS.fast_lr / 4))
  rows = {}
  for arch in FLAGS.archs:
    for name in FLAGS.recipes:
      n, config = recipes[name]
      x, y = ds.x_train[:n], ds.y_train[:n]
      mean, std = data.channel_stats(x)
      model = models.get_model(arch, 10, mean=mean, std=std)
      t0 = time.perf_counter()
      r = train.train(model, config, x, y, jax.random.key(0))
      acc = float(train.evaluate(model, r.state, ds.x_test, ds.y_test))
      wall = time.perf_counter() - t0
      rows[f"{arch}/{name}"] = dict(arch=arch, recipe=name, num_train=n, epochs=config.num_epochs,
                                    batch_size=config.batch_size, learning_rate=config.learning_rate,
                                    label_smoothing=config.label_smoothing, images_seen=n * config.num_epochs,
                                    wall_seconds=round(wall, 1), compile_seconds=round(r.compile_seconds, 1),
                                    test_accuracy=round(acc, 4))
      print(f"{arch} {name}: {acc:.4f} in {wall:.0f} s", file=sys.stderr, flush=True)
  summary = "; ".join(f"{a}: " + ", ".join(f"{r} {rows[f'{a}/{r}']['test_accuracy']:.3f} in "
                                           f"{rows[f'{a}/{r}']['wall_seconds']:.0f} s" for r in FLAGS.recipes)
                      for a in FLAGS.archs)
  report = dict(
      what="the cpu preset's CIFAR-10 victims against the fast recipe's ideas at the same images seen (2 CPU cores)",
      summary=summary, rows=rows,
      provenance=dict(machine=machine(), date=datetime.date.today().isoformat(), commit=commit(),
                      command="python benchmarks/victim_recipe_cpu.py " + " ".join(sys.argv[1:])))
  print(summary, file=sys.stderr)
  if FLAGS.out:
    write_json(FLAGS.out, report)


if __name__ == "__main__":
  app.run(main)
