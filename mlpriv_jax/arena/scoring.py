"""How a defence is judged: by its worst attack, against what it costs (Carlini et al. 2022; Aerni et al. 2024).

For each defence setting (a defence at a strength, or a DP-SGD victim at an epsilon):

* utility: the accuracy of the released top-1 on the victim's test images, and its cost against `none`;
* the worst extraction attack: the highest surrogate fidelity at the arena's largest budget, over every attack and
  surrogate architecture, the adaptive ones included (those designed against output defences: Top-1, Smoothing,
  D-DAE's recovery); the naive worst (without them) stands beside it, to show what a careless audit concludes;
* the worst membership attack: the highest TPR at 0.1% FPR (LiRA's criterion), ties broken by AUC, over every
  attack, label-only ones included (the adaptive attack against a label-keeping defence) and the defence-aware
  score attacks (`<attack>_aware`: calibrated on shadows answered through the defence); the naive worst beside
  it. An FPR is only read where every attack scored enough non-members to make one false positive there (1,000 for
  0.1%); otherwise the arena's criterion is the TPR at 1% FPR, or the AUC (`membership_criterion`), so that an
  attack run on a few hundred candidates (the query-hungry label-only ones) is not ranked by a TPR it cannot
  resolve;
* the audited epsilon: the largest lower bound any membership attack's scores prove;
* dominance: a setting is dominated when another keeps at least its utility and leaks no more in every family the
  first was attacked in (strictly better somewhere);
* theft proven by: with the ownership family, the verifier that flags the most of the setting's surrogates at the
  largest budget, and that share (the detection rate at 5% false positives on the independent models).
"""

from typing import Dict, List, Optional, Sequence

from mlpriv_jax.arena.proof import NEGATIVE
from mlpriv_jax.games import ownership as O
from mlpriv_jax.games.extraction import split_surrogate

TPR_LOW = "tpr_at_0.001"
UTILITY = "accuracy"
PROOF_FPRS = (0.01, 0.05)   # the ownership family's false-positive rates on the negatives
PROOF_AT = "tpr_at_0.05"


def _by(cells: Sequence[dict], family: str) -> List[dict]:
  return [c for c in cells if c["family"] == family]


def largest_budget(cells: Sequence[dict]) -> Optional[int]:
  budgets = [c["budget"] for c in _by(cells, "extraction") if c["budget"] is not None]
  return max(budgets) if budgets else None


def worst_extraction(cells: Sequence[dict], budget: Optional[int] = None) -> Optional[dict]:
  """The extraction cell of highest fidelity at `budget` (default: the largest), or None."""
  budget = largest_budget(cells) if budget is None else budget
  found = [c for c in _by(cells, "extraction") if c["budget"] == budget and c["metrics"].get("fidelity") is not None]
  return max(found, key=lambda c: (c["metrics"]["fidelity"], c["metrics"].get("accuracy") or 0), default=None)


CRITERIA = ((TPR_LOW, 1000), ("tpr_at_0.01", 100), ("auc", 0))   # (metric, non-members needed to read it)


def membership_criterion(cells: Sequence[dict]) -> str:
  """The lowest-FPR metric every membership cell resolves: TPR at 0.1% FPR, at 1% FPR, else the AUC."""
  counts = [c["metrics"].get("num_nonmembers") for c in _by(cells, "membership")]
  least = min((n for n in counts if n is not None), default=0) if all(n is not None for n in counts) else 0
  return next(metric for metric, need in CRITERIA if least >= need)


def worst_membership(cells: Sequence[dict], criterion: str = TPR_LOW) -> Optional[dict]:
  """The membership cell of highest `criterion`, ties broken by AUC, or None."""
  found = [c for c in _by(cells, "membership") if c["metrics"].get(criterion) is not None]
  return max(found, key=lambda c: (c["metrics"][criterion], c["metrics"].get("auc") or 0), default=None)


