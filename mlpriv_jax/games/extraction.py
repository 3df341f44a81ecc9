"""Model extraction as the survey measures it, in two steps that extract.py, survey_tables.py and the arena compose:

  result = attacks.extraction.run(name, oracle, pool, ...)   # the attack: it sees only the oracle
  rows = judge(result, surrogate, evaluator(...))            # the evaluator: each snapshot of the surrogate

The evaluator compares the surrogate with the victim's undefended top-1 on the victim's test set (fidelity) and with
the true labels (accuracy), and gives the accuracy's ratio to the victim's (the survey's `85.63 (0.90x)`).
"""

import dataclasses
from typing import List, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from mlpriv_jax import data, models, results, train
from mlpriv_jax.attacks import extraction as E
from mlpriv_jax.errors import UserError, integer

METRICS = ("accuracy", "fidelity", "accuracy_ratio")


class Evaluator(NamedTuple):
  """What the evaluator (not the attacker) holds of the victim: its test set and its undefended top-1 there."""
  x_test: np.ndarray          # u8[T, H, W, C]
  y_test: np.ndarray          # int[T]
  victim_top1: np.ndarray     # int[T]
  victim_accuracy: float


def evaluator(model: models.Model, variables, x_test, y_test) -> Evaluator:
  """The evaluator of surrogates of the victim (`model`, `variables`) on (x_test, y_test)."""
  top1 = np.asarray(train.predict(model, variables, x_test)).argmax(-1)
  return Evaluator(x_test, y_test, top1, float((top1 == y_test).mean()))


def members(model: models.Model, variables, input_shape) -> Optional[int]:
  """K when `variables` hold K models of `model` stacked on a leading axis (an ensemble: DisGUIDE's students), else
  None."""
  ref = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
  got, one = jax.tree.leaves(variables["params"])[0], jax.tree.leaves(ref["params"])[0]
  return int(got.shape[0]) if got.ndim == one.ndim + 1 else None


def evaluate(model: models.Model, state, ev: Evaluator) -> dict:
  """{accuracy, fidelity, accuracy_ratio} of a surrogate (`model`, its train state); an ensemble's state (K stacked
  models) by its soft vote, the mean of the members' softmax."""
  variables = train.variables_of(state)
  k = members(model, variables, ev.x_test.shape[1:])
  if k is None:
    logits = train.predict(model, variables, ev.x_test)
  else:
    logits = jnp.log(jax.nn.softmax(train.predict(model, variables, ev.x_test, num_models=k)).mean(0))
  m = E.extraction_metrics(logits, ev.victim_top1, ev.y_test, ev.victim_accuracy)
  return {k: m[k] for k in METRICS}


def judge(result: E.ExtractionResult, model: models.Model, ev: Evaluator, **common) -> List[dict]:
  """Results rows of every snapshot of the attack's surrogate (its architecture `model`; `queries`: the queries it
  had spent then); `common`: the fields every row shares (attack, defence, budget, surrogate, seed, ...)."""
  out = []
  for queries, state in result.snapshots:
    out += [results.row(metric=k, value=v, family="extraction", queries=queries, **common)
            for k, v in evaluate(model, state, ev).items()]
  return out


def at_budget(rows: Sequence[dict], budget: int) -> List[dict]:
  """The rows of the snapshot with the most queries within `budget`, marked with that budget ([] if none)."""
  within = [r["queries"] for r in rows if r["queries"] is not None and r["queries"] <= budget]
  if not within:
    return []
  q = max(within)
  return [dict(r, budget=int(budget)) for r in rows if r["queries"] == q]


def curve(rows: Sequence[dict]) -> List[dict]:
  """[{queries, accuracy, fidelity, accuracy_ratio}] by query count: the rows as the curve a program plots."""
  points = {}
  for r in rows:
    points.setdefault(r["queries"], dict(queries=r["queries"]))[r["metric"]] = r["value"]
  return [points[q] for q in sorted(points)]


