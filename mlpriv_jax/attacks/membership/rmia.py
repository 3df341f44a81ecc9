"""RMIA, the Robust Membership Inference Attack (Zarifzadeh, Liu & Shokri, ICML 2024, Sec. 3).

For a candidate x and population points z the attacker holds apart from the candidates,

  LR(x, z) = [p(x|theta) / P(x)] / [p(z|theta) / P(z)],   Score(x) = Pr_z[LR(x, z) > gamma],

with P(.) the signal averaged over reference (shadow) models: online, P(x) = (P_IN(x) + P_OUT(x)) / 2 from
equal numbers of IN and OUT models; offline, P_IN is approximated by a * P_OUT + (1 - a), so
P(x) = ((1 + a) P_OUT(x) + 1 - a) / 2. The averages are 20% trimmed means over the models, the comparison is
strict (the paper writes >=, its code >), and with several augmented views each pair (x, z) wins by a strict
majority vote over the views (a tie loses), as the authors' code does.

Shapes: signals f[N, A] (candidates) and f[Z, A] (population), reference signals f[K, N, A] with the keep mask
bool[K, N] (model k trained on candidate k). Population points are OUT for every reference model (no model
trained on them), so their P_IN always takes the offline approximation, online too.
"""

import math
from typing import NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np

from mlpriv_jax.errors import UserError


class RmiaPreset(NamedTuple):
  """One of the published sets of defaults (they disagree; results name the one they used)."""
  signal: str          # 'softmax' or 'taylor_soft_margin'
  temperature: float
  gamma: float
  offline_a: float
  margin: float        # m of the Taylor soft margin
  taylor_order: int    # n: the Taylor series of exp to the power n - 1
  trim: float          # fraction cut from each end for the mean over reference models
  use_views: bool      # majority vote over the augmented views (else the identity view only)


PRESETS = {
    # The authors' code (research/2024_rmia, CIFAR-10 configs): T = 2, gamma = 2, a = 0.3, 18 queries.
    "paper": RmiaPreset("taylor_soft_margin", 2.0, 2.0, 0.3, 0.6, 4, 0.2, True),
    # Ours (the default): the authors' code with its CIFAR-100 temperature and the true-class softmax in place of
    # the Taylor soft margin, which is defined on logits (not shift-invariant) and a victim releases probabilities.
    "paper_softmax": RmiaPreset("softmax", 1.0, 2.0, 0.3, 0.0, 0, 0.2, True),
    # The privacy_meter library: plain softmax at T = 1, gamma = 1, one query, no trimming (a: grid-tuned there).
    "privacy_meter": RmiaPreset("softmax", 1.0, 1.0, 0.3, 0.0, 0, 0.0, False),
    # LeakPro's defaults.
    "leakpro": RmiaPreset("softmax", 2.0, 2.0, 0.33, 0.0, 0, 0.0, False),
}


def get_preset(name: str) -> RmiaPreset:
  if name not in PRESETS:
    raise UserError(f"unknown RMIA preset {name!r}; known: {', '.join(PRESETS)}")
  return PRESETS[name]


def _taylor_exp(v, order: int):
  """1 + v + v^2/2! + ... + v^(order-1)/(order-1)! (the authors' `get_taylor`: order 4 is the cubic)."""
  return sum(v ** i / float(math.factorial(i)) for i in range(order))


def rmia_signal(logits, labels, *, signal: str = "taylor_soft_margin", temperature: float = 2.0,
                margin: float = 0.6, taylor_order: int = 4):
  """p(x|theta) f32[...] from logits f[..., C] and labels int[...].

  softmax: softmax(logits / T)_y. taylor_soft_margin (the authors' image signal): with u = logits / T and t the
  Taylor series of exp, t(u_y - m) / (sum_{j != y} t(u_j) + t(u_y - m)); for order 4 t is negative below
  v = -1.596, so this "probability" can leave [0, 1], as in the authors' code.
  """
  if not temperature > 0:
    raise UserError(f"RMIA temperature must be > 0, got {temperature}")
  u = jnp.asarray(logits, jnp.float32) / temperature
  is_y = jax.nn.one_hot(labels, u.shape[-1], dtype=bool)
  if signal == "softmax":
    return jnp.take_along_axis(jax.nn.softmax(u), jnp.asarray(labels)[..., None], -1)[..., 0]
  if signal == "taylor_soft_margin":
    t = _taylor_exp(jnp.where(is_y, u - margin, u), taylor_order)
    t_y = jnp.where(is_y, t, 0.0).sum(-1)
    return t_y / t.sum(-1)
  raise UserError(f"unknown RMIA signal {signal!r}; known: softmax, taylor_soft_margin")


