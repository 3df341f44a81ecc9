"""The arena's outputs, collated from its cells alone (`--collate_only` runs just this).

  arena.json     schema-versioned: config, provenance, the headline, every cell
  cells.csv      every cell's results rows (`mlpriv_jax.results`: one row per cell and metric, tidy, for pandas)
  results.jsonl  the same rows as JSON lines
  report.md      the headline table, attack x defence pivots, links to the plots
  report.html    the same with every plot embedded (one file, opens offline)
  *.png          privacy-utility trade-offs (extraction, membership), fidelity against budget per defence, log-log
                 ROC per defence with the attacks overlaid, attack x defence heatmaps
"""

import base64
import html
import io
import math
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from mlpriv_jax import results
from mlpriv_jax.arena import scoring
from mlpriv_jax.plots import _pyplot
from mlpriv_jax.utils import atomic_write, write_json

SCHEMA = "mlpriv_jax.arena/2"   # 2: a cell holds results rows (1: a metrics dict)


def _fmt(v, digits=3) -> str:
  if v is None:
    return "-"
  if isinstance(v, bool):
    return "yes" if v else "no"
  if isinstance(v, float):
    return "-" if math.isnan(v) else f"{v:.{digits}f}"
  return str(v)


def cell_rows(cells: Sequence[dict]) -> List[dict]:
  """Every cell's results rows, in the cells' order (cells.csv and results.jsonl)."""
  return [r for c in cells for r in c["rows"]]


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> List[List[str]]:
  return [list(header)] + [[_fmt(v) for v in r] for r in rows]


def _md(table: List[List[str]]) -> str:
  lines = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
  return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in table[1:]])


def _html_table(table: List[List[str]]) -> str:
  head = "".join(f"<th>{html.escape(h)}</th>" for h in table[0])
  body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in table[1:])
  return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CRITERION_NAMES = {scoring.TPR_LOW: "TPR @ 0.1% FPR", "tpr_at_0.01": "TPR @ 1% FPR", "auc": "AUC"}


def criterion_name(rows: Sequence[dict]) -> str:
  return CRITERION_NAMES[next((r["criterion"] for r in rows), scoring.TPR_LOW)]


def headline_table(rows: Sequence[dict]) -> List[List[str]]:
  """The headline: one row per setting. Its worst membership attack is ranked by the arena's criterion, and the
  worst AUC follows unless the criterion is the AUC itself."""
  budget = next((r["budget"] for r in rows if r["budget"] is not None), None)
  criterion = criterion_name(rows)
  auc = [] if criterion == "AUC" else ["worst AUC"]
  # the naive worst beside the worst, in a family where an adaptive attack was the worst somewhere
  naive = {leak: any(r["naive_" + leak + "_attack"] != r[leak + "_attack"] for r in rows)
           for leak in ("worst_fidelity", "worst_tpr")}
  side = lambda r, leak: [r["naive_" + leak], r["naive_" + leak + "_attack"]] if naive[leak] else []
  proved = any(r["proof_by"] for r in rows)
  return _table(["defence", "accuracy", "utility cost",
                 *(["naive worst fidelity", "(attack)"] if naive["worst_fidelity"] else []),
                 f"worst fidelity @ {budget} queries", "(attack)",
                 *([f"naive worst {criterion}", "(attack)"] if naive["worst_tpr"] else []),
                 f"worst {criterion}", "(attack)", *auc, "audited eps >=", "dominated by",
                 *(["theft proven (5% FPR)", "(by)"] if proved else [])],
                [[r["setting"], r["accuracy"], r["utility_cost"], *side(r, "worst_fidelity"),
                  r["worst_fidelity"], r["worst_fidelity_attack"], *side(r, "worst_tpr"),
                  r["worst_tpr"], r["worst_tpr_attack"], *([r["worst_auc"]] if auc else []),
                  r["epsilon_lower_bound"], ", ".join(r["dominated_by"]) or "-",
                  *([r["proof"], r["proof_by"]] if proved else [])] for r in rows])


