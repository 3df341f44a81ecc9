r"""Runs a program's preset as its evidence block says, and records what it measured.

  python benchmarks/presets.py --program=arena --preset=smoke        # runs it, writes its JSON, updates the preset
  python benchmarks/presets.py --program=mia --preset=cpu --data_dir=../shared/data
  python benchmarks/presets.py --refresh                             # every evidence block from its JSON

The command is the one in the preset's docstring (`mlpriv_jax.presets`), run in a scratch workdir (a victim the
command names under runs/ is trained first with train.py's smoke preset, untimed). It writes
`benchmarks/results/presets/<program>_<preset>.json` (machine, commit, date, wall, the headline and its figures, read
from the program's own results) and rewrites the preset's evidence block to match, so the docstring, README's table
and docs/results.md (`benchmarks/render_results.py`) all show what this run measured. Run it alone on the machine:
the wall time is the figure.
"""

import datetime
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks.provenance import commit, machine  # noqa: E402

flags.DEFINE_boolean("refresh", False, "Run nothing: rewrite every measured preset's evidence from its JSON.")
flags.DEFINE_string("program", None, "The program (train, defend, extract, mia, arena, survey_tables).")
flags.DEFINE_string("preset", None, "The preset (smoke, cpu, paper).")
flags.DEFINE_string("data_dir", None, "Passed on to the command (--data_dir) where it names one.")
flags.DEFINE_string("machine", None, "How to name this machine (default: read from /proc/cpuinfo).")
flags.DEFINE_string("scratch", None, "The scratch folder (default: a new temporary one, removed after).")
FLAGS = flags.FLAGS


def headline(program: str, workdir: str):
  """(headline text, figures) of a finished run, from the program's own results."""
  read = lambda name: json.load(open(os.path.join(workdir, name)))
  if program == "train":
    r = read("results.json")
    return (f"test accuracy {r['test_accuracy']:.4f}, {r['train_images_per_sec']:.0f} img/s",
            dict(test_accuracy=r["test_accuracy"], train_images_per_sec=r["train_images_per_sec"]))
  if program == "defend":
    r = read("results.json")
    flat = {f"{d}@{s}" if s else d: m for d, per in r["settings"].items() for s, m in per.items()}
    worst = min(flat, key=lambda k: flat[k]["accuracy"])
    return (f"undefended accuracy {flat['none']['accuracy']:.3f}; lowest {flat[worst]['accuracy']:.3f} ({worst}); "
            f"{sum(m['label_flip_rate'] == 0 for m in flat.values())} of {len(flat)} settings keep every label",
            {k: dict(accuracy=m["accuracy"], l1=m["l1"]) for k, m in flat.items()})
  if program == "extract":
    r = read("results.json")
    last = r["curve"][-1]
    return (f"fidelity {last['fidelity']:.3f}, accuracy {r['survey_cells']['accuracy']} at {last['queries']} queries "
            f"(victim {r['victim_accuracy']:.3f})", dict(victim_accuracy=r["victim_accuracy"], **last))
  if program == "mia":
    r = read("results.json")
    a, t = r["attacks"], r["target"]
    label = max((n for n in a if n.startswith(("gap", "label_"))), key=lambda n: a[n]["auc"], default=None)
    text = (f"target test acc {t['target_test_accuracy']:.3f}; lira_online AUC {a['lira_online']['auc']:.3f}, "
            f"TPR@0.1% {a['lira_online']['tpr_at_0.001']:.3f}")
    if label:
      text += f"; best label-only AUC {a[label]['auc']:.3f} ({label})"
    return text, dict(target_test_accuracy=t["target_test_accuracy"],
                      auc={n: v["auc"] for n, v in a.items()}, tpr_at_0001={n: v["tpr_at_0.001"] for n, v in a.items()})
  if program == "arena":
    r = read("arena.json")
    rows = {h["setting"]: h for h in r["headline"]}
    none = rows["none"]
    attacked = {s: h for s, h in rows.items() if h["worst_fidelity"] is not None}
    best = min(attacked, key=lambda s: attacked[s]["worst_fidelity"])
    criterion = {"auc": "AUC", "tpr_at_0.01": "TPR@1%", "tpr_at_0.001": "TPR@0.1%"}[none["criterion"]]
    proved = {s: h for s, h in rows.items() if h.get("proof_by") and (s == "none" or h["defence"] == "dawn")}
    text = (f"undefended: fidelity {none['worst_fidelity']:.3f} by {none['worst_fidelity_attack']} at "
            f"{none['budget']} queries, membership {criterion} {none['worst_tpr']:.3f} by "
            f"{none['worst_tpr_attack']}; lowest worst fidelity {attacked[best]['worst_fidelity']:.3f} behind {best} "
            f"(accuracy {attacked[best]['accuracy']:.3f})")
    if proved:
      text += "; theft proven (5% FPR): " + ", ".join(f"{s} {h['proof']:.2f} ({h['proof_by']})"
                                                       for s, h in proved.items())
    fields = ("accuracy", "worst_fidelity", "worst_fidelity_attack", "worst_tpr", "worst_tpr_attack", "dominated_by",
              "proof", "proof_by")
    return text, dict(cells=len(r["cells"]), settings={s: {k: h.get(k) for k in fields} for s, h in rows.items()})
  if program == "survey_tables":
    r = read("tables.json")["tables"]
    parts = []
    for t, e in r.items():
      ratios = "/".join(f"{m['fidelity']:.2f}" for m in e["rows"].values())
      parts.append(f"{t} victim {100 * e['victim']['accuracy']:.1f}%, fidelity {ratios}")
    return "; ".join(parts), {t: dict(victim=e["victim"]["accuracy"],
                                      rows={n: dict(accuracy=m["accuracy"], fidelity=m["fidelity"],
                                                    accuracy_ratio=m["accuracy_ratio"]) for n, m in e["rows"].items()})
                              for t, e in r.items()}
  raise ValueError(program)


