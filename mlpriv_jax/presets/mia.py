"""Presets of experiments/mia.py: the membership game and every attack against the target behind its defence.

`game` is the target's and the shadows' recipe; `dp_game` replaces it under --dp_epsilon (DP-SGD needs a GroupNorm
model, more data, larger expected batches and a larger learning rate, since clipping shrinks the gradient).
"""

from mlpriv_jax.attacks import membership as M
from mlpriv_jax.games.membership import MembershipAudit, MembershipGame
from mlpriv_jax.lab.membership import MiaRun
from mlpriv_jax.train import TrainConfig

PRESETS = ("smoke", "cpu", "paper")
ALL = tuple(M.REGISTRY)


def _recipe(**kw) -> TrainConfig:
  """SGD with Nesterov momentum 0.9, cosine, a warm-up of min(1, epochs / 10) epochs."""
  return TrainConfig(**dict(dict(momentum=0.9, nesterov=True, schedule="cosine",
                                 warmup_epochs=min(1.0, kw["num_epochs"] / 10)), **kw))


def _dp_recipe(**kw) -> TrainConfig:
  return _recipe(**dict(dict(learning_rate=2.0, weight_decay=0.0), **kw))


def _queries(label_examples: int, hsj_max_queries, hsj_initial_evals: int, noise_samples: int) -> dict:
  """The label-only attacks' query budgets: HopSkipJump capped per example (None: cleverhans' 64 iterations)."""
  return dict(label_examples=label_examples, options=M.MembershipOptions(
      label_noise=M.LabelNoiseOptions(num_samples=noise_samples),
      label_boundary=M.LabelBoundaryOptions(max_queries=hsj_max_queries, initial_num_evals=hsj_initial_evals)))


def smoke() -> MiaRun:
  """shapes10, 1,000 examples, cnn_small, 8 shadows; the label-only attacks on 500 candidates, HopSkipJump capped
  at 300 queries each. DP: cnn_tiny_gn on 4,000 examples, 40 epochs, expected batch 256, lr 2.

  Evidence:
    command: python experiments/mia.py --preset=smoke --workdir=runs/mia
    machine: 2-core AMD EPYC, 24 GiB, no GPU
    wall: 308 s
    headline: target test acc 0.760; lira_online AUC 0.927, TPR@0.1% 0.018; best label-only AUC 0.719 (label_noise)
    result: benchmarks/results/presets/mia_smoke.json (7e35a0a, 2026-12-06)
  """
  return MiaRun(
      game=MembershipGame("shapes10", "cnn_small", 1000, 8,
                          _recipe(num_epochs=25, batch_size=64, learning_rate=0.05, weight_decay=5e-4, augment=False)),
      membership=MembershipAudit(ALL, num_population=1000, **_queries(500, 300, 20, 20)),
      dp_game=MembershipGame("shapes10", "cnn_tiny_gn", 4000, 8,
                             _dp_recipe(num_epochs=40, batch_size=256, augment=False)),
      num_defence_examples=500)


def cpu() -> MiaRun:
  """4,000 CIFAR-10 examples, cnn_small, 16 shadows; the label-only attacks on 500 candidates, HopSkipJump 1,000
  queries each. DP: cnn_tiny_gn on 8,000 examples, 8 shadows (cnn_small_gn's 95k parameters drown in the noise at
  this scale).

  Evidence:
    command: python experiments/mia.py --preset=cpu --data_dir=../shared/data --workdir=runs/mia_cpu
    machine: 2-core AMD EPYC VM, 24 GiB, no GPU, quiet
    wall: 816 s
    headline: target test acc 0.514; rmia_online AUC 0.672, TPR@1% 0.047; lira_offline AUC 0.659; label-only AUC
      0.528-0.542
    result: benchmarks/results/presets/mia_cpu.json (a151a04 (the notes that recorded it), 2026-12-03)
  """
  return MiaRun(
      game=MembershipGame("cifar10_jpeg", "cnn_small", 4000, 16,
                          _recipe(num_epochs=20, batch_size=128, learning_rate=0.05, weight_decay=5e-4, augment=True)),
      membership=MembershipAudit(ALL, num_population=2000, **_queries(500, 1000, 50, 100)),
      dp_game=MembershipGame("cifar10_jpeg", "cnn_tiny_gn", 8000, 8,
                             _dp_recipe(num_epochs=20, batch_size=256, augment=True)),
      num_defence_examples=1000)


def paper() -> MiaRun:
  """LiRA's setting (its train.py): WRN-28-2, 256 shadows, each on half of CIFAR-10's 50,000, 100 epochs, lr 0.1
  cosine, batch 256; RMIA against 10,000 test images; HopSkipJump with cleverhans' defaults (~35,000 queries).
  DP: De et al. (2022)'s WRN-16-4 recipe (GroupNorm, expected batch 4,096, lr 2, no momentum). Chunks of 16 models
  bound the GPU memory.

  Evidence: unmeasured (a GPU preset: 257 WRN-28-2 trainings)
  """
  return MiaRun(
      game=MembershipGame("cifar10", "wrn28_2", 50000, 256,
                          _recipe(num_epochs=100, batch_size=256, learning_rate=0.1, weight_decay=5e-4, augment=True),
                          chunk_size=16),
      membership=MembershipAudit(ALL, num_population=10000, **_queries(1000, None, 100, 2500)),
      dp_game=MembershipGame("cifar10", "wrn16_4_gn", 50000, 256,
                             _dp_recipe(num_epochs=100, batch_size=4096, momentum=0.0, nesterov=False,
                                        augment=True), chunk_size=16),
      num_defence_examples=5000)