def pivot_tables(cells: Sequence[dict]) -> List[tuple]:
  """(title, table) pairs: fidelity per budget, TPR at 0.1% FPR and AUC for membership."""
  out = []
  budgets = sorted({c["budget"] for c in cells if c["family"] == "extraction" and c["budget"] is not None})
  specs = [(f"Extraction fidelity at {b} queries", "extraction", "fidelity", b) for b in budgets]
  specs += [("Membership TPR at 0.1% FPR", "membership", scoring.TPR_LOW, None),
            ("Membership TPR at 1% FPR", "membership", "tpr_at_0.01", None),
            ("Membership AUC", "membership", "auc", None)]
  for title, family, metric, budget in specs:
    rows, cols, val = scoring.pivot(cells, family, metric, budget=budget)
    if rows:
      out.append((title, _table(["attack", *cols], [[r, *(val.get((r, c)) for c in cols)] for r in rows])))
  return out


ADAPTIVE_NOTE = ("Defences whose standing changes once the attacks designed against output defences are counted "
                 "(Top-1, Smoothing, D-DAE's recovery; the membership attacks calibrated on defended shadows, "
                 "<attack>_aware); the headline's worst case counts them:")

UTILITY_NOTE = ("What each setting costs benign users on the victim's test images: the released top-1's accuracy, "
                "the share of labels it changes, and the mean L1 and KL(original || released) distortion (zeros "
                "floored at the smallest normal float32: a one-hot release scores about 34 nats, not infinity). A DP-SGD "
                "victim is compared with its own undefended output.")


def utility_table(cells: Sequence[dict]) -> List[List[str]]:
  """One row per setting's utility cell: `none` first, then in the cells' order."""
  rows = [c for c in cells if c["family"] == "utility"]
  rows.sort(key=lambda c: c["setting"] != "none")
  m = lambda c, k: c["metrics"].get(k)
  return _table(["defence", "accuracy", "label flips", "mean L1", "mean KL", "s / 1,000 queries"],
                [[c["setting"], m(c, "accuracy"), m(c, "label_flip_rate"), m(c, "l1"), m(c, "kl"),
                  m(c, "seconds_per_1000_queries")] for c in rows])


OWNERSHIP_NOTE = ("After the theft: each verifier on every surrogate of a setting at a budget (every attack and "
                  "architecture), against independent models of the victim's recipe trained on disjoint data. "
                  "Detection: the share of surrogates whose p-value is below every negative's (at 1% and 5% FPR: "
                  "with few negatives, below the smallest); p < 0.05 read as a significance level beside it; DAWN "
                  "applies only where the thief was answered through DAWN.")


def ownership_table(cells: Sequence[dict]) -> List[List[str]]:
  """One row per (setting, budget, verifier): detection rates, the median p-value, the queries per suspect."""
  rows = []
  for s, by in scoring.ownership_verdicts(cells).items():
    for b, verdict in by.items():
      for v, r in verdict.items():
        rows.append([s, b, v, len(r["p_values"]), r.get("tpr_at_0.01"), r.get("tpr_at_0.05"), r.get("tpr_p<0.05"),
                     float(np.median(r["p_values"])), r.get("fpr_p<0.05"), r["queries"]])
  rows.sort(key=lambda r: (r[0] != "none", r[0], r[1], r[2]))
  return _table(["defence", "budget", "verifier", "surrogates", "detected @1% FPR", "detected @5% FPR",
                 "p < 0.05", "median p", "negatives p < 0.05", "queries / suspect"], rows)


MONITOR_NOTE = ("PRADA (Juuti et al. 2019) watching each attack's queries to the undefended victim, 50 at a time; "
                "a flag on the benign stream (test images) is a false flag.")
REACH_NOTE = ("The fewest queries (of the budgets run) at which each attack reaches 90% of its undefended fidelity "
              "at the largest budget; a surrogate on the attacker's pretrained extractor (`+pretrained`) is held to "
              "its architecture's from-scratch figure, so its column shows the queries the extractor saves.")


def monitor_table(cells: Sequence[dict]) -> List[List[str]]:
  """PRADA on each attack's query stream against the undefended victim, and on a benign stream (a flag there is a
  false flag)."""
  mon = sorted((c for c in cells if c["family"] == "monitor"), key=lambda c: (c["attack"] == "benign", c["attack"]))
  return _table(["stream", "flagged", "queries until flagged", "queries watched"],
                [[c["attack"], "yes" if c["metrics"].get("flagged") else "no", c["metrics"].get("queries_to_flag"),
                  c["metrics"].get("stream")] for c in mon])


# ---------------------------------------------------------------- plots

def _png(fig) -> bytes:
  plt = _pyplot()
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110)
  plt.close(fig)
  return buf.getvalue()


