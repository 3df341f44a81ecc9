"""Presets of experiments/extract.py: one extraction attack against a trained victim (the attack a flag)."""

from mlpriv_jax.games.extraction import ExtractionAudit
from mlpriv_jax.lab.extraction import ExtractRun
from mlpriv_jax.train import TrainConfig

PRESETS = ("smoke", "cpu", "paper")


def smoke() -> ExtractRun:
  """The embedded figures20 pool, 2,000 queries, a cnn_small surrogate.

  Evidence:
    command: python experiments/extract.py --preset=smoke --victim=runs/victim --workdir=runs/ko
    machine: 2-core AMD EPYC, 24 GiB, no GPU
    wall: 53 s
    headline: fidelity 0.471, accuracy 42.70 (0.48x) at 2000 queries (victim 0.897)
    result: benchmarks/results/presets/extract_smoke.json (7e35a0a, 2026-12-06)
  """
  return ExtractRun(ExtractionAudit(
      attacks=("knockoff_random",), budgets=(500, 1000, 2000), surrogates=("cnn_small",), query_set="figures20",
      surrogate=TrainConfig(num_epochs=6, batch_size=64, learning_rate=0.05, momentum=0.9, nesterov=False,
                            weight_decay=5e-4, schedule="cosine", milestones_epochs=(), lr_decay_factor=0.1,
                            augment=False)))


def cpu() -> ExtractRun:
  """The CIFAR-100 pool, 10,000 queries, a resnet20 surrogate.

  Evidence: unmeasured (never run alone; the arena's cpu preset runs its attacks at 5,000 queries)
  """
  return ExtractRun(ExtractionAudit(
      attacks=("knockoff_random",), budgets=(1000, 5000, 10000), surrogates=("resnet20",), query_set="cifar100",
      surrogate=TrainConfig(num_epochs=10, batch_size=128, learning_rate=0.05, momentum=0.9, nesterov=False,
                            weight_decay=5e-4, schedule="cosine", milestones_epochs=(), lr_decay_factor=0.1,
                            augment=True)))


def paper() -> ExtractRun:
  """CIFAR-100, 50,000 queries, a WRN-16-8 surrogate with knockoffnets' training defaults (SGD lr 0.01, momentum
  0.5, no weight decay, x0.1 at epoch 60 of 100, batch 64, no augmentation).

  Evidence: unmeasured (a GPU preset)
  """
  return ExtractRun(ExtractionAudit(
      attacks=("knockoff_random",), budgets=(1000, 5000, 10000, 50000), surrogates=("wrn16_8",), query_set="cifar100",
      surrogate=TrainConfig(num_epochs=100, batch_size=64, learning_rate=0.01, momentum=0.5, nesterov=False,
                            weight_decay=0.0, schedule="multistep", milestones_epochs=(60,), lr_decay_factor=0.1,
                            augment=False)))
