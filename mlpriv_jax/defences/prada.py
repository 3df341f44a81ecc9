"""PRADA (Juuti, Szyller, Marchal & Asokan, EuroS&P 2019): detect extraction query streams.

For each client, PRADA keeps a growing set G_c of earlier queries per predicted
class c. A new query's minimum L2 distance to G_c joins the distance list; the
query joins G_c when that distance exceeds the class threshold
T_c = max(T_c, mean - std of G_c's distances). Benign streams give roughly
normal minimum distances; synthetic ones (Jacobian augmentation, small steps from
earlier queries) do not. Every `check_every` queries the pooled distances, with
3-sigma outliers removed, are tested with Shapiro-Wilk; W < delta flags the
client (the authors' code, `SSGAalto/prada-protecting-against-dnn-model-stealing-attacks`, `growing_set.py`).

This is a sequential, stateful monitor of one client's stream, so it runs on
the host (numpy/scipy) beside the jitted victim, not as a jitted transform.
"""

import numpy as np
from scipy import stats
from mlpriv_jax.errors import UserError


class Prada:
  """A per-client detector; `observe(x, top1) -> bool` (True once the client is flagged).

  Args:
    delta: Shapiro-Wilk threshold (the reference uses 0.9; the paper tunes
      0.9-0.96 on benign traffic for zero false positives).
    min_distances: test only once this many distances remain after outlier removal.
    check_every: queries between tests.
  """

  def __init__(self, delta: float = 0.9, min_distances: int = 100, check_every: int = 10):
    if not 0 < delta < 1:
      raise UserError(f"prada: delta must lie in (0, 1), got {delta}")
    if min_distances < 3 or check_every < 1:
      raise UserError(f"prada: need min_distances >= 3 and check_every >= 1, got {min_distances}, {check_every}")
    self.delta, self.min_distances, self.check_every = delta, min_distances, check_every
    self.growing = {}        # class -> [n_c, D] array of kept queries
    self.growing_dists = {}  # class -> distances of the kept queries
    self.threshold = {}      # class -> T_c
    self.dists = {}          # class -> all minimum distances
    self.num_queries = 0
    self.attacker_present = False
    self.first_flag_at = None
    self.last_w = None

  def observe(self, x, top1) -> bool:
    """Feeds a batch (images [B, ...] in [0, 1], the victim's top-1 labels [B]), in order."""
    x = np.asarray(x, np.float32).reshape(len(top1), -1)
    for xi, c in zip(x, np.asarray(top1).tolist()):
      self._one(xi, c)
    return self.attacker_present

  def _one(self, xi, c):
    self.num_queries += 1
    if c not in self.growing:
      self.growing[c], self.growing_dists[c], self.threshold[c], self.dists[c] = xi[None], [0.0], 0.0, []
    else:
      d = float(np.sqrt(((self.growing[c] - xi) ** 2).sum(-1)).min())
      self.dists[c].append(d)
      if d > self.threshold[c]:
        self.growing[c] = np.concatenate([self.growing[c], xi[None]])
        self.growing_dists[c].append(d)
        g = np.asarray(self.growing_dists[c])
        self.threshold[c] = max(self.threshold[c], float(g.mean() - g.std()))
    if self.num_queries % self.check_every == 0:
      self._test()

  def _test(self):
    pooled = np.concatenate([np.asarray(v) for v in self.dists.values() if len(v) >= 10] or [np.zeros(0)])
    if len(pooled) == 0:
      return
    pooled = pooled[np.abs(pooled - pooled.mean()) < 3 * pooled.std() + 1e-12]
    if len(pooled) <= self.min_distances:
      return
    self.last_w = float(stats.shapiro(pooled).statistic)
    if self.last_w < self.delta and not self.attacker_present:
      self.attacker_present, self.first_flag_at = True, self.num_queries