def _curves_by_defence(rows: Sequence[dict], leak: str):
  """{defence: [(accuracy, leak, setting)]} sorted by strength (parameter-free defences: one point)."""
  out: Dict[str, list] = {}
  for r in sorted(rows, key=lambda r: (r["strength"] is None, r["strength"] or 0)):
    if r["accuracy"] is not None and r[leak] is not None:
      out.setdefault(r["defence"], []).append((r["accuracy"], r[leak], r["setting"]))
  return out


def tradeoff_plot(rows: Sequence[dict], leak: str, ylabel: str, title: str) -> Optional[bytes]:
  curves = _curves_by_defence(rows, leak)
  if not curves:
    return None
  fig, ax = _pyplot().subplots(figsize=(6.4, 4.6))
  for d, pts in curves.items():
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-" if len(pts) > 1 else "o", label=d, ms=5)
    for x, y, s in pts:
      if s != d:
        ax.annotate(s.split("@")[1], (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
  ax.set_xlabel("utility: accuracy of the released top-1")
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
  return _png(fig)


def _grid(n: int):
  cols = min(4, n)
  rows = math.ceil(n / cols)
  fig, axes = _pyplot().subplots(rows, cols, figsize=(3.3 * cols, 2.9 * rows + 0.9), squeeze=False)
  for ax in axes.ravel()[n:]:
    ax.axis("off")
  return fig, axes.ravel()


def _shared_legend(fig, colour: dict) -> None:
  """One legend for every panel, below them (a legend per panel hides the curves)."""
  from matplotlib.lines import Line2D
  handles = [Line2D([], [], color=c, lw=2) for c in colour.values()]
  fig.legend(handles, list(colour), loc="lower center", ncol=min(5, len(colour)), fontsize=8, frameon=False)


def _png_with_legend(fig, rows: int) -> bytes:
  plt = _pyplot()
  fig.tight_layout(rect=(0, 0.9 / (2.9 * rows + 0.9) * 1.15, 1, 1))
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110)
  plt.close(fig)
  return buf.getvalue()


def _colours(names) -> dict:
  """One colour per name, the same in every panel."""
  import matplotlib
  names = sorted(set(names))
  cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
  return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def fidelity_budget_plot(cells: Sequence[dict]) -> Optional[bytes]:
  ext = [c for c in cells if c["family"] == "extraction"]
  settings = list(dict.fromkeys(c["setting"] for c in sorted(ext, key=lambda c: c["setting"] != "none")))
  if not settings:
    return None
  label = lambda c: f"{c['attack']} ({c['surrogate']})"
  colour = _colours(label(c) for c in ext)
  fig, axes = _grid(len(settings))
  for ax, s in zip(axes, settings):
    lines: Dict[str, list] = {}
    for c in sorted((c for c in ext if c["setting"] == s and c["metrics"].get("fidelity") is not None),
                    key=lambda c: c["budget"]):
      lines.setdefault(label(c), []).append((c["budget"], c["metrics"]["fidelity"]))
    for name, pts in lines.items():
      ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3, label=name, color=colour[name])
    budgets = sorted({c["budget"] for c in ext})
    ax.set(xscale="log", ylim=(0, 1), title=s, xlabel="queries", ylabel="fidelity")
    ax.set_xticks(budgets, [str(b) for b in budgets], fontsize=7)
    ax.minorticks_off()
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
  _shared_legend(fig, colour)
  return _png_with_legend(fig, math.ceil(len(settings) / min(4, len(settings))))


def roc_plot(cells: Sequence[dict]) -> Optional[bytes]:
  mem = [c for c in cells if c["family"] == "membership" and c["curves"].get("roc")]
  settings = list(dict.fromkeys(c["setting"] for c in sorted(mem, key=lambda c: c["setting"] != "none")))
  if not settings:
    return None
  lo = 1e-3
  colour = _colours(c["attack"] for c in mem)
  fig, axes = _grid(len(settings))
  for ax, s in zip(axes, settings):
    for c in (c for c in mem if c["setting"] == s):
      fpr, tpr = c["curves"]["roc"]
      ax.plot([max(v, lo) for v in fpr], [max(v, lo) for v in tpr], lw=1, label=c["attack"],
              color=colour[c["attack"]])
    ax.plot([lo, 1], [lo, 1], "k--", lw=0.6)
    ax.set(xscale="log", yscale="log", xlim=(lo, 1), ylim=(lo, 1), title=s, xlabel="FPR", ylabel="TPR")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
  _shared_legend(fig, colour)
  return _png_with_legend(fig, math.ceil(len(settings) / min(4, len(settings))))


