"""The arena's unit of work: a cell, one small result file written atomically.

A cell is one measurement of one (family, attack, defence, strength, budget, surrogate, seed):

  family     "utility" (the defence's cost to benign users; no attack), "extraction", "membership", "monitor"
  attack     a registry name (None for utility cells; "benign" for a monitor's benign stream)
  defence    a defence registry name, "dpsgd" (a victim trained with DP-SGD; strength = its epsilon), or "served"
             (the victim as served at --victim_url, behind whatever defence the server runs)
  strength   the defence's strength (None for parameter-free defences)
  budget     queries the attacker may make (extraction and monitor cells; None otherwise)
  surrogate  the surrogate architecture (extraction cells; None otherwise)
  seed       the run's seed

and its `metrics` (a flat dict of numbers), plus optional `curves` (small lists: an extraction curve, a
down-sampled ROC) and `seconds`. A cell's file is `cells/<key>.json`; a rerun computes only the cells whose file
is missing, and the report is collated from the files alone.
"""

import json
import os
import re
from typing import Dict, Iterable, List, NamedTuple, Optional

from mlpriv_jax.errors import UserError
from mlpriv_jax.utils import write_json

FAMILIES = ("utility", "extraction", "membership", "monitor")
DPSGD = "dpsgd"   # the pseudo-defence of a DP-SGD-trained victim (strength: epsilon)
SERVED = "served"   # the pseudo-defence of the victim queried over HTTP (the server's own defence, unknown here)


class CellKey(NamedTuple):
  family: str
  attack: Optional[str]
  defence: str
  strength: Optional[float]
  budget: Optional[int]
  surrogate: Optional[str]
  seed: int

  @property
  def setting(self) -> str:
    """The defence setting, `mad@0.5` or `label`: the row of the headline table."""
    return setting(self.defence, self.strength)

  @property
  def name(self) -> str:
    """A file name that is the key (readable, no path separators)."""
    parts = [self.family, self.attack or "-", self.setting, f"B{self.budget}" if self.budget is not None else "-",
             self.surrogate or "-", f"s{self.seed}"]
    return re.sub(r"[^A-Za-z0-9@._+-]", "_", "__".join(parts))


def setting(defence: str, strength: Optional[float]) -> str:
  return defence if strength is None else f"{defence}@{float(strength):g}"


def key(family: str, attack: Optional[str] = None, defence: str = "none", strength: Optional[float] = None,
        budget: Optional[int] = None, surrogate: Optional[str] = None, seed: int = 0) -> CellKey:
  if family not in FAMILIES:
    raise UserError(f"unknown cell family {family!r}; known: {', '.join(FAMILIES)}")
  return CellKey(family, attack, defence, None if strength is None else float(strength),
                 None if budget is None else int(budget), surrogate, int(seed))


def cell_path(workdir: str, k: CellKey) -> str:
  return os.path.join(workdir, "cells", k.name + ".json")


def write_cell(workdir: str, k: CellKey, metrics: Dict[str, float], *, curves: Optional[dict] = None,
               seconds: Optional[float] = None, info: Optional[dict] = None) -> dict:
  """Writes the cell atomically (a killed run leaves either the whole cell or none); returns it."""
  bad = [m for m, v in metrics.items() if v is not None and not isinstance(v, (int, float))]
  if bad:
    raise UserError(f"cell metrics must be numbers or None; {', '.join(bad)} are not")
  cell = dict(k._asdict(), setting=k.setting, metrics=dict(metrics), curves=curves or {}, seconds=seconds,
              info=info or {})
  os.makedirs(os.path.join(workdir, "cells"), exist_ok=True)
  write_json(cell_path(workdir, k), cell)
  return cell


def read_cell(workdir: str, k: CellKey) -> Optional[dict]:
  path = cell_path(workdir, k)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def load_cells(workdir: str) -> List[dict]:
  """Every cell in the workdir, in a stable order."""
  folder = os.path.join(workdir, "cells")
  if not os.path.isdir(folder):
    return []
  cells = []
  for name in sorted(os.listdir(folder)):
    if name.endswith(".json"):
      with open(os.path.join(folder, name)) as f:
        try:
          cells.append(json.load(f))
        except json.JSONDecodeError as e:
          raise UserError(f"{os.path.join(folder, name)} is not a cell ({e}); delete it to recompute it") from None
  return cells


def missing(workdir: str, keys: Iterable[CellKey]) -> List[CellKey]:
  """The keys whose cell file does not exist yet."""
  return [k for k in keys if not os.path.exists(cell_path(workdir, k))]
