"""DAWN's verification (Szyller, Atli, Marchal & Asokan, ACM MM 2021): the suspect's agreement with the altered
answers one client was given (the watermark itself is the defence `defences.dawn`).

The provider logs each client's triggers (`evidence`); a suspect that agrees with a of their n altered labels is
claimed stolen through that client when P[Bin(n, q) >= a] is small, q the agreement rate of independent models with
those labels (measured on the owner's reference models).
"""

from typing import NamedTuple

import numpy as np

from mlpriv_jax.defences.dawn import canonical, triggers
from mlpriv_jax.oracle import Oracle, query_all
from mlpriv_jax.ownership import verdicts


class Evidence(NamedTuple):
  """What the provider logged of one client: its triggered queries and the altered labels it was given."""
  x: np.ndarray         # the triggers, u8[n, H, W, C]
  labels: np.ndarray    # int[n] the altered top-1 the client received


def evidence(secret, queries, answers, rate: float) -> Evidence:
  """The client's triggers among its `queries` (with the `answers` it received)."""
  x = canonical(queries)
  hit = triggers(secret, x, rate)
  return Evidence(x[hit], np.asarray(answers)[hit].argmax(-1).astype(np.int32))


def from_ledger(ledger, client: str) -> Evidence:
  """The triggers a served victim logged for the key named `client` (`serve.Ledger`, behind `--defence=dawn`)."""
  x, labels = ledger.triggers(client)
  return Evidence(x, labels)


def agreements(ev: Evidence, suspect: Oracle) -> dict:
  """{agreed, triggers, queries}: how many of the triggers' altered labels the suspect gives."""
  if len(ev.x) == 0:
    return dict(agreed=0, triggers=0, queries=0)
  start = suspect.queries_used
  agreed = int((query_all(suspect, ev.x).argmax(-1) == ev.labels).sum())
  return dict(agreed=agreed, triggers=len(ev.x), queries=suspect.queries_used - start)


def triggers_needed(agreement: float, null_rate: float, alpha: float, most: int = 100_000) -> int:
  """The fewest logged triggers n at which a suspect agreeing with a fraction `agreement` of them is claimed stolen,
  P[Bin(n, q) >= ceil(agreement n)] < alpha, q = `null_rate` (floored as in `verdicts.binomial_p`); the queries it
  takes at watermark rate r are n / r. Raises ValueError where no n up to `most` suffices."""
  if agreement <= null_rate:
    raise ValueError(f"an agreement of {agreement:g} is no more than the null rate {null_rate:g}: never stolen")
  for n in range(1, most + 1):
    if verdicts.binomial_p(int(np.ceil(agreement * n - 1e-9)), n, null_rate) < alpha:
      return n
  raise ValueError(f"an agreement of {agreement:g} against a null rate of {null_rate:g} never reaches {alpha:g}")