def heatmap_plot(cells: Sequence[dict], family: str, metric: str, title: str,
                 budget: Optional[int] = None) -> Optional[bytes]:
  rows, cols, val = scoring.pivot(cells, family, metric, budget=budget)
  if not rows:
    return None
  import numpy as np
  m = np.array([[np.nan if val.get((r, c)) is None else val[(r, c)] for c in cols] for r in rows], float)
  label = 0.055 * max(len(r) for r in rows)   # inches for the longest row label at 7 pt
  fig, ax = _pyplot().subplots(figsize=(1.0 + label + 0.75 * len(cols), 1.2 + 0.38 * len(rows)))
  vmin = 0.5 if metric == "auc" else 0.0   # an AUC below 0.5 is no attack
  vmax = max(vmin + 1e-9, np.nanmax(m)) if np.isfinite(m).any() else 1
  im = ax.imshow(m, cmap="magma_r", vmin=vmin, vmax=vmax, aspect="auto")
  ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=7)
  ax.set_yticks(range(len(rows)), rows, fontsize=7)
  for i in range(len(rows)):
    for j in range(len(cols)):
      if np.isfinite(m[i, j]):
        ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                color="white" if (m[i, j] - vmin) > 0.55 * (vmax - vmin) else "black")
  ax.set_title(title, fontsize=9)
  fig.colorbar(im, ax=ax, fraction=0.04)
  return _png(fig)


def plots(cells: Sequence[dict], rows: Sequence[dict]) -> Dict[str, tuple]:
  """{file name: (caption, PNG bytes)} of every plot that has data."""
  budget = scoring.largest_budget(cells)
  made = {
      "tradeoff_extraction.png": ("Privacy-utility trade-off, extraction: worst fidelity at the largest budget",
                                  tradeoff_plot(rows, "worst_fidelity", f"worst surrogate fidelity @ {budget}",
                                                "extraction: each defence over its strengths")),
      "tradeoff_membership.png": (f"Privacy-utility trade-off, membership: worst {criterion_name(rows)}",
                                  tradeoff_plot(rows, "worst_tpr", f"worst {criterion_name(rows)}",
                                                "membership inference: each defence over its strengths")),
      "fidelity_vs_budget.png": ("Fidelity against budget, per defence setting", fidelity_budget_plot(cells)),
      "roc_loglog.png": ("Log-log ROC per defence setting, attacks overlaid", roc_plot(cells)),
      "heatmap_extraction.png": (f"Fidelity at {budget} queries, attack x defence",
                                 heatmap_plot(cells, "extraction", "fidelity", f"fidelity @ {budget}", budget)),
      "heatmap_membership.png": (f"{criterion_name(rows)}, attack x defence",
                                 heatmap_plot(cells, "membership", next((r["criterion"] for r in rows),
                                                                        scoring.TPR_LOW), criterion_name(rows))),
  }
  return {k: v for k, v in made.items() if v[1] is not None}


# ---------------------------------------------------------------- collation

