"""Privacy auditing: the epsilon a membership attack proves, a lower bound beside the accountant's upper one.

Scores (higher = member) of canaries whose membership was drawn at random, through jax-privacy's
`CanaryScoreAuditor` (thresholds over all scores, Bonferroni-corrected):

* 'one_run' (Steinke, Nasr & Jagielski 2023, Alg. 1 and Thm. 3.1 with its delta term): the guesses "member" above a
  threshold, whose number correct an (eps, delta)-DP training dominates by Binomial(r, e^eps / (1 + e^eps)); the
  bound is the largest eps this rejects at the confidence. Sound for one training run with canaries included
  independently at random; our membership games draw a random half (a balanced split, not independent
  inclusions: the count of members is fixed).
* 'clopper_pearson' (Jagielski et al. 2020; Nasr et al. 2021): eps >= log((TPR_lb - delta) / FPR_ub) with
  Clopper-Pearson bounds at the threshold. Sound when each canary is an independent training run; over the
  examples of one run it is the common heuristic, reported beside the one-run bound.

Each bound holds at its confidence on its own; the largest over several attacks is not corrected for their number.
A lower bound above the accountant's epsilon on a DP-trained model is a bug (in the training, the accounting
or the audit), not a result.
"""

import math
from typing import Optional

import numpy as np

from mlpriv_jax.errors import UserError

METHODS = ("one_run", "clopper_pearson")


def _auditor(scores, is_member):
  try:
    from jax_privacy import auditing
  except ImportError as e:
    raise UserError("auditing needs the 'dp' extra (jax-privacy; Python >= 3.11): pip install 'mlpriv_jax[dp]'") from e
  scores, member = np.asarray(scores, np.float64), np.asarray(is_member)
  if scores.ndim != 1 or member.shape != scores.shape or member.dtype != np.bool_:
    raise UserError(f"need scores f[M] and is_member bool[M], got {scores.dtype} {list(scores.shape)} and "
                    f"{member.dtype} {list(member.shape)}")
  if np.isnan(scores).any():
    raise UserError(f"{int(np.isnan(scores).sum())} of the {len(scores)} scores are NaN")
  if member.all() or not member.any():
    raise UserError("the audit needs members and non-members among the canaries")
  return auditing.CanaryScoreAuditor(scores[member], scores[~member]), auditing


def epsilon_lower_bound(scores, is_member, *, delta: float, confidence: float = 0.95, method: str = "one_run",
                        threshold: Optional[float] = None) -> float:
  """The epsilon that training is shown to exceed at `delta`, with probability `confidence`, from the scores.

  threshold: "member" above it, fixed in advance (e.g. on shadow models); None: the best over all thresholds,
  Bonferroni-corrected.
  """
  if method not in METHODS:
    raise UserError(f"unknown audit method {method!r}; known: {', '.join(METHODS)}")
  if not 0.5 < confidence < 1:
    raise UserError(f"the audit's confidence must lie in (0.5, 1), got {confidence}")
  if not 0 < delta < 1:
    raise UserError(f"the audit's delta must lie in (0, 1), got {delta}")
  auditor, strategies = _auditor(scores, is_member)
  strategy = strategies.Bonferroni() if threshold is None else strategies.Explicit(float(threshold))
  if method == "one_run":
    return float(auditor.epsilon_one_run(1 - confidence, delta, threshold_strategy=strategy))
  return float(auditor.epsilon_clopper_pearson(1 - confidence, delta, threshold_strategy=strategy))


def audit_report(scores, is_member, *, delta: float, confidence: float = 0.95) -> dict:
  """{epsilon_lower_bound (one run), confidence, method, delta, num_canaries, clopper_pearson}."""
  bounds = {m: epsilon_lower_bound(scores, is_member, delta=delta, confidence=confidence, method=m) for m in METHODS}
  return dict(epsilon_lower_bound=bounds["one_run"], confidence=confidence, method="one_run (Steinke et al. 2023)",
              delta=delta, num_canaries=int(len(scores)), clopper_pearson=bounds["clopper_pearson"])


def dp_ceiling(epsilon: float, delta: float, fpr: float) -> float:
  """The highest TPR at `fpr` any attack can reach on an (epsilon, delta)-DP training (Kairouz et al. 2015):
  min(1, e^eps fpr + delta, 1 - e^-eps (1 - delta - fpr))."""
  if math.isinf(epsilon):
    return 1.0
  return float(min(1.0, math.exp(epsilon) * fpr + delta, 1 - math.exp(-epsilon) * (1 - delta - fpr)))