def is_adaptive(cell: dict) -> bool:
  """Whether the cell's attack was designed against output defences: the extraction registry's `adaptive` ones,
  the defence-aware membership attacks."""
  from mlpriv_jax.attacks.extraction import REGISTRY
  if cell["family"] == "membership":
    return cell["attack"].endswith("_aware")
  spec = REGISTRY.get(cell["attack"]) if cell["family"] == "extraction" else None
  return bool(spec is not None and spec.adaptive)


def headline(cells: Sequence[dict]) -> List[dict]:
  """One row per defence setting, `none` first, then in the order of first appearance."""
  settings: Dict[str, List[dict]] = {}
  for c in cells:
    settings.setdefault(c["setting"], []).append(c)
  verdicts = ownership_verdicts(cells)
  order = sorted(settings, key=lambda s: (s != "none", list(settings).index(s)))
  budget = largest_budget(cells)
  criterion = membership_criterion(cells)
  base = _utility(settings.get("none", []))
  rows = []
  for s in order:
    mine = settings[s]
    first = mine[0]
    acc = _utility(mine)
    we, wm = worst_extraction(mine, budget), worst_membership(mine, criterion)
    naive = [c for c in mine if not is_adaptive(c)]
    wn, wmn = worst_extraction(naive, budget), worst_membership(naive, criterion)
    audits = [c["metrics"]["epsilon_lower_bound"] for c in _by(mine, "membership")
              if c["metrics"].get("epsilon_lower_bound") is not None]
    flags = [c["metrics"]["queries_to_flag"] for c in _by(mine, "monitor")
             if c["attack"] != "benign" and c["metrics"].get("queries_to_flag") is not None]
    proofs = verdicts.get(s, {}).get(budget, {})
    best = max((v for v in proofs if proofs[v][PROOF_AT] is not None), key=lambda v: proofs[v][PROOF_AT],
               default=None)
    rows.append(dict(
        proof=proofs[best][PROOF_AT] if best else None, proof_by=best,
        setting=s, defence=first["defence"], strength=first["strength"], accuracy=acc,
        utility_cost=None if acc is None or base is None else base - acc,
        budget=budget, worst_fidelity=we["metrics"]["fidelity"] if we else None,
        worst_fidelity_attack=f"{we['attack']} ({we['surrogate']})" if we else None,
        naive_worst_fidelity=wn["metrics"]["fidelity"] if wn else None,
        naive_worst_fidelity_attack=f"{wn['attack']} ({wn['surrogate']})" if wn else None,
        criterion=criterion, worst_tpr=wm["metrics"][criterion] if wm else None,
        worst_tpr_attack=wm["attack"] if wm else None,
        naive_worst_tpr=wmn["metrics"][criterion] if wmn else None,
        naive_worst_tpr_attack=wmn["attack"] if wmn else None,
        worst_auc=max((c["metrics"].get("auc") or 0 for c in _by(mine, "membership")), default=None),
        epsilon_lower_bound=max(audits) if audits else None,
        queries_to_flag=min(flags) if flags else None,
        families=sorted({c["family"] for c in mine if c["family"] in ("extraction", "membership")})))
  for r in rows:
    r["dominated_by"] = [o["setting"] for o in rows if o is not r and dominates(o, r)]
    r["dominated"] = bool(r["dominated_by"])
  return rows


def ownership_verdicts(cells: Sequence[dict]) -> Dict[str, Dict[int, dict]]:
  """{setting: {budget: {verifier: games.ownership.judge(...)}}}: each setting's surrogates at each budget (every
  attack and architecture) as positives, the independent models' cells as negatives."""
  own = _by(cells, "ownership")
  negatives = [O.unflatten(c["metrics"]) for c in own if c["attack"] == NEGATIVE]
  groups: Dict[str, Dict[int, list]] = {}
  for c in own:
    if c["attack"] != NEGATIVE:
      groups.setdefault(c["setting"], {}).setdefault(c["budget"], []).append(O.unflatten(c["metrics"]))
  audit = O.OwnershipAudit(fprs=PROOF_FPRS)
  return {s: {b: O.judge(pos, negatives, audit) for b, pos in sorted(by.items())} for s, by in groups.items()}


