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
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import jax
import numpy as np

from mlpriv_jax import streams, train
from mlpriv_jax.defences import dawn as watermark
from mlpriv_jax.errors import UserError, integer
from mlpriv_jax.oracle import Oracle, Service, Victim
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
  agreements with `dawn` (the suspect's client's triggers; None: not answered through DAWN) and each of the
  `negatives`' agreements with the same triggers (`null_agreed`). Each with the queries it sent the suspect."""
  out = {}
  if owner.dataset_inference is not None:
    out["dataset_inference"] = DI.verify(owner.dataset_inference, suspect)
  if owner.fingerprint is not None:
    out["ipguard"] = IG.matches(owner.fingerprint, suspect)
  if dawn is not None:
    out["dawn"] = dict(DW.agreements(dawn, suspect), null_agreed=[DW.agreements(dawn, n)["agreed"] for n in negatives])
  return out


def suspects(model, input_shape) -> Callable:
  """variables -> a Victim answering as that surrogate of `model` (one model, or an ensemble: K models stacked on a
  leading axis, DisGUIDE's students, answering with their soft vote); every suspect of one kind shares one compiled
  service (`Service.with_variables`)."""
  from mlpriv_jax.games.extraction import members
  services = {}

  def one(v, x):
    return model.apply(v, x, train=False)[0]

  def vote(v, x):
    return jax.numpy.log(jax.nn.softmax(jax.vmap(lambda w: one(w, x))(v)).mean(0))

  def make(variables) -> Victim:
    k = members(model, variables, input_shape)
    if k not in services:
      services[k] = Service(one if k is None else vote, variables, model.num_classes, input_shape)
    return Victim.of(services[k].with_variables(variables))
  return make


FIELDS = {"dataset_inference": ("p_value", "statistic", "queries"), "ipguard": ("matched", "points", "queries"),
          "dawn": ("agreed", "triggers", "queries")}


def flatten(raw: Dict[str, dict]) -> Dict[str, float]:
  """{`<verifier>_<field>`: number}: a suspect's raw counts as the metrics of a results row (DAWN's negatives'
  agreements as `dawn_null_agreed_<j>`); `unflatten` reads them back."""
  out = {f"{v}_{f}": r[f] for v, r in raw.items() for f in FIELDS[v]}
  if "dawn" in raw:
    out.update({f"dawn_null_agreed_{j}": a for j, a in enumerate(raw["dawn"]["null_agreed"])})
  return out


def unflatten(metrics: Dict[str, float]) -> Dict[str, dict]:
  out = {v: {f: metrics[f"{v}_{f}"] for f in fields} for v, fields in FIELDS.items()
         if all(metrics.get(f"{v}_{f}") is not None for f in fields)}
  if "dawn" in out:
    nulls = sorted((int(k.rsplit("_", 1)[1]), a) for k, a in metrics.items() if k.startswith("dawn_null_agreed_"))
    out["dawn"]["null_agreed"] = [a for _, a in nulls]
  return out


def dawn_evidence(master: bytes, account_key, queries, answers, rate: float) -> DW.Evidence:
  """What the provider logged of the client with `account_key`: its triggers among `queries` and their answers."""
  return DW.evidence(watermark.client_secret(master, watermark.account_bytes(account_key)), queries, answers, rate)


def independent(trained, audit: OwnershipAudit, *, workdir: Optional[str] = None, log=print) -> List[dict]:
  """The negatives of a game: `num_independent` models of its architecture and recipe, model j trained on the j-th
  block of N / 2 training images after the game's universe of N (no model of the game saw them)."""
  game = trained.game
  return train_independent(trained.model, game.train, trained.dataset, game.num_examples, game.num_examples // 2,
                           audit.num_independent, jax.random.key(game.seed), workdir=workdir, log=log)


def train_independent(model, recipe: train.TrainConfig, ds, start: int, size: int, k: int, key, *,
                      workdir: Optional[str] = None, log=print) -> List[dict]:
  """k models of `model` and `recipe`, model j trained on training images start + j * size ... (+ size), all at once
  (`train_k`, from `derive(key, INDEPENDENT)`; checkpointed in `workdir` when given, so a killed run resumes)."""
  need = start + k * size
  if len(ds.x_train) < need:
    raise UserError(f"{k} independent models of {size} images need {need} training images after the victim's; "
                    f"{ds.name} has {len(ds.x_train)}")
  keep = np.zeros((k, k * size), bool)
  for j in range(k):
    keep[j, j * size:(j + 1) * size] = True
  state = train.train_k(model, recipe, ds.x_train[start:need], ds.y_train[start:need], keep,
                        streams.derive(key, streams.INDEPENDENT), workdir=workdir,
                        meta=dict(role="ownership negatives", dataset=ds.name, start=start, size=size)).state
  log(f"ownership: {k} independent models trained on {size} images each, images {start}..{need - 1}")
  return [train.variables_of(jax.tree.map(lambda v, j=j: v[j], state)) for j in range(k)]


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
    else:   # the negatives on each positive's triggers, each at the others' rate (leave one out)
      p_pos = [verdicts.binomial_p(r["agreed"], r["triggers"], _rate(r["null_agreed"], r["triggers"])) for r in pos]
      p_neg = [verdicts.binomial_p(a, r["triggers"], _rate(r["null_agreed"][:j] + r["null_agreed"][j + 1:],
                                                           r["triggers"]))
               for r in pos for j, a in enumerate(r["null_agreed"]) if len(r["null_agreed"]) > 1]
    out[v] = dict(p_values=p_pos, negative_p_values=p_neg, queries=float(np.mean([r["queries"] for r in pos])),
                  **verdicts.detection(p_pos, p_neg, audit.fprs))
  return out


