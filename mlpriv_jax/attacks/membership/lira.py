"""The Likelihood Ratio Attack, LiRA (Carlini et al., S&P 2022, Algorithm 1).

Shapes: target_phi f[N, A] (the target's logit-scaled confidence per example and
augmented view), shadow_phi f[K, N, A], keep bool[K, N] (shadow k trained on
example n). Scores are f32[N], higher = member.
"""

import chex
import jax.numpy as jnp
from jax.scipy.stats import norm
from mlpriv_jax.errors import UserError

# The reference adds 1e-30 to the std in float64; in float32 a std of 0 (one model
# on a side) would overflow to inf - inf, so the std is floored instead.
_MIN_STD = 1e-6


def _check(target_phi, shadow_phi, keep):
  chex.assert_rank([target_phi, shadow_phi, keep], [2, 3, 2])
  k, n, a = shadow_phi.shape
  chex.assert_shape(target_phi, (n, a))
  chex.assert_shape(keep, (k, n))
  if not (jnp.isfinite(target_phi).all() and jnp.isfinite(shadow_phi).all()):
    raise UserError("lira: phi holds NaN or infinite values")


def _gaussian(phi, mask, fix_variance):
  """Per-example median and std over the models in `mask` (LiRA uses medians), f32[N, A] each.

  fix_variance: one std for every example, the std of all of phi[mask] over
  examples, models and views, as the reference `plot.py` (np.std(dat_in)); it
  includes the spread of the per-example means.
  """
  masked = jnp.where(mask[..., None], phi, jnp.nan)
  mu = jnp.nanmedian(masked, axis=0)
  sigma = jnp.full_like(mu, jnp.nanstd(masked)) if fix_variance else jnp.nanstd(masked, axis=0)
  return mu, sigma


def lira_online(target_phi, shadow_phi, keep, *, fix_variance: bool = False):
  """Online LiRA: mean over views of log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2).

  With fix_variance, both Gaussians use the IN models' global std, as the reference.
  """
  target_phi, shadow_phi, keep = jnp.asarray(target_phi), jnp.asarray(shadow_phi), jnp.asarray(keep, bool)
  _check(target_phi, shadow_phi, keep)
  counts = keep.sum(0)
  if int(counts.min()) < 1 or int(counts.max()) >= keep.shape[0]:
    raise UserError("online LiRA needs, for every example, at least one shadow model trained on it and one "
                     "not (use balanced keep masks with >= 2 shadow models)")
  mu_in, s_in = _gaussian(shadow_phi, keep, fix_variance)
  mu_out, s_out = _gaussian(shadow_phi, ~keep, fix_variance)
  if fix_variance:
    s_out = s_in
  s_in, s_out = jnp.maximum(s_in, _MIN_STD), jnp.maximum(s_out, _MIN_STD)
  llr = norm.logpdf(target_phi, mu_in, s_in) - norm.logpdf(target_phi, mu_out, s_out)
  return llr.mean(-1)


def lira_offline(target_phi, shadow_phi, keep, *, fix_variance: bool = False):
  """Offline LiRA, the paper's one-sided test: mean over views of log Pr[Z < phi], Z ~ N(mu_out, s_out^2).

  Uses only the OUT models; with fix_variance, their global std.
  """
  target_phi, shadow_phi, keep = jnp.asarray(target_phi), jnp.asarray(shadow_phi), jnp.asarray(keep, bool)
  _check(target_phi, shadow_phi, keep)
  if int((~keep).sum(0).min()) < 1:
    raise UserError("offline LiRA needs, for every example, at least one shadow model not trained on it")
  mu_out, s_out = _gaussian(shadow_phi, ~keep, fix_variance)
  return norm.logcdf((target_phi - mu_out) / jnp.maximum(s_out, _MIN_STD)).mean(-1)
