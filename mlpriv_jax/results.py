"""One results schema for every program and the arena: flat rows, written as JSON lines, rendered to markdown, CSV
and each program's results.json.

A row is one measured number:

  family, attack, defence, strength, budget, surrogate, metric, value, ci_low, ci_high, queries, seed, data_source

`family` is what was measured (`utility`, `extraction`, `membership`, `monitor`, `training`, or '' for a program's
own figures), `attack` and `defence` registry names ('' where none applies, e.g. a victim's own accuracy),
`strength` the defence's strength (None for parameter-free ones), `budget` the attacker's query budget and
`surrogate` its architecture (extraction), `value` the number (None: not measurable here, e.g. an attack with no
checkpoint within a budget), `ci_low`/`ci_high` a confidence interval (None when not computed), `queries` the
oracle queries the number cost, `data_source` where the data came from (`embedded`, a file, `tfds:<name>`).

results.jsonl and an arena's cells.csv hold the same columns, so `pandas.read_json(path, lines=True)` and
`pandas.read_csv(path)` read them alike; a program's results.json is `summary(rows)` beside its run's description.
"""

import csv
import io
import json
import math
import numbers
from typing import Iterable, Optional, Sequence

from mlpriv_jax.errors import UserError
from mlpriv_jax.utils import atomic_write, jsonable

FIELDS = ("family", "attack", "defence", "strength", "budget", "surrogate", "metric", "value", "ci_low", "ci_high",
          "queries", "seed", "data_source")


def _float(v) -> Optional[float]:
  return None if v is None else float(v)


def _number(v):
  """A count stays an int (a number of queries, of examples); any other number is a float."""
  if isinstance(v, numbers.Integral) and not isinstance(v, bool):
    return int(v)
  return _float(v)


def row(*, metric: str, value, family: str = "", attack: str = "", defence: str = "",
        strength: Optional[float] = None, budget: Optional[int] = None, surrogate: str = "",
        ci: Optional[Sequence[float]] = None, queries: Optional[float] = None, seed: Optional[int] = None,
        data_source: str = "") -> dict:
  """One row; `ci` is (low, high) or None."""
  if not metric:
    raise UserError("a results row needs a metric name")
  if value is not None and not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
    raise UserError(f"the value of {metric} must be a number or None, got {value!r}")
  lo, hi = (None, None) if ci is None else (_float(ci[0]), _float(ci[1]))
  return dict(family=family, attack=attack or "", defence=defence or "", strength=_float(strength),
              budget=None if budget is None else int(budget), surrogate=surrogate or "", metric=metric,
              value=_number(value), ci_low=lo, ci_high=hi, queries=None if queries is None else int(round(queries)),
              seed=seed, data_source=data_source)


def membership_rows(report: dict, **common) -> list:
  """The rows of one attack's `membership_report` (the one flattener): AUC, balanced accuracy, advantage and the
  TPR at each FPR (`tpr_at_<fpr>`), each with its bootstrap interval; the audited epsilon when the report holds an
  audit; how many candidates it scored. `common`: the fields every row shares (attack, defence, queries, ...)."""
  iv = report.get("interval", {})
  rows = [row(metric=m, value=report[m], ci=iv.get(m), **common) for m in ("auc", "balanced_accuracy", "advantage")]
  rows += [row(metric=f"tpr_at_{f}", value=v, ci=iv.get("tpr_at_fpr", {}).get(f), **common)
           for f, v in report["tpr_at_fpr"].items()]
  audit = report.get("audit") or {}
  if audit:
    rows += [row(metric="epsilon_lower_bound", value=audit["epsilon_lower_bound"], **common),
             row(metric="epsilon_lower_bound_clopper_pearson", value=audit["clopper_pearson"], **common)]
  rows += [row(metric=m, value=report[m], **common) for m in ("num_scored", "num_members", "num_nonmembers")
           if m in report]
  rows += [row(metric=m, value=report[m], **common) for m in ("queries_per_example", "calibrated_accuracy")
           if report.get(m) is not None]
  return rows


def metrics(rows: Iterable[dict]) -> dict:
  """{metric: value} of rows that share every other field (one cell, one attack)."""
  return {r["metric"]: r["value"] for r in rows}


def summary(rows: Iterable[dict], by: Sequence[str] = ("attack",)) -> dict:
  """The rows as nested dicts: one level per field of `by` (its values as keys), then {metric: value}, and
  {metric: [ci_low, ci_high]} under "intervals" where a row has one. What a program's results.json holds."""
  out: dict = {}
  for r in rows:
    node = out
    for f in by:
      k = r[f]
      node = node.setdefault("" if k is None else (f"{k:g}" if isinstance(k, float) else str(k)), {})
    node[r["metric"]] = r["value"]
    if r["ci_low"] is not None:
      node.setdefault("intervals", {})[r["metric"]] = [r["ci_low"], r["ci_high"]]
  return out


def check_rows(rows: Iterable[dict]) -> list:
  rows = list(rows)
  for r in rows:
    if set(r) != set(FIELDS):
      raise UserError(f"a results row must have exactly the fields {', '.join(FIELDS)}; got {sorted(r)}")
  return rows


def write_jsonl(path: str, rows: Iterable[dict]) -> None:
  """Writes the rows atomically, one JSON object per line."""
  rows = check_rows(rows)
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
