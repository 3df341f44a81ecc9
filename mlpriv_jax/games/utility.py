"""What a defence costs benign users, measured through its oracle (defend.py, the arena's utility cells)."""

import time
from typing import List

import numpy as np

from mlpriv_jax import defences, results
from mlpriv_jax.oracle import Oracle

METRICS = ("accuracy", "label_flip_rate", "l1", "kl", "seconds_per_1000_queries")


def measure(oracle: Oracle, x, y, original, batch_size: int) -> dict:
  """`defences.defence_utility` of what `oracle` releases for (x, y) against the undefended f32[N, C] `original`,
  plus the seconds per 1,000 queries after the first batch (which compiles) and the queries it cost."""
  t0 = time.perf_counter()
  first = oracle.query(x[:batch_size])
  t1 = time.perf_counter()
  rest = [oracle.query(x[s:s + batch_size]) for s in range(batch_size, len(x), batch_size)]
  t2 = time.perf_counter()
  m = defences.defence_utility(np.concatenate([first, *rest]), original, y)
  n_timed = len(x) - min(batch_size, len(x))
  m.update(compile_seconds=t1 - t0, queries_used=oracle.queries_used,
           seconds_per_1000_queries=(t2 - t1) / n_timed * 1000 if n_timed else (t1 - t0) / len(x) * 1000)
  return m


def judge(measured: dict, metrics=METRICS, **common) -> List[dict]:
  """The results rows of a `measure` (`common`: defence, strength, seed, ...)."""
  return [results.row(metric=k, value=measured[k], family="utility", queries=measured["queries_used"], **common)
          for k in metrics]