def _wrapped(line: str, width: int = 118) -> str:
  """An evidence line, folded at spaces into continuation lines indented by six (`presets.evidence` joins them)."""
  out = []
  while len(line) > width and " " in line[:width].strip():
    cut = line.rfind(" ", 0, width)
    out.append(line[:cut])
    line = "      " + line[cut + 1:]
  return "\n".join(out + [line]) + "\n"


def rewrite_evidence(fn, record: dict, result_path: str) -> None:
  """The preset's evidence block made to state the record (command, machine, wall, headline, result), found in the
  file as it is now (not where the import found it: an earlier rewrite may have moved it)."""
  path = inspect.getsourcefile(fn)
  src = open(path).read()
  entries = dict(command=record["command"], machine=record["machine"], wall=f"{record['wall_seconds']:.0f} s",
                 headline=record["headline"], result=f"{result_path} ({record['commit']}, {record['date']})")
  block = "  Evidence:\n" + "".join(_wrapped(f"    {k}: {v}") for k, v in entries.items())
  m = re.search(rf"^def {fn.__name__}\(.*?\n(  Evidence:.*?)(?=  \"\"\")", src, flags=re.S | re.M)
  if not m:
    raise SystemExit(f"error: no evidence block in {fn.__module__}.{fn.__name__}")
  with open(path, "w") as f:
    f.write(src[:m.start(1)] + block + src[m.end(1):])


def main(argv):
  del argv
  from mlpriv_jax import presets
  if FLAGS.refresh:
    for program in presets.PROGRAMS:
      for name, fn in presets.presets(program).items():
        result = os.path.join("benchmarks", "results", "presets", f"{program}_{name}.json")
        if os.path.exists(os.path.join(REPO, result)):
          rewrite_evidence(fn, json.load(open(os.path.join(REPO, result))), result)
    return
  if not FLAGS.program or not FLAGS.preset:
    raise SystemExit("error: --program and --preset are required (or --refresh)")
  fn = presets.presets(FLAGS.program)[FLAGS.preset]
  ev = presets.evidence(fn)
  if "command" not in ev:
    raise SystemExit(f"error: {FLAGS.program} {FLAGS.preset} has no command in its evidence block")
  scratch = FLAGS.scratch or tempfile.mkdtemp(prefix="preset_")
  args = shlex.split(ev["command"])
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
  workdir = None
  for i, a in enumerate(args):
    for flag in ("--workdir=", "--victim="):
      if a.startswith(flag) and a[len(flag):].startswith("runs/"):
        args[i] = flag + os.path.join(scratch, a[len(flag):])
        if flag == "--workdir=":
          workdir = args[i][len(flag):]
        elif not os.path.exists(args[i][len(flag):]):   # the victim the command attacks: trained first, untimed
          subprocess.run([sys.executable, "experiments/train.py", "--preset=smoke", args[i]
                          .replace("--victim=", "--workdir=")], cwd=REPO, env=env, check=True, capture_output=True)
    if a.startswith("--data_dir=") and FLAGS.data_dir:
      args[i] = f"--data_dir={FLAGS.data_dir}"
  if args[0] == "python":
    args[0] = sys.executable
  t0 = time.time()
  p = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
  wall = time.time() - t0
  if p.returncode:
    raise SystemExit(f"error: the preset's command failed ({p.returncode}): {p.stderr.strip().splitlines()[-1:]}")
  text, figures = headline(FLAGS.program, workdir)
  record = dict(program=FLAGS.program, preset=FLAGS.preset, command=ev["command"], machine=FLAGS.machine or machine(),
                commit=commit(), date=datetime.date.today().isoformat(), wall_seconds=round(wall, 1), headline=text,
                figures=figures)
  result = os.path.join("benchmarks", "results", "presets", f"{FLAGS.program}_{FLAGS.preset}.json")
  os.makedirs(os.path.join(REPO, os.path.dirname(result)), exist_ok=True)
  with open(os.path.join(REPO, result), "w") as f:
    json.dump(record, f, indent=2, sort_keys=True)
    f.write("\n")
  rewrite_evidence(fn, record, result)
  if not FLAGS.scratch:
    shutil.rmtree(scratch, ignore_errors=True)
  print(json.dumps(record, indent=1))


if __name__ == "__main__":
  app.run(main)
