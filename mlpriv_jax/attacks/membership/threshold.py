"""Class-dependent thresholds for the metric attacks (Song & Mittal 2021, Sec. 3.2).

For each class y, tau_y maximises (1/2)(fraction of shadow members with score >= tau
+ fraction of shadow non-members with score < tau) over the shadow scores of that
class. The attack's score is then s(x) - tau_y: a global threshold at 0 is the
per-class rule, and sweeping it gives the ROC.
"""

import numpy as np
from mlpriv_jax.errors import UserError


def _best_threshold(s_in, s_out):
  candidates = np.unique(np.r_[s_in, s_out])
  s_in, s_out = np.sort(s_in), np.sort(s_out)
  in_ge = 1 - np.searchsorted(s_in, candidates, side="left") / max(len(s_in), 1)
  out_lt = np.searchsorted(s_out, candidates, side="left") / max(len(s_out), 1)
  return float(candidates[np.argmax(in_ge + out_lt)])


def class_thresholds(scores, labels, is_member, num_classes: int):
  """tau f64[C] from shadow records: scores f[M], labels int[M], is_member bool[M].

  A class without both members and non-members among the records takes the
  threshold fitted on all classes together.
  """
  scores, labels, is_member = np.asarray(scores, np.float64), np.asarray(labels), np.asarray(is_member, bool)
  if not (scores.shape == labels.shape == is_member.shape) or scores.ndim != 1:
    raise UserError(f"scores, labels and is_member must be [M], got {scores.shape}, {labels.shape}, "
                     f"{is_member.shape}")
  if not np.isfinite(scores).all():
    raise UserError("threshold calibration got NaN or infinite shadow scores")
  pooled = _best_threshold(scores[is_member], scores[~is_member])
  tau = np.full(num_classes, pooled)
  for c in range(num_classes):
    sel = labels == c
    if (sel & is_member).any() and (sel & ~is_member).any():
      tau[c] = _best_threshold(scores[sel & is_member], scores[sel & ~is_member])
  return tau


def calibrated_score(scores, labels, thresholds):
  """s(x) - tau_{y}: positive = predicted member by the class-dependent rule."""
  return np.asarray(scores, np.float64) - np.asarray(thresholds)[np.asarray(labels)]
