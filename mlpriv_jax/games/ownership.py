"""The ownership game: after a theft, can the victim's owner prove that a suspect was stolen, without accusing
independent models? The arena and a program compose it in three steps:

  owner = prepare(audit, trained, key)                   # the owner's evidence, once per victim
  raw = verify(owner, suspect, dawn=..., negatives=...)  # one suspect through the Oracle protocol: raw counts
  rows = judge(positives, negatives, audit)              # p-values and detection rates at a false-positive rate

The owner holds the victim's private training points (the target's members in the membership game) and public
points of the same distribution (the test split after the arena's evaluation images). Its negatives are models of
the victim's architecture and recipe trained on disjoint data of the same distribution (`independent`: the training
split after the game's universe, which no model of the game saw). The attacker's shadows are not used as negatives
for Dataset Inference: LiRA's protocol trains each of them on half of the victim's members.

Verifiers (`VERIFIERS`): `dataset_inference` (its own p-value); `ipguard` and `dawn`, whose p-value is a binomial tail
against the negatives' rate of matching the fingerprint's labels, or the watermarked answers of the suspect's client
(`dawn` verifies only where the suspect's client was answered through DAWN; its evidence is that client's triggers).
Every query to a suspect is the verifier's, counted apart from any attacker's.
"""

import dataclasses
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import jax
import numpy as np

from mlpriv_jax import streams, train
from mlpriv_jax.defences import dawn as watermark
from mlpriv_jax.errors import UserError, integer
from mlpriv_jax.oracle import Oracle, Victim
from mlpriv_jax.ownership import dataset_inference as DI
from mlpriv_jax.ownership import dawn as DW
from mlpriv_jax.ownership import ipguard as IG
from mlpriv_jax.ownership import verdicts

VERIFIERS = ("dataset_inference", "ipguard", "dawn")


@dataclasses.dataclass(frozen=True)
class OwnershipAudit:
  """What the owner does to prove a theft, the same for the arena and the programs."""
  verifiers: Tuple[str, ...] = ()
  num_points: int = 100                       # Dataset Inference: private and public points (half fit g)
  num_independent: int = 2                    # negatives: models trained on disjoint data
  dataset_inference: DI.DatasetInferenceOptions = DI.DatasetInferenceOptions()
  ipguard: IG.IPGuardOptions = IG.IPGuardOptions()
  fprs: Tuple[float, ...] = (0.01, 0.05)

  def validate(self):
    for v in self.verifiers:
      if v not in VERIFIERS:
        raise UserError(f"unknown ownership verifier {v!r}; known: {', '.join(VERIFIERS)}")
    integer(self.num_points, "ownership num_points", at_least=4 * self.dataset_inference.num_revealed)
    integer(self.num_independent, "num_independent", at_least=1)
    self.dataset_inference.validate()
    self.ipguard.validate()
    for f in self.fprs:
      if not 0 < f < 1:
        raise UserError(f"a false-positive rate must lie in (0, 1), got {f}")
    return self


class Owner(NamedTuple):
  """The owner's evidence against any suspect of one victim."""
  dataset_inference: Optional[DI.Evidence]
  fingerprint: Optional[IG.Fingerprint]


def prepare(audit: OwnershipAudit, model, variables, private, public, key) -> Owner:
  """The owner's evidence: `private` and `public` are (images, labels) of the victim's training points and of
  unseen points; `model` with `variables` the owner's own (white-box) victim, queried without any defence."""
  audit.validate()
  k = streams.derive(key, streams.OWNERSHIP)
  di = fp = None
  if "dataset_inference" in audit.verifiers:
    n = audit.num_points
    if min(len(private[0]), len(public[0])) < n:
      raise UserError(f"dataset inference uses {n} private and {n} public points; the owner has "
                      f"{len(private[0])} and {len(public[0])}")
    di = DI.prepare(Victim(model, variables), private[0][:n], private[1][:n], public[0][:n], public[1][:n], k,
                    audit.dataset_inference)
  if "ipguard" in audit.verifiers:
    logits = jax.jit(lambda x: model.apply(variables, x, train=False)[0])
    fp = IG.fingerprint(logits, public[0], k, model.num_classes, audit.ipguard)
  return Owner(di, fp)


