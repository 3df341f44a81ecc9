r"""Renders docs/results.md, README's table of expected results and BUILD_NOTES' headline table from what was measured.

  python benchmarks/render_results.py            # rewrites the three
  python benchmarks/render_results.py --check    # exit 1 if one is out of date (what tests/presets_test.py runs)

Sources: each preset's evidence block (`mlpriv_jax.presets`) and the JSON it names under
benchmarks/results/presets/, and every other JSON under benchmarks/results/ (the latest figures of each benchmark,
with its provenance). Nothing here is typed by hand, so the figures a reader sees are the ones measured.
"""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

RESULTS = os.path.join(REPO, "benchmarks", "results")
PAGE = os.path.join(REPO, "docs", "results.md")
README = os.path.join(REPO, "README.md")
NOTES = os.path.join(REPO, "BUILD_NOTES.md")
BEGIN, END = "<!-- results:begin (benchmarks/render_results.py) -->", "<!-- results:end -->"


def _load(name):
  with open(os.path.join(RESULTS, name)) as f:
    return json.load(f)


def _minutes(seconds) -> str:
  s = int(round(seconds))
  return f"{s} s" if s < 120 else f"{s // 60} min {s % 60:02d} s"


def preset_rows():
  """[(program, preset, record or None, evidence)] for every preset, in the programs' order."""
  from mlpriv_jax import presets
  out = []
  for program in presets.PROGRAMS:
    for name, fn in presets.presets(program).items():
      out.append((program, name, presets.measured(fn), presets.evidence(fn)))
  return out


def readme_table() -> str:
  """The expected results of the cheap presets (what a user runs first) and the test suite's wall, for README."""
  lines = ["| command | what it measured | wall | machine |", "|---|---|---|---|"]
  for program, name, rec, ev in preset_rows():
    if rec is None or name != "smoke":
      continue
    lines.append(f"| `{rec['command']}` | {rec['headline']} | {_minutes(rec['wall_seconds'])} | {rec['machine']} |")
  for f in ("ci_cpu.json",):
    if os.path.exists(os.path.join(RESULTS, f)):
      d = _load(f)
      lines.append(f"| `{d['provenance']['command']}` | {d['summary']} | {_minutes(d['wall_seconds'])} | "
                   f"{d['provenance']['machine']} |")
  return "\n".join(lines)


def notes_table() -> str:
  """BUILD_NOTES' headline table: every measured preset and the test suite, with machine, wall, headline, command
  and JSON."""
  lines = ["| preset | machine | wall | headline | command | JSON |", "|---|---|---|---|---|---|"]
  for program, name, rec, ev in preset_rows():
    if rec is not None:
      lines.append(f"| {program} {name} | {rec['machine']} | {_minutes(rec['wall_seconds'])} | {rec['headline']} | "
                   f"`{rec['command']}` | [{program}_{name}.json](benchmarks/results/presets/{program}_{name}.json) "
                   f"({rec['commit']}, {rec['date']}) |")
  if os.path.exists(os.path.join(RESULTS, "ci_cpu.json")):
    d, p = _load("ci_cpu.json"), _load("ci_cpu.json")["provenance"]
    lines.append(f"| the test suite | {p['machine']} | {_minutes(d['wall_seconds'])} | {d['summary']} | "
                 f"`{p['command']}` | [ci_cpu.json](benchmarks/results/ci_cpu.json) ({p['commit']}, {p['date']}) |")
  return "\n".join(lines)


