"""Presets of experiments/verify.py: the owner's verifiers on one suspect (Dataset Inference's walks are most of the
queries to it)."""

from mlpriv_jax.games.ownership import VERIFIERS, OwnershipAudit
from mlpriv_jax.lab.ownership import VerifyRun
from mlpriv_jax.ownership.dataset_inference import DatasetInferenceOptions
from mlpriv_jax.ownership.ipguard import IPGuardOptions

PRESETS = ("smoke", "cpu", "paper")
WITHOUT_LOG = tuple(v for v in VERIFIERS if v != "dawn")   # DAWN needs the provider's ledger (--verifiers to add)


def smoke() -> VerifyRun:
  """40 private and 40 public points, 3 directions per norm, IPGuard on 20 points, 2 negatives.

  Evidence: unmeasured (a program over the verifiers tests/ownership_test.py measures)
  """
  return VerifyRun(OwnershipAudit(WITHOUT_LOG, num_points=40, num_independent=2,
                                  dataset_inference=DatasetInferenceOptions(num_directions=3, max_steps=20,
                                                                            num_resamples=20),
                                  ipguard=IPGuardOptions(num_points=20, max_steps=100)))


def cpu() -> VerifyRun:
  """100 points each, 10 directions per norm (the original's), IPGuard on 100 points, 4 negatives.

  Evidence: unmeasured (a program over the verifiers tests/ownership_test.py measures)
  """
  return VerifyRun(OwnershipAudit(WITHOUT_LOG, num_points=100, num_independent=4,
                                  ipguard=IPGuardOptions(num_points=100)))


def paper() -> VerifyRun:
  """1,000 private and 1,000 public points (m = 10 revealed), 10 directions per norm, 8 negatives.

  Evidence: unmeasured (a GPU preset)
  """
  return VerifyRun(OwnershipAudit(WITHOUT_LOG, num_points=1000, num_independent=8,
                                  ipguard=IPGuardOptions(num_points=100)))
