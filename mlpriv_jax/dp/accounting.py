"""The privacy of DP-SGD, accounted by Google's dp-accounting (never by hand).

DP-SGD with Poisson sampling at rate q, noise multiplier sigma and T steps is the T-fold composition of the
Poisson-subsampled Gaussian mechanism (Abadi et al. 2016, Sec. 3.1), under add-or-remove-one adjacency:
`SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(sigma)), T)`. The accountants are
dp-accounting's privacy loss distributions ('pld', the tighter; Koskela et al. 2020, Doroshenko et al. 2022)
and Renyi DP ('rdp'; Mironov 2017, with the conversion of Canonne, Kamath & Steinke 2020, Prop. 12).
"""

import contextlib
import functools
import math
from typing import Optional, Sequence

from mlpriv_jax.errors import UserError, integer

ACCOUNTANTS = ("pld", "rdp")
MAX_NOISE_MULTIPLIER = 1000.0   # calibration's upper end: beyond it the gradient is noise
MIN_NOISE_MULTIPLIER = 0.1      # its lower end (PLD's discretisation grows as 1 / sigma^2)


def _dp_accounting():
  try:
    import dp_accounting
  except ImportError as e:
    raise UserError("DP accounting needs the 'dp' extra (dp-accounting): pip install 'mlpriv_jax[dp]'") from e
  return dp_accounting


@contextlib.contextmanager
def _quiet_rdp():
  from absl import logging
  level = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(level)


def dpsgd_event(noise_multiplier: float, sampling_rate: float, steps: int):
  """The dp-accounting event of DP-SGD: T Poisson-subsampled Gaussian steps."""
  dpa = _dp_accounting()
  return dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(sampling_rate, dpa.GaussianDpEvent(noise_multiplier)),
                                 int(steps))


def _accountant(accountant: str, orders: Optional[Sequence[float]] = None):
  dpa = _dp_accounting()
  if accountant not in ACCOUNTANTS:
    raise UserError(f"unknown accountant {accountant!r}; known: {', '.join(ACCOUNTANTS)}")
  if accountant == "pld":
    if orders is not None:
      raise UserError("orders are the RDP accountant's; the PLD accountant takes none")
    return dpa.pld.PLDAccountant()
  return dpa.rdp.RdpAccountant(orders=list(orders) if orders is not None else None)


def check_setting(sampling_rate: float, steps: int, delta: float) -> None:
  if not 0 < sampling_rate <= 1:
    raise UserError(f"the sampling rate must lie in (0, 1], got {sampling_rate}")
  integer(steps, "the number of DP-SGD steps")
  if not 0 < delta < 1:
    raise UserError(f"delta must lie in (0, 1), got {delta}")


def compute_epsilon(noise_multiplier: float, sampling_rate: float, steps: int, delta: float, *,
                    accountant: str = "pld", orders: Optional[Sequence[float]] = None) -> float:
  """Epsilon of DP-SGD at `delta` (inf without noise). orders: the RDP accountant's orders (None: its own)."""
  check_setting(sampling_rate, steps, delta)
  if not noise_multiplier >= 0:
    raise UserError(f"the noise multiplier must be >= 0, got {noise_multiplier}")
  if noise_multiplier == 0:
    return math.inf
  acct = _accountant(accountant, orders)
  return float(acct.compose(dpsgd_event(noise_multiplier, sampling_rate, steps)).get_epsilon(delta))


@functools.lru_cache(maxsize=256)   # a pure function of its arguments, and seconds to minutes of accounting
def calibrate_noise(target_epsilon: float, sampling_rate: float, steps: int, delta: float, *,
                    accountant: str = "pld") -> float:
  """The smallest noise multiplier (within 1e-6) whose epsilon at `delta` is <= target_epsilon.

  dp-accounting's `calibrate_dp_mechanism` (Brent's method) on the same event `compute_epsilon` accounts. Memoised
  in the process: the arena asks for one victim's noise when it checks its config and again when it trains it.
  """
  check_setting(sampling_rate, steps, delta)
  if not target_epsilon > 0 or math.isinf(target_epsilon):
    raise UserError(f"the target epsilon must be finite and > 0, got {target_epsilon}")
  dpa = _dp_accounting()
  _accountant(accountant)
  if compute_epsilon(MAX_NOISE_MULTIPLIER, sampling_rate, steps, delta, accountant=accountant) > target_epsilon:
    raise UserError(f"epsilon {target_epsilon} at delta {delta} needs a noise multiplier above "
                    f"{MAX_NOISE_MULTIPLIER:g} for {steps} steps at sampling rate {sampling_rate:.4g}; "
                    f"take fewer steps, a lower rate or a larger epsilon")
  # RDP is fast and never below PLD's epsilon, so its sigma bounds PLD's from above; the bracket's lower end
  # halves until it fails the target (PLD's cost grows fast as sigma falls).
  calibrate = lambda name, lo, hi: float(dpa.calibrate_dp_mechanism(
      lambda: _accountant(name), lambda s: dpsgd_event(s, sampling_rate, steps), target_epsilon, delta,
      bracket_interval=dpa.ExplicitBracketInterval(lo, hi), tol=1e-6))
  too_weak = UserError(f"epsilon {target_epsilon} at delta {delta} is met by a noise multiplier below "
                       f"{MIN_NOISE_MULTIPLIER:g} for {steps} steps at sampling rate {sampling_rate:.4g}: too weak a "
                       f"guarantee to train for")
  with _quiet_rdp():   # RDP drops fractional orders whose series do not converge at small sigma, with a warning each
    if compute_epsilon(MIN_NOISE_MULTIPLIER, sampling_rate, steps, delta, accountant="rdp") <= target_epsilon:
      raise too_weak
    sigma = calibrate("rdp", MIN_NOISE_MULTIPLIER, MAX_NOISE_MULTIPLIER)
  if accountant == "rdp":
    return sigma
  eps = lambda s: compute_epsilon(s, sampling_rate, steps, delta, accountant="pld")
  hi = sigma
  while eps(hi) > target_epsilon:   # PLD is never above RDP; a guard, not a case
    hi *= 1.25
  lo = hi / 2
  while eps(lo) <= target_epsilon:
    if lo <= MIN_NOISE_MULTIPLIER:
      raise too_weak
    lo = max(lo / 2, MIN_NOISE_MULTIPLIER)
  return calibrate("pld", lo, hi)
