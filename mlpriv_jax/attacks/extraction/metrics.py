"""Extraction metrics: accuracy and fidelity, and their ratios to the victim (the survey's `85.63 (0.90x)`)."""

import numpy as np
from mlpriv_jax.errors import UserError


def extraction_metrics(surrogate_logits, victim_top1, labels, victim_accuracy=None) -> dict:
  """Args: surrogate_logits f[N, C] on the victim's test set; victim_top1 int[N]; labels int[N].

  fidelity is the agreement of the surrogate's top-1 with the victim's; its ratio
  is against the victim's own fidelity (1.0). Figures are fractions in [0, 1].
  """
  pred = np.asarray(surrogate_logits).argmax(-1)
  victim_top1, labels = np.asarray(victim_top1), np.asarray(labels)
  if pred.shape != victim_top1.shape or pred.shape != labels.shape:
    raise UserError(f"need logits [N, C], victim_top1 [N] and labels [N]; got {np.shape(surrogate_logits)}, "
                     f"{victim_top1.shape}, {labels.shape}")
  acc, fid = float((pred == labels).mean()), float((pred == victim_top1).mean())
  v_acc = float((victim_top1 == labels).mean()) if victim_accuracy is None else float(victim_accuracy)
  return dict(accuracy=acc, fidelity=fid, victim_accuracy=v_acc,
              accuracy_ratio=acc / v_acc if v_acc > 0 else float("nan"), fidelity_ratio=fid)


def survey_cell(value: float, ratio: float) -> str:
  """`85.63 (0.90x)`: percent with two decimals and the ratio to the victim."""
  return f"{100 * value:.2f} ({ratio:.2f}x)"