def _rate(agreed: Sequence[int], triggers: int) -> float:
  """The negatives' mean agreement rate with `triggers` altered labels (0 without negatives)."""
  return float(np.mean(agreed)) / max(triggers, 1) if len(agreed) else 0.0


def verify_artifact(artifact: str, suspect: Oracle, audit: OwnershipAudit, *, data_dir: Optional[str] = None,
                    dawn: Optional[DW.Evidence] = None, workdir: Optional[str] = None, alpha: float = 0.01,
                    log=print) -> dict:
  """The owner's report on one suspect: the victim is the model artifact at `artifact` (one that records its
  training data and members: `mia.py`'s target, the arena's victim), `suspect` any Oracle (a served model, a
  model in process); `dawn`: what the provider logged of the client under suspicion (`dawn.from_ledger`).

  The negatives (IPGuard's and DAWN's null rates) are `audit.num_independent` models of the victim's recipe trained
  on the training images after its last member (checkpointed in `workdir`). Returns {victim, suspect queries,
  verifiers: {name: raw counts, p_value, stolen (p < alpha)}}."""
  from mlpriv_jax.games import victims
  audit.validate()
  v = victims.load(artifact, data_dir)
  model, ds, info, recipe = v.model, v.dataset, v.meta["data"], v.meta.get("recipe")
  members = np.asarray(info.get("member_indices") or np.arange(info.get("num_train_used") or 0), np.int64)
  if not len(members) or not isinstance(recipe, dict):
    raise UserError(f"{v.meta['artifact']} records neither its training members nor its recipe (the owner's "
                    "evidence is its training points and its negatives are trained by its recipe): verify the "
                    "artifact of a victim trained by train.py, mia.py or the arena")
  shape = v.input_shape
  if (tuple(suspect.input_shape), suspect.num_classes) != (shape, model.num_classes):
    raise UserError(f"the suspect takes {tuple(suspect.input_shape)} with {suspect.num_classes} classes; the victim "
                    f"{shape} with {model.num_classes}: not a copy of it")
  if "dawn" in audit.verifiers and dawn is None:
    raise UserError("the dawn verifier reads the provider's log of the suspected client: give its ledger and name")
  n = audit.num_points
  if "dataset_inference" in audit.verifiers and (len(ds.x_test) < n or len(members) < n):
    raise UserError(f"dataset inference uses {n} private and {n} public points; {v.meta['artifact']} has "
                    f"{len(members)} members and {ds.name} {len(ds.x_test)} test images")
  private = ds.x_train[members], ds.y_train[members]
  public = ds.x_test[-n:], ds.y_test[-n:]   # unseen by the victim
  key = jax.random.key(int(info.get("seed", 0)))
  owner = prepare(audit, model, v.variables, private, public, key)
  negatives = []
  if {"ipguard", "dawn"} & set(audit.verifiers):
    variables_k = train_independent(model, train.TrainConfig(**recipe), ds, int(members.max()) + 1, len(members),
                                    audit.num_independent, key, workdir=workdir, log=log)
    make = suspects(model, shape)
    negatives = [make(w) for w in variables_k]
  start = suspect.queries_used
  raw = verify(owner, suspect, dawn=dawn if "dawn" in audit.verifiers else None, negatives=negatives)
  # the negatives' own counts against the same fingerprint, read by `judge` as in the arena
  nulls = [verify(owner._replace(dataset_inference=None), n) for n in negatives]
  verdict = judge([raw], nulls, audit)
  out = {name: dict(r, p_value=float(verdict[name]["p_values"][0]), stolen=bool(verdict[name]["p_values"][0] < alpha))
         for name, r in raw.items()}
  return dict(victim=v.meta["artifact"], alpha=alpha, suspect_queries=suspect.queries_used - start, verifiers=out,
              negatives=len(negatives))
