"""One results schema for every program: flat rows, written as JSON lines, rendered to markdown and CSV.

A row is one measured number:

  attack, defence, strength, metric, value, ci_low, ci_high, queries, seed, data_source

`attack` and `defence` are registry names (or '' where none applies, e.g. a victim's own accuracy), `strength`
the defence's strength (None for parameter-free ones), `ci_low`/`ci_high` a confidence interval (None when
not computed), `queries` the oracle queries the number cost (None when none), `data_source` where the data came
from (`embedded`, a file, `tfds:<name>`).
"""

import csv
import io
import json
import math
from typing import Iterable, Optional, Sequence

from mlpriv_jax.errors import UserError
from mlpriv_jax.utils import atomic_write, jsonable

FIELDS = ("attack", "defence", "strength", "metric", "value", "ci_low", "ci_high", "queries", "seed", "data_source")


def row(*, metric: str, value, attack: str = "", defence: str = "", strength: Optional[float] = None,
        ci: Optional[Sequence[float]] = None, queries: Optional[int] = None, seed: Optional[int] = None,
        data_source: str = "") -> dict:
  """One row; `ci` is (low, high) or None."""
  if not metric:
    raise UserError("a results row needs a metric name")
  lo, hi = (None, None) if ci is None else (float(ci[0]), float(ci[1]))
  return dict(attack=attack, defence=defence, strength=None if strength is None else float(strength), metric=metric,
              value=float(value), ci_low=lo, ci_high=hi, queries=None if queries is None else int(queries),
              seed=seed, data_source=data_source)


def write_jsonl(path: str, rows: Iterable[dict]) -> None:
  """Writes the rows atomically, one JSON object per line."""
  rows = list(rows)
  for r in rows:
    if set(r) != set(FIELDS):
      raise UserError(f"a results row must have exactly the fields {', '.join(FIELDS)}; got {sorted(r)}")
  text = "".join(json.dumps(r, sort_keys=True, default=jsonable) + "\n" for r in rows)
  atomic_write(path, lambda f: f.write(text), mode="w")


def read_jsonl(path: str) -> list:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def to_csv(rows: Iterable[dict]) -> str:
  out = io.StringIO()
  w = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
  w.writeheader()
  for r in rows:
    w.writerow({k: "" if r[k] is None else r[k] for k in FIELDS})
  return out.getvalue()


def _fmt(v: Optional[float], digits: int) -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return "-"
  return f"{v:.{digits}f}"


def to_markdown(rows: Iterable[dict], *, metrics: Optional[Sequence[str]] = None, digits: int = 4) -> str:
  """A table with one line per (attack, defence, strength) and one column per metric, `value [lo, hi]`."""
  rows = list(rows)
  metrics = list(metrics) if metrics else list(dict.fromkeys(r["metric"] for r in rows))
  keys = list(dict.fromkeys((r["attack"], r["defence"], r["strength"]) for r in rows))
  cell = {(r["attack"], r["defence"], r["strength"], r["metric"]): r for r in rows}
  lines = ["| attack | defence | strength | " + " | ".join(metrics) + " |", "|---" * (3 + len(metrics)) + "|"]
  for a, d, s in keys:
    vals = []
    for m in metrics:
      r = cell.get((a, d, s, m))
      if r is None:
        vals.append("")
      elif r["ci_low"] is not None:
        vals.append(f"{_fmt(r['value'], digits)} [{_fmt(r['ci_low'], digits)}, {_fmt(r['ci_high'], digits)}]")
      else:
        vals.append(_fmt(r["value"], digits))
    lines.append(f"| {a or '-'} | {d or '-'} | {'-' if s is None else f'{s:g}'} | " + " | ".join(vals) + " |")
  return "\n".join(lines) + "\n"
