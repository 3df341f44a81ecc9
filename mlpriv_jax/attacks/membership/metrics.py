"""Membership metrics. Member = positive class; every score is higher = member.

ROC, AUC, balanced accuracy (best threshold, as LiRA's `do_plot`), attacker
advantage max(TPR - FPR) (Yeom et al. 2018), and TPR at fixed low FPR with
bootstrap confidence intervals (Carlini et al. 2022 report TPR at 0.1% FPR).
"""

import jax
import numpy as np

from mlpriv_jax.errors import UserError


def _check(scores, is_member):
  scores, is_member = np.asarray(scores, np.float64), np.asarray(is_member, bool)
  if scores.ndim != 1 or scores.shape != is_member.shape:
    raise UserError(f"scores and is_member must be one-dimensional of one length, got {scores.shape} and "
                     f"{is_member.shape}")
  if not np.isfinite(scores).all():
    raise UserError(f"membership scores hold {int((~np.isfinite(scores)).sum())} NaN or infinite values")
  if is_member.all() or not is_member.any():
    raise UserError("membership metrics need both members and non-members")
  return scores, is_member


def check_fprs(fprs):
  for f in fprs:
    if not 0 < f < 1:
      raise UserError(f"an FPR must lie in (0, 1), got {f}")
  return tuple(float(f) for f in fprs)


def roc_curve(scores, is_member):
  """(fpr, tpr) f64[T] over every distinct threshold, from (0, 0) to (1, 1); ties move together."""
  scores, is_member = _check(scores, is_member)
  order = np.argsort(-scores, kind="stable")
  s, m = scores[order], is_member[order]
  last_of_tie = np.r_[s[1:] != s[:-1], True]
  tp, fp = np.cumsum(m)[last_of_tie], np.cumsum(~m)[last_of_tie]
  return np.r_[0.0, fp / (~m).sum()], np.r_[0.0, tp / m.sum()]


def auc(fpr, tpr):
  return float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, fpr))


def tpr_at_fpr(fpr, tpr, target: float) -> float:
  """The highest TPR among thresholds whose FPR is at most `target` (LiRA: FPR < target)."""
  return float(tpr[fpr <= target].max())


def _summary(scores, is_member, fprs):
  fpr, tpr = roc_curve(scores, is_member)
  bal = float(np.max(1 - (fpr + (1 - tpr)) / 2))
  return dict(auc=auc(fpr, tpr), balanced_accuracy=bal, advantage=2 * bal - 1,
              tpr_at_fpr={f"{f:g}": tpr_at_fpr(fpr, tpr, f) for f in fprs})


def membership_report(scores, is_member, *, fprs=(0.001, 0.01), num_bootstrap: int = 200, seed=0,
                      confidence: float = 0.95):
  """Every metric, with a percentile bootstrap interval over the examples.

  Args:
    scores: f[N], higher = member. is_member: bool[N], the ground truth.
    fprs: FPRs in (0, 1) at which to read the TPR.
    num_bootstrap: resamples (with replacement, members and non-members apart,
      so each resample keeps the class balance); 0 skips the intervals.
    seed: the resampling's stream, a typed PRNG key (the evaluator's) or an int.
  Returns:
    dict(auc, balanced_accuracy, advantage, tpr_at_fpr={fpr: tpr}, num_members,
    num_nonmembers, and `interval` holding [low, high] for each of them).
  """
  fprs = check_fprs(fprs)
  scores, is_member = _check(scores, is_member)
  out = _summary(scores, is_member, fprs)
  out.update(num_members=int(is_member.sum()), num_nonmembers=int((~is_member).sum()))
  if num_bootstrap:
    rng = np.random.default_rng(_entropy(seed))  # host-side resampling
    ins, outs = np.flatnonzero(is_member), np.flatnonzero(~is_member)
    draws = []
    for _ in range(num_bootstrap):
      idx = np.r_[rng.choice(ins, len(ins)), rng.choice(outs, len(outs))]
      draws.append(_summary(scores[idx], is_member[idx], fprs))
    lo, hi = 50 * (1 - confidence), 100 - 50 * (1 - confidence)
    band = lambda v: [float(np.percentile(v, lo)), float(np.percentile(v, hi))]
    out["interval"] = {k: band([d[k] for d in draws]) for k in ("auc", "balanced_accuracy", "advantage")}
    out["interval"]["tpr_at_fpr"] = {f: band([d["tpr_at_fpr"][f] for d in draws]) for f in out["tpr_at_fpr"]}
  return out


def _entropy(seed):
  """numpy's seed from a typed PRNG key (its key data) or an int."""
  if isinstance(seed, jax.Array) and jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key):
    return np.asarray(jax.random.key_data(seed)).ravel().tolist()
  return seed
