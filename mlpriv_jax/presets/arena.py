"""Presets of experiments/arena.py: every attack against every defence at every strength and budget.

The membership side is spelt as mia.py's (`game`, `membership`, `dp_game`); the extraction side as extract.py's
(`extraction`).
"""

from mlpriv_jax.arena.run import ArenaConfig
from mlpriv_jax.attacks import extraction as E
from mlpriv_jax.attacks import membership as M
from mlpriv_jax.games.extraction import ExtractionAudit
from mlpriv_jax.games.membership import MembershipAudit, MembershipGame
from mlpriv_jax.games.ownership import OwnershipAudit
from mlpriv_jax.ownership import dataset_inference as DI
from mlpriv_jax.ownership import ipguard as IG
from mlpriv_jax.train import TrainConfig

PRESETS = ("smoke", "cpu", "paper")
ALL_MIA = tuple(M.REGISTRY)
# The attacks with a query pool: a data-free attack needs budgets of another order (DFME learns little below 10^5
# queries), which the arena does not give it yet; extract.py runs it.
ALL_EXTRACTION = tuple(a for a in E.REGISTRY if E.get(a).pool != "none")


def _victim(**kw) -> TrainConfig:
  return TrainConfig(**dict(dict(momentum=0.9, nesterov=True, schedule="cosine", weight_decay=5e-4, augment=False),
                            **kw))


def _dp(**kw) -> TrainConfig:
  return _victim(**dict(dict(learning_rate=2.0, weight_decay=0.0), **kw))


def smoke() -> ArenaConfig:
  """Embedded data: shapes10's cnn_small victim behind six defence settings and a DP-SGD victim at epsilon 8, every
  attack of both families, budgets 250 and 1,000. The label-only attacks score 160 candidates: about 80 non-members,
  too few to read a TPR at 1% FPR, so the headline ranks membership by AUC whatever the draw (at 200 candidates the
  non-members fell either side of the 100 that 1% FPR needs, and the criterion flipped with the seed). The
  ownership family is off unless --ownership names its verifiers; then Dataset Inference walks 100 points (5
  directions per norm, 30 steps), IPGuard fingerprints 50, and 4 independent models are the negatives.

  Evidence:
    command: python experiments/arena.py --preset=smoke --workdir=runs/arena
    machine: 2-core Intel(R) Xeon(R) Processor, 24 GiB, no GPU
    wall: 881 s
    headline: undefended: fidelity 0.428 by knockoff_random (cnn_tiny) at 1000 queries, membership AUC 0.927 by
      rmia_online; lowest worst fidelity 0.312 behind dpsgd@8 (accuracy 0.296)
    result: benchmarks/results/presets/arena_smoke.json (e6ad708+changes, 2026-12-07)
  """
  return ArenaConfig(
      game=MembershipGame("shapes10", "cnn_small", 1000, 4, _victim(num_epochs=20, batch_size=64, learning_rate=0.05)),
      membership=MembershipAudit(
          ALL_MIA, label_examples=160, num_population=500, num_bootstrap=100,
          options=M.MembershipOptions(label_boundary=M.LabelBoundaryOptions(max_queries=100, initial_num_evals=10),
                                      label_noise=M.LabelNoiseOptions(num_samples=10))),
      extraction=ExtractionAudit(
          ALL_EXTRACTION, budgets=(250, 1000), surrogates=("cnn_tiny",), query_set="figures20",
          surrogate=_victim(num_epochs=8, batch_size=32, learning_rate=0.05),
          options=E.ExtractionOptions(cloudleak=E.CloudLeakOptions(num_rounds=2),
                                      recovery=E.RecoveryOptions(num_shadows=4))),
      defences=(("label", ()), ("top1", ()), ("round2", ()), ("revsig", (0.5,)), ("mad_argmax", (0.5,)),
                ("memguard", (1.0,))),
      dp_epsilons=(8.0,),
      dp_game=MembershipGame("shapes10", "cnn_tiny_gn", 2000, 4, _dp(num_epochs=30, batch_size=256)),
      num_test=500, num_guard=200,
      # the ownership family's scale, off unless --ownership names its verifiers
      ownership=OwnershipAudit(num_points=100, num_independent=4,
                               dataset_inference=DI.DatasetInferenceOptions(num_directions=5, max_steps=30),
                               ipguard=IG.IPGuardOptions(num_points=50, max_steps=300)))