def ranking_changes(rows: Sequence[dict]) -> List[str]:
  """A line for each setting whose rank among the defences (safest first: the lowest worst leak, per family) moves
  once the adaptive attacks are counted."""
  lines = []
  for leak, what in (("worst_fidelity", "extraction: fidelity"), ("worst_tpr", "membership: ")):
    what = what + (rows[0]["criterion"] if what.endswith(": ") and rows else "")
    ranked = [r for r in rows if r[leak] is not None and r["naive_" + leak] is not None]
    naive = sorted(ranked, key=lambda r: r["naive_" + leak])
    adaptive = sorted(ranked, key=lambda r: r[leak])
    for r in ranked:
      before, after = naive.index(r) + 1, adaptive.index(r) + 1
      if before != after:
        lines.append(f"{r['setting']} ({what}): {_ordinal(before)} safest of {len(ranked)} against the naive "
                     f"attacks ({r['naive_' + leak + '_attack']} {r['naive_' + leak]:.3f}), {_ordinal(after)} "
                     f"against all ({r[leak + '_attack']} {r[leak]:.3f})")
  return lines


def _ordinal(n: int) -> str:
  return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _utility(cells: Sequence[dict]) -> Optional[float]:
  u = [c["metrics"].get(UTILITY) for c in _by(cells, "utility")]
  u = [v for v in u if v is not None]
  return sum(u) / len(u) if u else None


def dominates(a: dict, b: dict) -> bool:
  """Whether headline row `a` keeps at least `b`'s utility and leaks no more in each family `b` was attacked in,
  strictly better in one of them."""
  if a["accuracy"] is None or b["accuracy"] is None or a["accuracy"] < b["accuracy"]:
    return False
  strict = a["accuracy"] > b["accuracy"]
  for leak in ("worst_fidelity", "worst_tpr"):
    if b[leak] is None:
      continue
    if a[leak] is None or a[leak] > b[leak]:
      return False
    strict = strict or a[leak] < b[leak]
  return strict and any(b[leak] is not None for leak in ("worst_fidelity", "worst_tpr"))


def budget_to_fraction(cells: Sequence[dict], fraction: float = 0.9) -> Dict[tuple, Optional[int]]:
  """{(setting, attack, surrogate): the smallest budget at which the attack reaches `fraction` of its undefended
  fidelity at the largest budget} (None: never within the budgets run). A surrogate on the attacker's pretrained
  extractor (`<arch>+pretrained`) is held to its architecture's from-scratch figure where the arena has one: one
  yardstick per attack, so the column shows the queries the extractor saves."""
  ext = _by(cells, "extraction")
  top = largest_budget(cells)
  ext = [c for c in ext if c["metrics"].get("fidelity") is not None]
  ref = {(c["attack"], c["surrogate"]): c["metrics"]["fidelity"] for c in ext
         if c["setting"] == "none" and c["budget"] == top}
  out: Dict[tuple, Optional[int]] = {}
  for c in sorted(ext, key=lambda c: c["budget"]):
    k = (c["setting"], c["attack"], c["surrogate"])
    scratch = split_surrogate(c["surrogate"])[0]
    target = ref.get((c["attack"], scratch), ref.get((c["attack"], c["surrogate"])))
    if target is None:
      continue
    out.setdefault(k, None)
    if out[k] is None and c["metrics"]["fidelity"] >= fraction * target:
      out[k] = c["budget"]
  return out


def pivot(cells: Sequence[dict], family: str, metric: str, *, budget: Optional[int] = None):
  """(rows, columns, {(row, column): value}): attack (and surrogate) x defence setting for one metric."""
  found = [c for c in _by(cells, family) if budget is None or c["budget"] == budget]
  label = (lambda c: f"{c['attack']} ({c['surrogate']})") if family == "extraction" else (lambda c: c["attack"])
  rows = list(dict.fromkeys(label(c) for c in found))
  cols = list(dict.fromkeys(c["setting"] for c in sorted(found, key=lambda c: c["setting"] != "none")))
  return rows, cols, {(label(c), c["setting"]): c["metrics"].get(metric) for c in found}