def collate(workdir: str, cells: Sequence[dict], *, config: dict, provenance: dict,
            skipped: Sequence[dict] = ()) -> dict:
  """Writes every output from `cells`; returns arena.json's content."""
  rows = scoring.headline(cells)
  reach = scoring.budget_to_fraction(cells)
  doc = dict(schema=SCHEMA, config=config, provenance=provenance, headline=rows,
             budget_to_90=[dict(setting=s, attack=a, surrogate=g, budget=b) for (s, a, g), b in reach.items()],
             skipped=list(skipped), cells=[{k: v for k, v in c.items() if k != "metrics"} for c in cells])
  write_json(os.path.join(workdir, "arena.json"), doc)
  table = cell_rows(cells)
  atomic_write(os.path.join(workdir, "cells.csv"), lambda f: f.write(results.to_csv(table)), mode="w")
  results.write_jsonl(os.path.join(workdir, "results.jsonl"), table)
  figs = plots(cells, rows)
  for name, (_, png) in figs.items():
    atomic_write(os.path.join(workdir, name), lambda f, png=png: f.write(png))
  head, pivots = headline_table(rows), pivot_tables(cells)
  reach_table = _table(["defence", "attack (surrogate)", "budget to 90% of undefended fidelity"],
                       [[s, f"{a} ({g})", b] for (s, a, g), b in reach.items()])
  title = f"mlpriv_jax arena: {config.get('victim', '')}"
  intro = (f"{len(cells)} cells; preset {config.get('preset')}; {provenance.get('device', '')}; "
           f"computed in {provenance.get('compute_seconds', provenance.get('wall_seconds', 0)):.0f} s; git "
           f"{provenance.get('git_commit', '?')}. Fidelity is to the victim behind each setting (a DP-SGD victim is "
           f"another model). Worst case per defence: highest fidelity at the largest budget, highest "
           f"{criterion_name(rows)} (ties by AUC; the lowest FPR every attack's candidates resolve); dominated: "
           f"another defence keeps at least its accuracy and leaks no more.")
  skipped_lines = [f"- {s['what']}: {s['why']}" for s in skipped]
  utility = utility_table(cells)
  changes = scoring.ranking_changes(rows)
  md = [f"# {title}", "", intro, "", "## Headline", "", _md(head), ""]
  if changes:
    md += [ADAPTIVE_NOTE, ""] + [f"- {line}" for line in changes] + [""]
  if len(utility) > 1:
    md += ["## Utility", "", UTILITY_NOTE, "", _md(utility), ""]
  for t, table in pivots:
    md += [f"## {t}", "", _md(table), ""]
  if len(reach_table) > 1:
    md += ["## Budget to 90% of the undefended fidelity", "", REACH_NOTE, "", _md(reach_table), ""]
  monitor = monitor_table(cells)
  if len(monitor) > 1:
    md += ["## PRADA monitor", "", MONITOR_NOTE, "", _md(monitor), ""]
  proofs = ownership_table(cells)
  if len(proofs) > 1:
    md += ["## Ownership: theft proven after the fact", "", OWNERSHIP_NOTE, "", _md(proofs), ""]
  if skipped_lines:
    md += ["## Skipped", "", *skipped_lines, ""]
  md += ["## Plots", ""] + [f"![{cap}]({name})" for name, (cap, _) in figs.items()] + [""]
  atomic_write(os.path.join(workdir, "report.md"), lambda f: f.write("\n".join(md)), mode="w")
  body = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(intro)}</p>", "<h2>Headline</h2>", _html_table(head)]
  if changes:
    body += [f"<p>{html.escape(ADAPTIVE_NOTE)}</p><ul>"] + [f"<li>{html.escape(line)}</li>" for line in changes] \
        + ["</ul>"]
  if len(utility) > 1:
    body += ["<h2>Utility</h2>", f"<p>{html.escape(UTILITY_NOTE)}</p>", _html_table(utility)]
  for t, table in pivots:
    body += [f"<h2>{html.escape(t)}</h2>", _html_table(table)]
  if len(reach_table) > 1:
    body += ["<h2>Budget to 90% of the undefended fidelity</h2>", f"<p>{html.escape(REACH_NOTE)}</p>",
             _html_table(reach_table)]
  if len(monitor) > 1:
    body += ["<h2>PRADA monitor</h2>", f"<p>{html.escape(MONITOR_NOTE)}</p>", _html_table(monitor)]
  if len(proofs) > 1:
    body += ["<h2>Ownership: theft proven after the fact</h2>", f"<p>{html.escape(OWNERSHIP_NOTE)}</p>",
             _html_table(proofs)]
  if skipped:
    body += ["<h2>Skipped</h2><ul>"] + [f"<li>{html.escape(s['what'])}: {html.escape(s['why'])}</li>"
                                        for s in skipped] + ["</ul>"]
  body += ["<h2>Plots</h2>"] + [
      f'<figure><img alt="{html.escape(cap)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
      f"<figcaption>{html.escape(cap)}</figcaption></figure>" for cap, png in figs.values()]
  page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title><style>"
          "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
          "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;"
          "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
          "img{max-width:100%;height:auto;border:1px solid #eee}figure{margin:1.5em 0}"
          "figcaption{font-size:13px;color:#555}</style></head><body>" + "\n".join(body) + "</body></html>")
  atomic_write(os.path.join(workdir, "report.html"), lambda f: f.write(page), mode="w")
  return doc
