"""The arena's unit of work: a cell, one small result file written atomically.

A cell is one measurement of one (family, attack, defence, strength, budget, surrogate, seed):

  family     "utility" (the defence's cost to benign users; no attack), "extraction", "membership", "monitor",
             "ownership" (the owner's verifiers on an extraction cell's surrogate, or on an independent model)
  attack     a registry name (None for utility cells; "benign" for a monitor's benign stream)
  defence    a defence registry name, "dpsgd" (a victim trained with DP-SGD; strength = its epsilon), or "served"
             (the victim as served at --victim_url, behind whatever defence the server runs)
  strength   the defence's strength (None for parameter-free defences)
  budget     queries the attacker may make (extraction and monitor cells; None otherwise)
  surrogate  the surrogate architecture (extraction cells; None otherwise)
  seed       the run's seed

and its `rows` (results rows of `mlpriv_jax.results`, the one schema: a row per metric, its key's fields filled
in), plus optional `curves` (small lists: a down-sampled ROC), `seconds` and `info` (what is not a number: the
setting whose run it shares, a note). A cell's file is `cells/<key>.json`; a rerun computes only the cells whose
file is missing, and the report is collated from the files alone. A loaded cell also has `metrics`, the
{metric: value} view of its rows that the scoring reads.
"""

import json
import os
import re
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional

from mlpriv_jax import results
from mlpriv_jax.errors import UserError
from mlpriv_jax.utils import write_json

FAMILIES = ("utility", "extraction", "membership", "monitor", "ownership")
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


def rows_of(k: CellKey, metrics: Dict[str, Optional[float]]) -> List[dict]:
  """The results rows of a cell's {metric: value}, each with the key's fields."""
  return [results.row(metric=m, value=v, family=k.family, attack=k.attack or "", defence=k.defence,
                      strength=k.strength, budget=k.budget, surrogate=k.surrogate or "", seed=k.seed)
          for m, v in metrics.items()]


def write_cell(workdir: str, k: CellKey, rows, *, curves: Optional[dict] = None, seconds: Optional[float] = None,
               info: Optional[dict] = None) -> dict:
  """Writes the cell atomically (a killed run leaves either the whole cell or none); returns it as loaded.

  rows: its results rows, or {metric: value} for `rows_of(k, ...)`."""
  if isinstance(rows, dict):
    bad = [m for m, v in rows.items() if v is not None and not isinstance(v, (int, float))]
    if bad:
      raise UserError(f"cell metrics must be numbers or None; {', '.join(bad)} are not")
    rows = rows_of(k, rows)
  cell = dict(k._asdict(), setting=k.setting, rows=results.check_rows(rows), curves=curves or {}, seconds=seconds,
              info=info or {})
  os.makedirs(os.path.join(workdir, "cells"), exist_ok=True)
  write_json(cell_path(workdir, k), cell)
  return _loaded(cell)


def _loaded(cell: dict) -> dict:
  return dict(cell, metrics=results.metrics(cell["rows"]))


def _parse(path: str) -> Optional[dict]:
  """The cell in the file at `path`, or None when the file does not hold one (cut short, edited by hand, another
  tool's): a cell is an object with its key's fields and a list of results rows."""
  try:
    with open(path) as f:
      cell = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError):
    return None
  if not isinstance(cell, dict) or not set(CellKey._fields) <= set(cell) or cell.get("family") not in FAMILIES:
    return None
  rows = cell.get("rows")
  if not isinstance(rows, list) or not all(isinstance(r, dict) and set(r) == set(results.FIELDS) for r in rows):
    return None
  if not all(r["value"] is None or isinstance(r["value"], (int, float)) for r in rows):
    return None
  return _loaded(cell)


def set_aside(path: str) -> str:
  """Moves a damaged cell file out of the way (`<name>.json.damaged`, numbered if taken); returns where to."""
  target, i = path + ".damaged", 1
  while os.path.exists(target):
    target, i = f"{path}.damaged.{i}", i + 1
  os.replace(path, target)
  return target


def read_cell(workdir: str, k: CellKey) -> Optional[dict]:
  """The cell of `k`, or None when it is missing or damaged."""
  path = cell_path(workdir, k)
  return _parse(path) if os.path.exists(path) else None


def load_cells(workdir: str, log: Optional[Callable] = None) -> List[dict]:
  """Every cell in the workdir, in a stable order. A file that does not hold a cell is set aside (with a warning
  through `log`) and left out: the next run that computes recomputes it, never a traceback."""
  folder = os.path.join(workdir, "cells")
  if not os.path.isdir(folder):
    return []
  cells = []
  for name in sorted(os.listdir(folder)):
    if name.endswith(".json"):
      path = os.path.join(folder, name)
      cell = _parse(path)
      if cell is None:
        where = set_aside(path)
        if log is not None:
          log(f"arena: warning: {path} does not hold a cell; set aside as {os.path.basename(where)}, to be "
              f"recomputed")
        continue
      cells.append(cell)
  return cells


def missing(workdir: str, keys: Iterable[CellKey], log: Optional[Callable] = None, *,
            set_aside_damaged: bool = True) -> List[CellKey]:
  """The keys whose cell is not there yet: no file, or a damaged one (set aside, with a warning through `log`;
  only counted as missing with set_aside_damaged=False, what a process that writes nothing asks)."""
  out = []
  for k in keys:
    path = cell_path(workdir, k)
    if not set_aside_damaged:
      if not os.path.exists(path) or _parse(path) is None:
        out.append(k)
      continue
    if os.path.exists(path) and _parse(path) is None:
      where = set_aside(path)
      if log is not None:
        log(f"arena: warning: {path} does not hold a cell; set aside as {os.path.basename(where)}, recomputing it")
    if not os.path.exists(path):
      out.append(k)
  return out