@dataclasses.dataclass(frozen=True)
class ExtractionAudit:
  """What the extraction attacker does against a victim, the same spelling for extract.py and the arena."""
  attacks: Tuple[str, ...]                    # registry names
  budgets: Tuple[int, ...]                    # queries the attacker may make (the arena's cells, a program's curve)
  surrogates: Tuple[str, ...]                 # surrogate architectures; `<arch>+pretrained`: on the extractor
  query_set: str                              # the attacker's pool
  surrogate: train.TrainConfig                # the surrogate's recipe
  options: E.ExtractionOptions = E.ExtractionOptions()
  surrogate_init: Optional[str] = None        # the extractor artifact of the `+pretrained` surrogates
  surrogate_tune: str = "head"                # what of them trains: 'head' or 'last_block' (`models.transfer`)

  def validate(self, pool_size: Optional[int] = None):
    for a in self.attacks:
      E.get(a)
    for s in self.surrogates:
      arch, pretrained = split_surrogate(s)
      models.canonical_name(arch)
      if pretrained and self.surrogate_init is None:
        raise UserError(f"surrogate {s} starts from a pretrained extractor: give its artifact (surrogate_init)")
    if not self.budgets:
      raise UserError("no extraction budget given")
    for b in self.budgets:
      integer(b, "budget")
    for a in self.attacks:   # a data-free attack runs whole iterations: its budget must hold one
      if E.get(a).pool == "none" and max(self.budgets) < self.options.of(a).cost():
        raise UserError(f"{a} needs at least {self.options.of(a).cost()} queries (one iteration), got a budget of "
                        f"{max(self.budgets)}")
    if pool_size is not None and max(self.budgets) > pool_size:
      raise UserError(f"budget {max(self.budgets)} is larger than the query pool {self.query_set} ({pool_size} "
                      f"images)")
    self.surrogate.validate()
    self.options.validate()
    if self.surrogate_init is not None:
      models.find_artifact(self.surrogate_init)
    if self.surrogate_tune not in models.TUNES[1:]:
      raise UserError(f"unknown surrogate_tune {self.surrogate_tune!r}; known: {', '.join(models.TUNES[1:])}")
    return self

  def surrogate_model(self, name: str, num_classes: int, pool_images, *, input_shape, victim_data=None):
    """The surrogate `name`: an architecture from scratch, normalised with the attacker's own pool's statistics
    (pool_images None: a data-free attacker's, those of uniform pixels); or `<arch>+pretrained`, the extractor's
    body under a new head, frozen up to `surrogate_tune` (`models.transfer`), the extractor checked against the
    victim (`models.load_extractor`)."""
    arch, pretrained = split_surrogate(name)
    if pretrained:
      return models.load_extractor(self.surrogate_init, input_shape=input_shape, num_classes=num_classes, arch=arch,
                                   victim_data=victim_data, tune=self.surrogate_tune)
    if pool_images is None:   # a data-free attacker has no images: the statistics of uniform pixels in [0, 1]
      return models.get_model(arch, num_classes, mean=(0.5,) * input_shape[-1], std=(12 ** -0.5,) * input_shape[-1])
    mean, std = data.channel_stats(pool_images)   # the attacker normalises with its own data
    return models.get_model(arch, num_classes, mean=mean, std=std)


PRETRAINED = "+pretrained"


def split_surrogate(name: str) -> Tuple[str, bool]:
  """('cnn_small', True) for 'cnn_small+pretrained' (a surrogate on the attacker's extractor); (name, False)."""
  return (name[: -len(PRETRAINED)], True) if name.endswith(PRETRAINED) else (name, False)


def canonical_surrogate(name: str) -> str:
  """The surrogate's name with its architecture's canonical name ('res20+pretrained' -> 'resnet20+pretrained')."""
  arch, pretrained = split_surrogate(name)
  return models.canonical_name(arch) + (PRETRAINED if pretrained else "")


def pretrained_surrogates(names: Sequence[str]) -> Tuple[str, ...]:
  """Each surrogate name marked as starting from the extractor (once)."""
  return tuple(n if split_surrogate(n)[1] else n + PRETRAINED for n in names)