def logits_from_log_probs(log_probs):
  """Logits up to the constant a softmax cannot see, fixed to zero mean over classes, f32[..., C].

  A victim releases probabilities; the softmax signals ignore the constant, the Taylor one does not, so both
  the target and the reference models go through this same map.
  """
  log_probs = jnp.asarray(log_probs, jnp.float32)
  return log_probs - log_probs.mean(-1, keepdims=True)


def trimmed_mean(values, mask, proportion: float):
  """Mean over axis 0 of the entries where mask is set, cutting int(proportion * m) from each end.

  values f[K, N, A], mask bool[K, N] (m = mask.sum(0) models per example); as scipy.stats.trim_mean. f32[N, A].
  """
  values, mask = jnp.asarray(values, jnp.float32), jnp.asarray(mask, bool)
  k = values.shape[0]
  m = mask.sum(0)
  cut = jnp.floor(proportion * m).astype(jnp.int32)
  ranked = jnp.sort(jnp.where(mask[..., None], values, jnp.inf), axis=0)
  rank = jnp.arange(k)[:, None, None]
  inside = (rank >= cut[None, :, None]) & (rank < (m - cut)[None, :, None])
  return jnp.where(inside, ranked, 0.0).sum(0) / (m - 2 * cut)[:, None]


def offline_marginal(p_out, a: float):
  """P(x) = ((1 + a) P_OUT(x) + 1 - a) / 2, the offline approximation of (P_IN + P_OUT) / 2."""
  return 0.5 * ((1 + a) * p_out + (1 - a))


def first_in_and_out(keep):
  """bool[K, N]: per example, the first k models with it IN and the first k with it OUT, by index, where
  k = min(#IN, #OUT) (the authors' online reference set: equal numbers, never chosen by value)."""
  keep = np.asarray(keep, bool)
  k = np.minimum(keep.sum(0), (~keep).sum(0))
  in_rank, out_rank = np.cumsum(keep, 0), np.cumsum(~keep, 0)
  return (keep & (in_rank <= k)) | (~keep & (out_rank <= k))


@jax.jit
def _pairwise_chunk(ratio_x, ratio_z, gamma):
  lr = ratio_x[:, None, :] / ratio_z[None, :, :]            # [c, Z, A]
  votes = (lr > gamma).sum(-1)
  return (2 * votes > ratio_x.shape[-1]).sum(-1)            # strict majority over views: a tie loses


