"""Presets of experiments/survey_tables.py: the survey's Tables 1-2 (KnockoffNets-random surrogates of a WRN-16 and
a VGG-16 victim), the survey's architecture names mapped to what each scale trains in their place."""

from mlpriv_jax.lab.tables import SURVEY_NAMES, TablesRun
from mlpriv_jax.train import TrainConfig

PRESETS = ("smoke", "cpu", "paper", "gpu")
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
    machine: 2-core AMD EPYC, 24 GiB, no GPU
    wall: 2279 s
    headline: table1 victim 66.3%, fidelity 0.58/0.68/0.63/0.55/0.64; table2 victim 61.6%, fidelity
      0.64/0.68/0.67/0.63/0.64
    result: benchmarks/results/presets/survey_tables_cpu.json (05d90bf, 2026-12-08)
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


def gpu() -> TablesRun:
  """The whole of both tables at full scale in one lent GPU window: `paper`'s data, budget and architectures with a
  recipe built for few epochs (airbench's lesson, Jordan 2024: nothing wasted), run as two commands by
  benchmarks/gpu_check.sh (table1, then table2 resuming the workdir).

  Recipe (tests/presets_test.py holds the config to these lines):
    dtype: bfloat16
    victim.num_epochs: 30
    victim.batch_size: 512
    victim.learning_rate: 0.4
    victim.label_smoothing: 0.1
    victim.warmup_epochs: 2
    victim.schedule: cosine
    surrogate.num_epochs: 25
    surrogate.batch_size: 512
    surrogate.learning_rate: 0.2
    surrogate.momentum: 0.9
    surrogate.nesterov: True
    surrogate.weight_decay: 0.0005
    surrogate.augment: True
    surrogate.warmup_epochs: 1
    surrogate.schedule: cosine
    checkpoint_every_s: 60
    lr_by_arch: (('vgg16', 0.2),)

  Why each: bfloat16 compute with float32 parameters, and batch 512 instead of 128 (victims) and 64 (surrogates),
  because the lent H200 trained every survey architecture fastest that way (benchmarks/results/gpu_h200.json: the
  per-architecture images per second of bfloat16 at batch 128 and 512). The victims' learning rate scales linearly
  with the batch (Goyal et al. 2017) from the WRN recipe's 0.1 at 128; the surrogates' is half the victims', as in
  the `cpu` preset; each with a linear warm-up, then a cosine decay to 0, a schedule that ends in few epochs where
  the multistep one assumes 200. VGG-16 (victim and surrogate) trains at half the WRN's rate, because the CPU
  proxy's narrow VGG-16 learnt far less at the scaled rate than at the `cpu` preset's. Label smoothing 0.1 on the
  victims' hard labels (Szegedy et al. 2016), as short schedules use it; the surrogates learn the victim's
  probabilities as KnockoffNets does (no smoothing), with momentum 0.9 and weight decay in place of knockoffnets'
  0.5 and 0, which suit its 100 epochs, and with the victims' crop-and-flip augmentation of the queries. The images
  stay on the device (the engine's gather), the victims are evaluated once at the end and checkpointed at most once
  a minute (a WRN-16-8 checkpoint with its momentum is 84 MB; what writing one costs against a GPU epoch:
  BUILD_NOTES.md, The GPU). The epoch counts are what fits the window at the H200's measured throughput (the same
  section). The CPU proxy of these ideas (the `cpu` preset's victim
  recipe against this one at 2-core scale) is benchmarks/results/victim_recipe_cpu.json. Differences from the
  survey's recipe: docs/differences.md.

  Evidence: unmeasured (a GPU preset; no session since it was written has been lent a device)
  """
  base = paper()
  victim = TrainConfig(num_epochs=30, batch_size=512, learning_rate=0.4, momentum=0.9, nesterov=True,
                       weight_decay=5e-4, schedule="cosine", warmup_epochs=2, augment=True, label_smoothing=0.1)
  surrogate = TrainConfig(num_epochs=25, batch_size=512, learning_rate=0.2, momentum=0.9, nesterov=True,
                          weight_decay=5e-4, schedule="cosine", warmup_epochs=1, augment=True)
  return TablesRun(victim_dataset=base.victim_dataset, num_train=0, query_set=base.query_set, budget=base.budget,
                   archs=base.archs, victim=victim, surrogate=surrogate, num_test=0, dtype="bfloat16",
                   checkpoint_every_s=60, lr_by_arch=(("vgg16", 0.2),))
