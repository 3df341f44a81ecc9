"""One run of an adaptive attack for every defence setting that answers it alike.

An attack is a deterministic function of its key and of what it reads of the answers: all of an answer for most
attacks, its top-1 label for a label-only one. Behind two settings whose answers read the same on every query the
attack makes, the attack makes the same queries and returns the same result. So the arena runs the attack once
against one setting through a `Tee`, which sends each of its queries to the other settings as well, in the same
call (the same batch, and the same draw of each setting's own key stream as a run of its own would make); a
setting whose answers ever read differently drops out of the tee and gets a run of its own afterwards, with a
fresh account. Nothing is assumed about the defences (a randomised or stateful one simply answers as it would in
its own run): a setting shares a result only when it was checked, query by query, to lead to it, or when its
defence keeps the victim's label by construction and the attack reads nothing else.
"""

from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import numpy as np

from mlpriv_jax.errors import UserError
from mlpriv_jax.oracle import Oracle


def top1(answers) -> np.ndarray:
  """What a label-only attack reads of f32[B, C] answers."""
  return np.asarray(answers).argmax(-1)


def whole(answers) -> np.ndarray:
  """What any other attack reads: the answers themselves."""
  return np.asarray(answers)


class Tee:
  """An `Oracle` that answers as `primary` and asks every one of `others` the same queries in the same calls,
  keeping those whose answers read the same (`read`) on every call so far."""

  def __init__(self, primary: Oracle, others: Dict[str, Oracle], read: Callable = whole):
    self.primary, self.others, self.read = primary, dict(others), read
    self.num_classes, self.input_shape = primary.num_classes, tuple(primary.input_shape)
    self.disclosed_defence = getattr(primary, "disclosed_defence", None)   # what a served primary's server tells

  @property
  def queries_used(self) -> int:
    return self.primary.queries_used

  @property
  def budget_left(self):
    return self.primary.budget_left

  @property
  def agreeing(self) -> List[str]:
    """The other settings that answered alike on every query so far."""
    return list(self.others)

  def query(self, x) -> np.ndarray:
    answers = self.primary.query(x)
    seen = self.read(answers)
    for name in list(self.others):
      try:
        same = np.array_equal(self.read(self.others[name].query(x)), seen)
      except UserError:   # its budget or its monitor stops it where the primary goes on: it runs on its own
        same = False
      if not same:
        del self.others[name]
    return answers


def run_in_lockstep(attack: Callable[[Oracle], object], names: Sequence[str], oracle_of: Callable[[str], Oracle],
                    read: Callable = whole, alike: Sequence[str] = ()) -> Iterator[Tuple[object, str, List[str]]]:
  """Runs `attack` for every setting in `names`, once per class of settings that answer it alike; yields
  (result, the setting it was run against, every setting the result belongs to) after each run.

  `attack(oracle)` runs the attack; `oracle_of(name)` makes a fresh account at that setting (a new one for each
  run: a setting that dropped out of a tee has spent queries and key draws of its account). The first remaining
  setting is each run's primary. `alike`: settings known to read alike by construction (for a label-only attack,
  defences that keep the victim's label: the registry's `keeps_label`); the first of them is the first primary
  and the others share its result without being asked.
  """
  left = [n for n in names if n in alike] + [n for n in names if n not in alike]
  while left:
    trusted = [n for n in left[1:] if left[0] in alike and n in alike]
    tee = Tee(oracle_of(left[0]), {n: oracle_of(n) for n in left[1:] if n not in trusted}, read)
    result = attack(tee)
    done = [left[0], *trusted, *tee.agreeing]
    yield result, left[0], done
    left = [n for n in left if n not in done]