def verify(owner: Owner, suspect: Oracle, *, dawn: Optional[DW.Evidence] = None,
           negatives: Sequence[Oracle] = ()) -> Dict[str, dict]:
  """{verifier: raw counts} of one suspect: Dataset Inference's p-value and statistic; IPGuard's matches; DAWN's
  agreements with `dawn` (the suspect's client's triggers; None: not answered through DAWN), and the `negatives`'
  mean agreement with them (`null_rate`). Each with the queries it sent the suspect."""
  out = {}
  if owner.dataset_inference is not None:
    out["dataset_inference"] = DI.verify(owner.dataset_inference, suspect)
  if owner.fingerprint is not None:
    out["ipguard"] = IG.matches(owner.fingerprint, suspect)
  if dawn is not None:
    null = [DW.agreements(dawn, n)["agreed"] / max(len(dawn.x), 1) for n in negatives]
    out["dawn"] = dict(DW.agreements(dawn, suspect), null_rate=float(np.mean(null)) if null else 0.0)
  return out


def dawn_evidence(master: bytes, account_key, queries, answers, rate: float) -> DW.Evidence:
  """What the provider logged of the client with `account_key`: its triggers among `queries` and their answers."""
  return DW.evidence(watermark.client_secret(master, watermark.account_bytes(account_key)), queries, answers, rate)


def independent(trained, audit: OwnershipAudit, log=print) -> List[dict]:
  """The negatives: `num_independent` models of the game's architecture and recipe, model j trained on the j-th
  block of N / 2 training images after the game's universe of N (no model of the game saw them)."""
  game, ds = trained.game, trained.dataset
  half, start = game.num_examples // 2, game.num_examples
  need = start + audit.num_independent * half
  if len(ds.x_train) < need:
    raise UserError(f"{audit.num_independent} independent models of {half} images need {need} training images "
                    f"after the game's; {ds.name} has {len(ds.x_train)}")
  out = []
  for j in range(audit.num_independent):
    lo = start + j * half
    key = streams.derive(jax.random.key(game.seed), streams.INDEPENDENT, j)
    state = train.train(trained.model, game.train, ds.x_train[lo:lo + half], ds.y_train[lo:lo + half], key).state
    out.append(train.variables_of(state))
    log(f"ownership: independent model {j} trained on images {lo}..{lo + half - 1}")
  return out


def judge(positives: Sequence[Dict[str, dict]], negatives: Sequence[Dict[str, dict]],
          audit: OwnershipAudit) -> Dict[str, dict]:
  """{verifier: {detection rates, p-values of the positives and negatives, queries per suspect}}.

  IPGuard's p-value is the binomial tail of a suspect's matches at the negatives' mean matching rate; DAWN's raw
  counts carry the negatives' agreements on the same triggers (`null_agreed`)."""
  out = {}
  for v in VERIFIERS:
    pos = [r[v] for r in positives if v in r]
    neg = [r[v] for r in negatives if v in r]
    if not pos:
      continue
    if v == "dataset_inference":
      p_pos, p_neg = [r["p_value"] for r in pos], [r["p_value"] for r in neg]
    elif v == "ipguard":
      q = float(np.mean([r["matched"] / r["points"] for r in neg])) if neg else 0.0
      p_pos = [verdicts.binomial_p(r["matched"], r["points"], q) for r in pos]
      p_neg = [verdicts.binomial_p(r["matched"], r["points"], q) for r in neg]
    else:
      p_pos = [verdicts.binomial_p(r["agreed"], r["triggers"], r["null_rate"]) for r in pos]
      p_neg = []
    out[v] = dict(p_values=p_pos, negative_p_values=p_neg, queries=float(np.mean([r["queries"] for r in pos])),
                  **verdicts.detection(p_pos, p_neg, audit.fprs))
  return out
