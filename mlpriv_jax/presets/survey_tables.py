"""Presets of experiments/survey_tables.py: the survey's Tables 1-2 (KnockoffNets-random surrogates of a WRN-16 and
a VGG-16 victim), the survey's architecture names mapped to what each scale trains in their place."""

from mlpriv_jax.lab.tables import SURVEY_NAMES, TablesRun
from mlpriv_jax.train import TrainConfig

PRESETS = ("smoke", "cpu", "paper")
NARROW = (("wres16", "wrn16_1"), ("wres22", "wrn22_1"), ("res32", "resnet8"), ("res18", "resnet18_narrow"),
          ("vgg16", "vgg16_narrow"))
# Shallower still, for the smoke budget on 2 CPU cores: VGG-11 (config A) stands for VGG-16, whose narrow version
# learnt too little there as a victim and as a surrogate.
SMOKE = (("wres16", "wrn10_1"), ("wres22", "wrn16_1"), ("res32", "resnet8"), ("res18", "resnet18_narrow"),
         ("vgg16", "vgg11_narrow"))


def smoke() -> TablesRun:
  """shapes10 victims (4,000 images, 5 epochs), the figures20 pool, B = 2,000, 15 surrogate epochs; stand-ins
  wrn10_1, wrn16_1, resnet8, resnet18_narrow and vgg11_narrow (VGG-11 at widths / 8, victim and surrogate, at
  lr 0.02: the narrow VGGs diverge at 0.05). 15 surrogate epochs: at 10 the deep narrow rows underfit their 2,000
  answers and swung with the seed; at 15 they fit them. `make demo` runs it.

  Evidence:
    command: python experiments/survey_tables.py --preset=smoke --workdir=runs/demo
    machine: 2-core AMD EPYC, 24 GiB, no GPU
    wall: 730 s
    headline: table1 victim 94.2%, fidelity 0.73/0.85/0.59/0.84/0.87; table2 victim 97.4%, fidelity
      0.55/0.65/0.77/0.59/0.77
    result: benchmarks/results/presets/survey_tables_smoke.json (7e35a0a, 2026-12-06)
  """
  return TablesRun(
      victim_dataset="shapes10", num_train=4000, query_set="figures20", budget=2000, archs=SMOKE,
      victim=TrainConfig(num_epochs=5, batch_size=64, learning_rate=0.05, momentum=0.9, nesterov=True,
                         weight_decay=5e-4, schedule="cosine", augment=True, warmup_epochs=1),
      surrogate=TrainConfig(num_epochs=15, batch_size=32, learning_rate=0.05, momentum=0.9, nesterov=False,
                            weight_decay=5e-4, schedule="cosine", augment=False, warmup_epochs=0.5),
      lr_by_arch=(("vgg11_narrow", 0.02),), num_test=500)


def cpu() -> TablesRun:
  """CIFAR-10 victims (10,000 images of cifar10_jpeg, 8 epochs), the CIFAR-100 pool, B = 10,000, 6 surrogate
  epochs; stand-ins as smoke's narrow ones with resnet20 for res32.

  Evidence:
    command: python experiments/survey_tables.py --preset=cpu --data_dir=../shared/data --workdir=runs/tables_cpu
    machine: 2-core VM, 24 GiB, no GPU, alone
    wall: 2092 s
    headline: victims 65.0% and 60.1%; surrogates 0.69-0.86x of their accuracy, fidelity 0.57-0.71
    result: benchmarks/results/presets/survey_tables_cpu.json (6a21074 (the notes that recorded it), 2026-11-28)
  """
  archs = tuple((n, "resnet20" if n == "res32" else a) for n, a in NARROW)
  return TablesRun(
      victim_dataset="cifar10_jpeg", num_train=10000, query_set="cifar100", budget=10000, archs=archs,
      victim=TrainConfig(num_epochs=8, batch_size=128, learning_rate=0.1, momentum=0.9, nesterov=True,
                         weight_decay=5e-4, schedule="cosine", augment=True, warmup_epochs=1),
      surrogate=TrainConfig(num_epochs=6, batch_size=128, learning_rate=0.05, momentum=0.9, nesterov=False,
                            weight_decay=5e-4, schedule="cosine", augment=True, warmup_epochs=1),
      num_test=2000)


def paper() -> TablesRun:
  """Full CIFAR-10 victims (the WRN recipe, 200 epochs), B = 50,000 CIFAR-100 queries, the real architectures;
  surrogates with knockoffnets' defaults for 100 epochs.

  Evidence: unmeasured (a GPU preset: about 3.7 hours projected on an H200 from the lent run's throughput)
  """
  return TablesRun(
      victim_dataset="cifar10", num_train=0, query_set="cifar100", budget=50000,
      archs=tuple((n, n) for n in SURVEY_NAMES),
      victim=TrainConfig(num_epochs=200, batch_size=128, learning_rate=0.1, momentum=0.9, nesterov=True,
                         weight_decay=5e-4, schedule="multistep", milestones_epochs=(60, 120, 160),
                         lr_decay_factor=0.2, augment=True),
      surrogate=TrainConfig(num_epochs=100, batch_size=64, learning_rate=0.01, momentum=0.5, nesterov=False,
                            weight_decay=0.0, schedule="multistep", milestones_epochs=(60,), lr_decay_factor=0.1,
                            augment=False),
      num_test=0)