def cpu() -> ArenaConfig:
  """Real CIFAR-10 (4,000 examples) behind ten settings and DP-SGD victims at epsilon 1 and 8, CIFAR-100 queries,
  budgets 1,000 and 5,000. CloudLeak is left out (its surrogate retrained each round made it the slowest attack by
  far at 5,000 queries on 2 cores); add it with --extraction_attacks.

  Evidence:
    command: python experiments/arena.py --preset=cpu --data_dir=../shared/data --workdir=runs/arena_cpu
    machine: 2-core Intel Xeon VM, 24 GiB, no GPU, quiet
    wall: 4204 s
    headline: undefended: fidelity 0.805 (knockoff_adaptive) at 5000 queries, AUC 0.669 (rmia_online); revsig@2 holds
      it to 0.439; 246 cells
    result: benchmarks/results/presets/arena_cpu.json (bd87189, 2026-12-06)
  """
  return ArenaConfig(
      game=MembershipGame("cifar10_jpeg", "cnn_small", 4000, 8,
                          _victim(num_epochs=20, batch_size=128, learning_rate=0.05, augment=True)),
      membership=MembershipAudit(
          ALL_MIA, label_examples=300, num_population=1000, num_bootstrap=100,
          options=M.MembershipOptions(label_boundary=M.LabelBoundaryOptions(max_queries=300, initial_num_evals=20),
                                      label_noise=M.LabelNoiseOptions(num_samples=30))),
      extraction=ExtractionAudit(
          ("knockoff_random", "knockoff_adaptive", "jbda", "top1", "smoothing", "recovery"), budgets=(1000, 5000),
          surrogates=("cnn_small",), query_set="cifar100",
          surrogate=_victim(num_epochs=10, batch_size=128, learning_rate=0.05, augment=True),
          options=E.ExtractionOptions(cloudleak=E.CloudLeakOptions(num_rounds=3),
                                      recovery=E.RecoveryOptions(num_shadows=4))),
      defences=(("label", ()), ("top1", ()), ("round2", ()), ("gaussian", (0.5, 2.0)), ("revsig", (0.5, 2.0)),
                ("mad_argmax", (0.5, 1.0)), ("memguard", (0.5, 1.0)), ("modelguard_w", (1.0,))),
      dp_epsilons=(1.0, 8.0),
      dp_game=MembershipGame("cifar10_jpeg", "cnn_tiny_gn", 8000, 8,
                             _dp(num_epochs=20, batch_size=256, augment=True)),
      num_test=1000, num_guard=200)


def paper() -> ArenaConfig:
  """LiRA's WRN-28-2 victim on CIFAR-10 with 64 shadows, every attack and defence, budgets up to 50,000.

  Evidence: unmeasured (a GPU preset)
  """
  return ArenaConfig(
      game=MembershipGame("cifar10", "wrn28_2", 50000, 64,
                          _victim(num_epochs=100, batch_size=256, learning_rate=0.1, augment=True)),
      membership=MembershipAudit(
          ALL_MIA, label_examples=1000, num_population=10000, num_bootstrap=100,
          options=M.MembershipOptions(label_boundary=M.LabelBoundaryOptions(max_queries=2500, initial_num_evals=100))),
      extraction=ExtractionAudit(
          ALL_EXTRACTION, budgets=(1000, 5000, 10000, 50000), surrogates=("wrn16_4", "resnet20"),
          query_set="cifar100",
          surrogate=_victim(num_epochs=100, batch_size=64, learning_rate=0.01, momentum=0.5, weight_decay=0.0)),
      defences=(("label", ()), ("top1", ()), ("top3", ()), ("round1", ()), ("round2", ()),
                ("gaussian", (0.5, 1.0, 2.0)), ("revsig", (0.5, 1.0, 2.0)), ("mad_argmax", (0.1, 0.5, 1.0)),
                ("misinfo", (0.5, 0.9)), ("memguard", (0.1, 0.5, 1.0)), ("modelguard_w", (0.5, 1.0))),
      dp_epsilons=(1.0, 4.0, 8.0),
      dp_game=MembershipGame("cifar10", "wrn16_4_gn", 50000, 64,
                             _dp(num_epochs=100, batch_size=4096, momentum=0.0, nesterov=False, augment=True)),
      num_test=10000, num_guard=200)
