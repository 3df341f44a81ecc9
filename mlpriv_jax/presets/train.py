"""Presets of experiments/train.py: one model (or K) on a named dataset."""

from mlpriv_jax.lab import recipes
from mlpriv_jax.lab.training import TrainRun
from mlpriv_jax.train import TrainConfig

PRESETS = ("smoke", "cpu", "paper")


def smoke() -> TrainRun:
  """cnn_small on 4,000 embedded shapes10 images, 5 epochs.

  Evidence:
    command: python experiments/train.py --preset=smoke --workdir=runs/victim
    machine: 2-core AMD EPYC, 24 GiB, no GPU
    wall: 61 s
    headline: test accuracy 0.8970, 441 img/s
    result: benchmarks/results/presets/train_smoke.json (b86543e, 2026-12-06)
  """
  return TrainRun(dataset="shapes10", arch="cnn_small", num_train=4000,
                  train=TrainConfig(num_epochs=5, batch_size=128, learning_rate=0.05, schedule="cosine",
                                    weight_decay=5e-4, nesterov=True, momentum=0.9, augment=True))


def cpu() -> TrainRun:
  """resnet20 on 15,000 real CIFAR-10 images (cifar10_jpeg.npz), 10 epochs, cosine.

  Evidence:
    command: python experiments/train.py --preset=cpu --data_dir=../shared/data --workdir=runs/cpu
    machine: 2-core Intel Xeon VM (AVX-512, AMX), 24 GiB, no GPU; other jobs shared the cores
    wall: 1292 s
    headline: test accuracy 0.7265 (resnet20, 10 epochs), 133 img/s on shared cores
    result: benchmarks/results/presets/train_cpu.json (1884ef8 (the notes that recorded it), 2026-11-28)
  """
  return TrainRun(dataset="cifar10_jpeg", arch="resnet20", num_train=15000,
                  train=TrainConfig(num_epochs=10, batch_size=128, learning_rate=0.1, schedule="cosine",
                                    weight_decay=5e-4, nesterov=True, momentum=0.9, augment=True))


def paper() -> TrainRun:
  """WRN-16-8 with its published recipe on full CIFAR-10 (`lab.recipes`); train.py gives another --arch its own
  family's recipe.

  Evidence: unmeasured (a GPU preset: 200 epochs of WRN-16-8; the lent H200 measured its throughput, not this run)
  """
  return TrainRun(dataset="cifar10", arch="wrn16_8", num_train=0, train=paper_train("wrn16_8"))


def paper_train(arch: str) -> TrainConfig:
  """The published recipe of `arch`'s family, 200 epochs at batch 128 with crop + flip."""
  r = recipes.paper_recipe(arch)
  del r["arch"]
  if "milestones_epochs" in r:
    r["milestones_epochs"] = tuple(int(m) for m in r["milestones_epochs"].split(","))
  return TrainConfig(num_epochs=200, batch_size=128, augment=True, **r)
