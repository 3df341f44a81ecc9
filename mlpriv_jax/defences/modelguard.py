"""ModelGuard-W (Tang, Dai, DiValentin, Ding, Hass, Gong, Chen, Li, USENIX Security 2024): the release farthest from
the victim's answer in cross-entropy within an L1 ball, its label kept.

For each answer y (t = argmax y) the authors' code (`defenses/victim/mld.py::MLD.oracle_batch_pulp`) solves, one
PuLP/CBC linear program per query,

  min_z  sum_j log(y_j + 1e-6) z_j   s.t.  sum_j z_j = 1,  0 <= z <= 1,  sum_j |z_j - y_j| <= eps,
                                           z_t - z_j >= 1e-4 for every j != t,

i.e. it maximises the cross-entropy -sum_j z_j log y_j of the release while keeping the label. Here the same program
is solved exactly and batched, without an LP solver, from its structure:

* Fix T = z_t. The others live in [0, U] with U = T - 1e-4, so those above U are forced down to it (mass F); the
  rest of the program moves mass between the non-top classes: a total A onto the cheapest (smallest y: most
  negative log y), each up to U, and D off the dearest (largest y), with A - D = y_t - T + F (the sum stays 1) and
  an L1 cost |T - y_t| + F + A + D <= eps. For fixed D the best moves are a sort and a greedy fill; the cost as a
  function of D is convex and piecewise linear (a convex fill cost minus a concave gain), so its minimum lies at one
  of its breakpoints or at an end of D's range: all of them are evaluated (`jnp.interp` on the cumulative
  capacities).
* The optimum over T of that partial minimum is convex in T (a partial minimisation of a linear program), so a
  golden-section search over T's range [(1 + (C - 1) 1e-4) / C, min(1, y_t + eps / 2)] finds it. The L1 budget
  enters as an exact penalty (20 per unit of excess: more than the largest gain per unit of L1, log(1e-6) / -2), so
  that T's whole range is searchable; a row whose program is infeasible (a near tie with too small an eps) is
  released unchanged.

Checked against `scipy.optimize.linprog(method="highs")` in tests/defences_test.py.
"""

import jax
import jax.numpy as jnp

from mlpriv_jax.defences.base import Defence, stateless
from mlpriv_jax.errors import UserError

MARGIN = 1e-4        # z_t - z_j >= MARGIN: the label kept with room to spare
FUDGE = 1e-6         # log(y + FUDGE), as the authors' objective
PENALTY = 20.0       # per unit of L1 over the budget (exact above 13.8 / 2: the largest gain per unit of L1)
ITERATIONS = 80      # golden-section steps: the bracket shrinks by 0.618^80 (about 2e-17)


def _fixed_top(T, ys, cs, yt, ct, eps):
  """The best release with z_t = T: (penalised objective, moved mass D, the plan's pieces). ys, cs: the non-top
  classes' y and log(y + FUDGE), ascending."""
  u = T - MARGIN
  z0 = jnp.minimum(ys, u)
  forced = jnp.sum(ys - z0)
  need = (yt - T) + forced                        # A - D
  cap_r = u - z0                                  # what each receiver can take, cheapest first
  cum_r = jnp.concatenate([jnp.zeros(1), jnp.cumsum(cap_r)])
  cost_r = jnp.concatenate([jnp.zeros(1), jnp.cumsum(cap_r * cs)])
  cap_d, cs_d = z0[::-1], cs[::-1]                # what each donor can give, dearest first
  cum_d = jnp.concatenate([jnp.zeros(1), jnp.cumsum(cap_d)])
  gain_d = jnp.concatenate([jnp.zeros(1), jnp.cumsum(cap_d * cs_d)])
  d_lo = jnp.maximum(0.0, -need)
  d_hi = jnp.maximum(d_lo, jnp.minimum(cum_d[-1], cum_r[-1] - need))
  fixed_l1 = jnp.abs(T - yt) + forced

  def cost(d):
    l1 = fixed_l1 + (need + d) + d
    return (jnp.interp(need + d, cum_r, cost_r) - jnp.interp(d, cum_d, gain_d)
            + PENALTY * jnp.maximum(0.0, l1 - eps))

  candidates = jnp.clip(jnp.concatenate([jnp.stack([d_lo, d_hi, (eps - fixed_l1 - need) / 2]), cum_r - need, cum_d]),
                        d_lo, d_hi)
  values = jax.vmap(cost)(candidates)
  i = jnp.argmin(values)
  return ct * T + jnp.sum(cs * z0) + values[i], candidates[i], (z0, need, cum_r, cap_r, cum_d, cap_d)


def _release(y, eps):
  """ModelGuard-W's answer to one probability vector y f32[C]."""
  c = y.shape[-1]
  t = jnp.argmax(y)
  order = jnp.argsort(jnp.where(jnp.arange(c) == t, jnp.inf, y))[:c - 1]   # the non-top classes, ascending y
  ys, cs = y[order], jnp.log(y[order] + FUDGE)
  yt, ct = y[t], jnp.log(y[t] + FUDGE)
  lo = (1.0 + (c - 1) * MARGIN) / c
  hi = jnp.maximum(lo, jnp.minimum(1.0, yt + eps / 2))
  value = lambda T: _fixed_top(T, ys, cs, yt, ct, eps)[0]
  ratio = (jnp.sqrt(5.0) - 1) / 2

  def step(_, bracket):
    a, b = bracket
    x1, x2 = b - ratio * (b - a), a + ratio * (b - a)
    left = value(x1) <= value(x2)
    return jnp.where(left, a, x1), jnp.where(left, x2, b)

  a, b = jax.lax.fori_loop(0, ITERATIONS, step, (lo, hi))
  T = (a + b) / 2
  _, d, (z0, need, cum_r, cap_r, cum_d, cap_d) = _fixed_top(T, ys, cs, yt, ct, eps)
  add = jnp.clip(need + d - cum_r[:-1], 0.0, cap_r)          # the cheapest receivers filled first
  take = jnp.clip(d - cum_d[:-1], 0.0, cap_d)[::-1]          # the dearest donors emptied first
  z = jnp.zeros_like(y).at[order].set(z0 + add - take).at[t].set(T)
  feasible = jnp.sum(jnp.abs(z - y)) <= eps + 1e-5
  return jnp.where(feasible, z, y)


_batch = jax.jit(jax.vmap(_release, in_axes=(0, None)))   # compiled once per batch shape, any budget


def modelguard_w(eps: float) -> Defence:
  """ModelGuard-W at L1 budget `eps` (the authors' default 1.0): every answer replaced by the release of most
  cross-entropy to it within L1 distance eps, its top-1 kept with a margin of 1e-4."""
  if not eps >= 0:
    raise UserError(f"modelguard_w: the L1 budget must be >= 0, got {eps}")
  return stateless(lambda x, probs, key: _batch(probs.astype(jnp.float32), jnp.float32(eps)), "modelguard_w")
