"""From a verifier's statistics on suspects to a verdict: p-values against independent models, and the detection
rate at a false-positive rate on known negatives."""

import numpy as np
import scipy.stats


def binomial_p(successes: int, trials: int, null_rate: float) -> float:
  """P[Bin(trials, q) >= successes]: how likely an independent model (success rate q) does this well.

  q is floored at 1 / (trials + 1): a rate of 0 measured on a few reference models is not certainty."""
  if trials == 0:
    return 1.0
  q = min(max(float(null_rate), 1.0 / (trials + 1)), 1.0)
  return float(scipy.stats.binom.sf(successes - 1, trials, q))


def detection(positives, negatives, fprs=(0.01, 0.05)) -> dict:
  """{'tpr_at_<f>': ...}: the fraction of positives whose p-value is below the threshold that flags at most a
  fraction f of the negatives (the largest p-value t with mean(negatives <= t) <= f; with few negatives a small f
  allows none of them: t below the smallest; no negatives: None). Also each f as a significance level ('tpr_p<f',
  'fpr_p<f')."""
  pos, neg = np.asarray(positives, np.float64), np.asarray(negatives, np.float64)
  out = {}
  for f in fprs:
    allowed = int(np.floor(f * len(neg)))
    t = np.sort(neg)[allowed] if allowed < len(neg) else np.inf   # flag p < t: at most `allowed` negatives
    out[f"tpr_at_{f:g}"] = float(np.mean(pos < t)) if len(pos) and len(neg) else None   # no negatives: no rate
    out[f"tpr_p<{f:g}"] = float(np.mean(pos < f)) if len(pos) else None
    out[f"fpr_p<{f:g}"] = float(np.mean(neg < f)) if len(neg) else None
  return out
