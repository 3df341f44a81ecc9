"""The arena's ownership family: after each theft, can the victim's owner prove it?

Every extraction cell's surrogate (an attack against a setting at a budget) is a positive: its ownership cell (the
same key, family "ownership") holds each verifier's raw counts on it (`games.ownership.flatten`), computed when the
surrogate is, before its extraction cell is written (so a run killed between the two recomputes both). The
negatives are `num_independent` models of the victim's architecture and recipe trained on disjoint data of its
distribution (`games.ownership.independent`, checkpointed in `<workdir>/ownership/`); each has its own cell (attack
`independent`, surrogate `independent<j>`). DAWN verifies only the surrogates stolen through a DAWN setting: its
evidence is the triggers among the queries the attacker's account sent up to the surrogate's snapshot, the labels
it was given, and the negatives' agreements with them. The verdicts (p-values, detection at a false-positive rate
on the negatives) are made at collation (`scoring.ownership_verdicts`).
"""

import os
import time
from typing import Callable, Optional

import numpy as np

from mlpriv_jax.arena import cells as C
from mlpriv_jax.errors import UserError
from mlpriv_jax.games import ownership

NEGATIVE = "independent"   # the attack name of the negatives' cells


def key_of(k: C.CellKey) -> C.CellKey:
  """The ownership cell of extraction cell `k`."""
  return k._replace(family="ownership")


def negative_keys(audit: ownership.OwnershipAudit, seed: int) -> list:
  return [C.key("ownership", NEGATIVE, "none", None, None, f"{NEGATIVE}{j}", seed)
          for j in range(audit.num_independent)]


class Prover:
  """The owner of one arena victim: its evidence and negatives, made on first use; `prove` writes the ownership
  cell of an extraction key."""

  def __init__(self, audit: ownership.OwnershipAudit, workdir: str, trained, public, key, *, account,
               master: Callable[[], Optional[bytes]], todo: set, progress: Callable, log: Callable):
    self.audit, self.workdir, self.trained, self.public, self.key = audit, workdir, trained, public, key
    self.account, self.master, self.todo, self.progress, self.log = account, master, todo, progress, log
    self._owner = self._negatives = None
    self._suspects = {}
    if "dataset_inference" in audit.verifiers and len(public[0]) < audit.num_points:
      raise UserError(f"dataset inference walks {audit.num_points} public points: the test images after the arena's "
                      f"num_test; {trained.dataset.name} has {len(public[0])} of them")

  def wanted(self, k: C.CellKey) -> bool:
    return key_of(k) in self.todo

  @property
  def owner(self) -> ownership.Owner:
    if self._owner is None:
      t = self.trained
      members = t.x[t.target_keep], t.y[t.target_keep]
      self._owner = ownership.prepare(self.audit, t.model, t.target_variables, members, self.public, self.key)
    return self._owner

  @property
  def negatives(self) -> list:
    """The independent models as suspects; their own cells are written the first time they are made."""
    if self._negatives is None:
      t = self.trained
      variables = ownership.independent(t, self.audit, workdir=os.path.join(self.workdir, "ownership", "independent"),
                                        log=self.log)
      make = self.suspects(t.model, t.dataset.image_shape)
      self._negatives = [make(v) for v in variables]
      for k, n in zip(negative_keys(self.audit, t.game.seed), self._negatives):
        if k in self.todo:
          t0 = time.time()
          cell = C.write_cell(self.workdir, k, ownership.flatten(ownership.verify(self.owner, n)),
                              seconds=time.time() - t0)
          self.todo.discard(k)
          self.progress(k, _summary(cell["metrics"]))
    return self._negatives

  def suspects(self, model, input_shape) -> Callable:
    if id(model) not in self._suspects:
      self._suspects[id(model)] = (model, ownership.suspects(model, input_shape))   # the model kept alive with it
    return self._suspects[id(model)][1]

  def prove(self, k: C.CellKey, model, variables, *, images=None, answers=None) -> None:
    """Writes the ownership cell of extraction key `k` for its surrogate (`model` with `variables`); `images` and
    `answers`: the queries the attacker's account sent up to this surrogate and what it was given (DAWN's evidence,
    read where the setting is DAWN's)."""
    ok = key_of(k)
    if ok not in self.todo:
      return
    t0 = time.time()
    negatives = self.negatives   # their cells first, and every positive of a run sees the same ones
    evidence = None
    if "dawn" in self.audit.verifiers and k.defence == "dawn" and images is not None and len(images):
      evidence = ownership.dawn_evidence(self.master(), self.account, images, answers, k.strength)
    suspect = self.suspects(model, self.trained.dataset.image_shape)(variables)
    raw = ownership.verify(self.owner, suspect, dawn=evidence, negatives=negatives)
    cell = C.write_cell(self.workdir, ok, ownership.flatten(raw), seconds=time.time() - t0)
    self.todo.discard(ok)
    self.progress(ok, _summary(cell["metrics"]))

  def nothing(self, k: C.CellKey, note: str) -> None:
    """The ownership cell of an extraction key that left no surrogate (`note` says why): nothing to verify."""
    ok = key_of(k)
    if ok in self.todo:
      C.write_cell(self.workdir, ok, {}, info=dict(note=note))
      self.todo.discard(ok)
      self.progress(ok, note)


def transfer_until(images, answers, queries_used: int, queries: int):
  """The attacker's queries and answers up to a snapshot taken after `queries` of its `queries_used` (an attack
  whose transfer set is only part of what it queried, e.g. DFME's, in proportion)."""
  images, answers = np.asarray(images), np.asarray(answers)
  n = len(images) if queries >= queries_used else int(len(images) * queries / max(queries_used, 1))
  return images[:n], answers[:n]


def _summary(m: dict) -> str:
  parts = []
  if m.get("dataset_inference_p_value") is not None:
    parts.append(f"DI p {m['dataset_inference_p_value']:.2g}")
  if m.get("ipguard_matched") is not None:
    parts.append(f"IPGuard {m['ipguard_matched']:.0f}/{m['ipguard_points']:.0f}")
  if m.get("dawn_triggers") is not None:
    parts.append(f"DAWN {m['dawn_agreed']:.0f}/{m['dawn_triggers']:.0f}")
  return ", ".join(parts) or "no verifier applies"
