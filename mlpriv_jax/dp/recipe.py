"""A DP-SGD training run from the privacy it must give: (epsilon, delta) in, the noise multiplier and the record out.

The accountant is fed exactly what the engine's sampler does: rate q = B / n (B the expected batch size, n the
smallest data of the models trained) and T = epochs x steps per epoch steps (`train.train_k`'s count).
epsilon = inf is DP-SGD's clipping without noise: the same recipe and model, with no guarantee.
"""

import dataclasses
import math

from mlpriv_jax.dp import accounting
from mlpriv_jax.errors import UserError
from mlpriv_jax.train.dpsgd import DPConfig


@dataclasses.dataclass(frozen=True)
class DPTarget:
  """The guarantee asked for, and the recipe's own knobs (clip norm C, augmentation multiplicity)."""
  epsilon: float
  delta: float = 1e-5
  clip_norm: float = 1.0
  augmult: int = 1
  accountant: str = "pld"

  def validate(self, num_examples: int):
    if not self.epsilon > 0:
      raise UserError(f"--dp_epsilon must be > 0 (inf: clipping without noise), got {self.epsilon}")
    if not 0 < self.delta < 1:
      raise UserError(f"--dp_delta must lie in (0, 1), got {self.delta}")
    if self.delta > 1 / num_examples:
      raise UserError(f"--dp_delta {self.delta:g} is above 1/n = {1 / num_examples:.3g} for n = {num_examples} "
                      f"training examples: such a guarantee allows releasing an example outright")
    if not self.clip_norm > 0 or math.isinf(self.clip_norm):
      raise UserError(f"--dp_clip_norm must be finite and > 0, got {self.clip_norm}")
    if self.augmult < 1:
      raise UserError(f"--dp_augmult must be >= 1, got {self.augmult}")
    if self.accountant not in accounting.ACCOUNTANTS:
      raise UserError(f"unknown accountant {self.accountant!r}; known: {', '.join(accounting.ACCOUNTANTS)}")
    return self


def calibrate_training(target: DPTarget, *, counts, batch_size: int, num_epochs: int):
  """(DPConfig, record): the noise multiplier meeting `target` for this run, and results.json's `dp` entry.

  counts: each model's number of training examples; the record accounts the largest rate B / min(counts) over
  `train_k`'s num_epochs x ceil(max(counts) / B) steps.
  """
  num_examples = int(min(counts))
  steps_per_epoch = math.ceil(int(max(counts)) / batch_size)
  target.validate(num_examples)
  if batch_size > num_examples:
    raise UserError(f"the expected batch size {batch_size} exceeds the {num_examples} training examples")
  q, steps = batch_size / num_examples, int(num_epochs) * int(steps_per_epoch)
  if math.isinf(target.epsilon):
    sigma, eps = 0.0, math.inf
  else:
    sigma = accounting.calibrate_noise(target.epsilon, q, steps, target.delta, accountant=target.accountant)
    eps = accounting.compute_epsilon(sigma, q, steps, target.delta, accountant=target.accountant)
  config = DPConfig(noise_multiplier=sigma, clip_norm=target.clip_norm, augmult=target.augmult)
  record = dict(epsilon=eps, target_epsilon=target.epsilon, delta=target.delta, noise_multiplier=sigma,
                clip_norm=target.clip_norm, sampling_rate=q, expected_batch_size=batch_size, steps=steps,
                augmult=target.augmult, accountant=f"dp_accounting {target.accountant.upper()}, Poisson-subsampled "
                                                   f"Gaussian, add-or-remove-one")
  return config, record


def describe(record: dict) -> str:
  """One log line of a `calibrate_training` record."""
  return (f"DP-SGD: epsilon {record['epsilon']:.4g} at delta {record['delta']:g}: noise multiplier "
          f"{record['noise_multiplier']:.4g}, clip {record['clip_norm']:g}, rate {record['sampling_rate']:.4g}, "
          f"{record['steps']} steps")