def pairwise_scores(ratio_x, ratio_z, gamma: float, *, chunk_elements: int = 1 << 24):
  """Score(x) = fraction of z with LR(x, z) > gamma (majority over views), f64[N].

  ratio_x f[N, A] = p(x|theta) / P(x), ratio_z f[Z, A]. With one view and positive ratios this is
  #{z : ratio_z < ratio_x / gamma} / |Z|, one sort and a search; otherwise N x Z x A comparisons on the
  device in chunks of candidates (padded to one size, so one compile).
  """
  ratio_x, ratio_z = np.asarray(ratio_x, np.float32), np.asarray(ratio_z, np.float32)
  chex.assert_rank([ratio_x, ratio_z], 2)
  chex.assert_equal(ratio_x.shape[1], ratio_z.shape[1])
  if ratio_x.shape[1] == 1 and (ratio_z > 0).all():
    return fast_pairwise_scores(ratio_x[:, 0], ratio_z[:, 0], gamma)
  n, (z, a) = len(ratio_x), ratio_z.shape
  c = max(1, min(n, chunk_elements // (z * a)))
  padded = np.concatenate([ratio_x, np.ones((-n % c, a), np.float32)])
  out = [np.asarray(_pairwise_chunk(padded[s:s + c], ratio_z, gamma)) for s in range(0, len(padded), c)]
  return np.concatenate(out)[:n] / z


def fast_pairwise_scores(ratio_x, ratio_z, gamma: float):
  """One view and ratio_z > 0: ratio_x / ratio_z falls as ratio_z grows, so the winning z are a prefix of the
  sorted population; a binary search per candidate on the very quotient the brute force forms (ties
  included) finds its length."""
  rx, rz = np.asarray(ratio_x, np.float32), np.sort(np.asarray(ratio_z, np.float32))
  gamma32 = np.float32(gamma)
  lo, hi = np.zeros(len(rx), np.int64), np.full(len(rx), len(rz), np.int64)
  while (lo < hi).any():
    mid = (lo + hi) // 2
    wins = (rx / rz[np.minimum(mid, len(rz) - 1)]) > gamma32
    open_ = lo < hi
    lo = np.where(open_ & wins, mid + 1, lo)
    hi = np.where(open_ & ~wins, mid, hi)
  return lo / len(rz)


def check_rmia(gamma: float, offline_a: Optional[float] = None) -> None:
  """One-line errors for gamma <= 0 and a outside [0, 1] (None: a not given)."""
  if not gamma > 0:
    raise UserError(f"RMIA gamma must be > 0, got {gamma}")
  if offline_a is not None and not 0 <= offline_a <= 1:
    raise UserError(f"RMIA offline a must lie in [0, 1], got {offline_a}")


def rmia(target_x, ref_x, keep, target_z, ref_z, *, online: bool, gamma: float, offline_a: float,
         trim: float = 0.2):
  """RMIA scores f64[N], higher = member.

  Args:
    target_x: f[N, A] the target's signal on the candidates; ref_x: f[K, N, A] the reference models' signal;
      keep: bool[K, N] reference k trained on candidate n.
    target_z: f[Z, A] the target's signal on the population; ref_z: f[K, Z, A] (every model OUT on z).
    online: reference sets of equal IN and OUT models (else OUT models only, with `offline_a`).
  """
  check_rmia(gamma, offline_a)
  target_x, ref_x, target_z, ref_z = (jnp.asarray(v, jnp.float32) for v in (target_x, ref_x, target_z, ref_z))
  keep = np.asarray(keep, bool)
  chex.assert_rank([target_x, ref_x, keep, target_z, ref_z], [2, 3, 2, 2, 3])
  k, n, a = ref_x.shape
  chex.assert_shape(target_x, (n, a))
  chex.assert_shape(keep, (k, n))
  chex.assert_shape(ref_z, (k, target_z.shape[0], a))
  if not all(bool(jnp.isfinite(v).all()) for v in (target_x, ref_x, target_z, ref_z)):
    raise UserError("rmia: the signals hold NaN or infinite values")
  if online:
    mask = first_in_and_out(keep)
    if int(mask.sum(0).min()) < 2:
      raise UserError("online RMIA needs, for every candidate, a reference model trained on it and one not "
                      "(balanced keep masks with >= 2 shadow models)")
    p_x = trimmed_mean(ref_x, mask, trim)
  else:
    if int((~keep).sum(0).min()) < 1:
      raise UserError("offline RMIA needs, for every candidate, a reference model not trained on it; "
                      f"{int(((~keep).sum(0) == 0).sum())} candidates have none")
    p_x = offline_marginal(trimmed_mean(ref_x, ~keep, trim), offline_a)
  # The population: the first K // 2 OUT models (the authors' k per point), offline approximation of P_IN.
  kz = max(1, k // 2)
  p_z = offline_marginal(trimmed_mean(ref_z[:kz], np.ones((kz, target_z.shape[0]), bool), trim), offline_a)
  return pairwise_scores(target_x / p_x, target_z / p_z, gamma)


def tune_offline_a(ref_x, keep, ref_z, *, gamma: float, trim: float = 0.2, grid=tuple(np.arange(11) / 10)):
  """(best a, {a: AUC}): offline RMIA with reference model 0 as a stand-in target and the others as its
  references, on the attacker's own models only (the library's tuner attacks the model paired with the
  target, whose members are the target's non-members: a use of ground truth we avoid)."""
  from mlpriv_jax.attacks.membership.metrics import auc, roc_curve
  keep = np.asarray(keep, bool)
  if keep.shape[0] < 3 or int((~keep[1:]).sum(0).min()) < 1:
    raise UserError("tuning RMIA's offline a needs >= 4 shadow models, so that every candidate has an OUT "
                    "model besides the stand-in target")
  aucs = {}
  for a in grid:
    s = rmia(ref_x[0], ref_x[1:], keep[1:], ref_z[0], ref_z[1:], online=False, gamma=gamma, offline_a=float(a),
             trim=trim)
    aucs[float(a)] = auc(*roc_curve(s, keep[0]))
  return max(aucs, key=aucs.get), aucs