def _benchmark_summaries():
  """(file, what, figures) of every benchmark JSON but the presets'."""
  out = []
  f = "cpu_2core.json"
  if os.path.exists(os.path.join(RESULTS, f)):
    d = _load(f)
    a, t = d["archs"], d.get("torch", {})
    out.append((f, "training throughput, one model, float32, batch 128",
                ", ".join(f"{k} {v['train']['images_per_sec']:.0f} img/s" for k, v in a.items())
                + "; JAX / PyTorch " + ", ".join(f"{k} {v['jax_over_torch']:.2f}x" for k, v in t.items())))
  f = "gpu_h200.json"
  if os.path.exists(os.path.join(RESULTS, f)):
    d = _load(f)["throughput_b512"]["archs"]
    out.append((f, "training throughput at batch 512, bfloat16 (MFU of 989 TFLOP/s)",
                ", ".join(f"{k} {v['train']['images_per_sec']:,.0f} img/s ({100 * v['train']['mfu']:.1f}%)"
                          for k, v in d.items())))
  for f, axis in (("shadow_training_cpu.json", "unrolled"), ("shadow_training_cpu_vmap.json", "vmapped")):
    if os.path.exists(os.path.join(RESULTS, f)):
      d = _load(f)
      out.append((f, f"`train_k` ({axis} model axis) against K sequential trainings, {d['arch']}",
                  ", ".join(f"K = {k}: {v['speedup']:.2f}x" for k, v in d["results"].items())))
  f = "defence_latency_cpu.json"
  if os.path.exists(os.path.join(RESULTS, f)):
    d = _load(f)
    b = d["batched_seconds_per_1000"]
    out.append((f, f"seconds per 1,000 queries, batches of {d['batch_size']}, {d['arch']}",
                f"none {b['none']:.2f}, mad_argmax {b['mad_argmax']:.2f}, memguard {b['memguard']:.2f}; MemGuard "
                f"batched {d['memguard_speedup_vs_reference_one_at_a_time']:.1f}x faster than the reference's one at a "
                f"time"))
  f = "extract_cost_cpu.json"
  if os.path.exists(os.path.join(RESULTS, f)):
    d = _load(f)
    out.append((f, "an extraction run's wall before and after its functions were compiled once",
                ", ".join(f"{k} {d['before'][k]['wall_seconds']:.1f} -> {d['after'][k]['wall_seconds']:.1f} s"
                          for k in ("knockoff", "cloudleak"))))
  f = "serve_load_cpu.json"
  if os.path.exists(os.path.join(RESULTS, f)):
    d = _load(f)["http"]
    out.append((f, "the served victim over HTTP against in process (examples/s, share of in process)",
                ", ".join(f"batch {v['batch']} x {v['clients']} clients {v['examples_per_sec']:,.0f} "
                          f"({v['fraction_of_in_process']:.2f})" for v in d.values())))
  f = "arena_vs_programs_smoke_cpu.json"
  if os.path.exists(os.path.join(RESULTS, f)):
    d = _load(f)
    out.append((f, "the smoke arena against the programs it replaces, run one after the other",
                f"programs {d['programs_seconds']:.0f} s, arena {d['arena_seconds']:.0f} s: "
                f"{d['speedup_arena_vs_programs']:.2f}x"))
  for f in sorted(os.listdir(RESULTS)):
    if f.endswith(".json") and f not in {o[0] for o in out}:
      d = _load(f)
      if "summary" in d:   # a benchmark that states its own figure (the CI's wall, a comparison)
        out.append((f, d.get("what", ""), d["summary"]))
  return out


def page() -> str:
  lines = ["# Results", "",
           "Generated by `python benchmarks/render_results.py` from the presets' evidence (`mlpriv_jax/presets/`) and "
           "`benchmarks/results/*.json`; a test keeps it current. Every figure is the latest measured, with where and "
           "when; `benchmarks/presets.py` re-measures a preset.", "",
           "## Presets", "",
           "| program | preset | wall | headline | machine | commit, date | command |", "|---|---|---|---|---|---|---|"]
  for program, name, rec, ev in preset_rows():
    if rec is None:
      lines.append(f"| {program} | {name} | - | unmeasured: {ev.get('unmeasured', '')} | - | - | - |")
    else:
      lines.append(f"| {program} | {name} | {_minutes(rec['wall_seconds'])} | {rec['headline']} | {rec['machine']} | "
                   f"{rec['commit'] or 'not recorded'}, {rec['date'] or 'not recorded'} | `{rec['command']}` |")
  lines += ["", "## Benchmarks", "", "| file | what | figures | machine | date | commit | command |",
            "|---|---|---|---|---|---|---|"]
  for f, what, figures in _benchmark_summaries():
    p = _load(f).get("provenance", {})
    lines.append(f"| [{f}](../benchmarks/results/{f}) | {what} | {figures} | {p.get('machine', 'not recorded')} | "
                 f"{p.get('date', 'not recorded')} | {p.get('commit', 'not recorded')} | "
                 f"`{p.get('command', '')}` |")
  return "\n".join(lines) + "\n"


def replaced(text: str, table: str, where: str) -> str:
  """`text` with its results block replaced by `table`."""
  if BEGIN not in text or END not in text:
    raise SystemExit(f"error: {where} has no {BEGIN} ... {END} block")
  head, rest = text.split(BEGIN, 1)
  return head + BEGIN + "\n" + table + "\n" + END + rest.split(END, 1)[1]


def main(argv):
  read = lambda p: open(p).read()
  want = {PAGE: page(), README: replaced(read(README), readme_table(), "README.md"),
          NOTES: replaced(read(NOTES), notes_table(), "BUILD_NOTES.md")}
  if "--check" in argv:
    stale = [os.path.relpath(p, REPO) for p, text in want.items()
             if not os.path.exists(p) or open(p).read() != text]
    if stale:
      print(f"out of date: {', '.join(stale)}; run python benchmarks/render_results.py", file=sys.stderr)
      return 1
    return 0
  for p, text in want.items():
    with open(p, "w") as f:
      f.write(text)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
