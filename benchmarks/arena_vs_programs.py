r"""The arena against the same cells run one by one with the existing programs, side by side in one sitting.

  python benchmarks/arena_vs_programs.py --workdir=/tmp/avp --out=benchmarks/results/arena_vs_programs_smoke_cpu.json
  python benchmarks/arena_vs_programs.py --print_only     # the commands, nothing run

--workdir (default /tmp/arena_vs_programs) is a scratch folder: it is emptied first.

Both sides take the arena preset's recipe (victim, shadows, surrogate, attack options), every program as a
subprocess with its flags set to it:
* the arena: `experiments/arena.py --preset=P` restricted by --defences / --extraction_attacks / --dp_epsilons;
* the programs, as a user would chain them, reusing what they can: `mia.py` once per membership setting, all
  membership attacks in one run, every run in one workdir (so the target and shadows are trained by the first run
  and loaded by the rest: the programs' own resume, the cheapest way to use them); `extract.py` once per
  (extraction attack, setting) against that target, its checkpoints the arena's budgets; `defend.py` once for the
  utility of every setting. DP-SGD victims: one `mia.py --dp_epsilon` run and `extract.py` runs against its target.
  The PRADA monitor cells have no program and are left out of the programs' side (a few seconds in the arena).

Prints (and writes to --out as it goes) one JSON object: each command's wall seconds, the sums, the ratio.
"""

import json
import os
import subprocess
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from experiments import arena  # noqa: E402  (its flags: --preset, --defences, --workdir, --data_dir, ...)

flags.DEFINE_string("out", None, "Also write the JSON here (rewritten after every command).")
flags.DEFINE_boolean("print_only", False, "Print the commands; run nothing.")
SUBSET = dict(defences="label,mad_argmax:0.5,memguard:1", extraction_attacks="knockoff_random,jbda", dp_epsilons="")
FLAGS = flags.FLAGS


def _train_flags(cfg) -> list:
  return [f"--num_epochs={cfg.num_epochs}", f"--batch_size={cfg.batch_size}", f"--learning_rate={cfg.learning_rate}",
          f"--momentum={cfg.momentum}", f"--{'' if cfg.nesterov else 'no'}nesterov",
          f"--weight_decay={cfg.weight_decay}", f"--schedule={cfg.schedule}",
          f"--milestones_epochs={','.join(str(m) for m in cfg.milestones_epochs)}",
          f"--lr_decay_factor={cfg.lr_decay_factor}", f"--{'' if cfg.augment else 'no'}augment",
          f"--warmup_epochs={cfg.warmup_epochs}"]


def commands(cfg, wd: str) -> dict:
  """{"arena": [cmd], "programs": [(label, cmd)]} for the arena preset `cfg` (an ArenaConfig)."""
  from mlpriv_jax import defences
  py = lambda name, *a: [sys.executable, os.path.join(REPO, "experiments", f"{name}.py"), *a]
  data = [f"--data_dir={FLAGS.data_dir}"] if FLAGS.data_dir else []
  mia_attacks = FLAGS.membership_attacks or ",".join(cfg.membership.attacks)
  settings = [("none", None)] + [s for name, strengths in arena._defences(FLAGS.defences)
                                 for s in defences.settings(name, strengths)]
  x, opts = cfg.extraction, cfg.membership.options
  hsj, noise = opts.label_boundary, opts.label_noise
  arena_cmd = py("arena", f"--preset={FLAGS.preset}", f"--workdir={wd}/arena", f"--defences={FLAGS.defences}",
                 f"--extraction_attacks={FLAGS.extraction_attacks}", f"--membership_attacks={mia_attacks}",
                 f"--dp_epsilons={FLAGS.dp_epsilons}", *data)
  mia_common = [f"--preset={FLAGS.preset}", f"--dataset={cfg.game.dataset}", f"--attack={mia_attacks}",
                f"--num_test={cfg.num_test}", f"--num_population={cfg.membership.num_population}",
                f"--label_examples={cfg.membership.label_examples or 0}",
                f"--num_bootstrap={cfg.membership.num_bootstrap}", "--num_defence_examples=200",
                f"--hsj_max_queries={hsj.max_queries or 0}", f"--hsj_initial_evals={hsj.initial_num_evals}",
                f"--noise_samples={noise.num_samples}", *data]
  game = lambda g: [f"--arch={g.arch}", f"--num_examples={g.num_examples}", f"--num_shadows={g.num_shadows}",
                    *_train_flags(g.train)]
  ext_common = [f"--preset={FLAGS.preset}", f"--surrogate_arch={x.surrogates[0]}", f"--query_set={x.query_set}",
                f"--budget={max(x.budgets)}", f"--checkpoints={','.join(str(b) for b in x.budgets)}",
                f"--num_test={cfg.num_test}", f"--cloudleak_rounds={x.options.cloudleak.num_rounds}",
                *_train_flags(x.surrogate), *data]
  progs = []
  for d, s in settings:
    if defences.MEMBERSHIP in defences.get(d).threats:
      progs.append((f"mia {defences.label(d, s)}", py("mia", f"--workdir={wd}/mia", *mia_common, *game(cfg.game),
                                                      f"--defence={d}", f"--epsilon={s or 0}")))
  for attack in (a for a in FLAGS.extraction_attacks.split(",") if a):
    for d, s in settings:
      if defences.EXTRACTION in defences.get(d).threats:
        progs.append((f"extract {attack} {defences.label(d, s)}",
                      py("extract", f"--workdir={wd}/ext_{attack}_{defences.label(d, s)}", f"--victim={wd}/mia",
                         f"--attack={attack}", f"--defence={d}", f"--epsilon={s or 0}", *ext_common)))
  by_name = {}
  for d, s in settings:   # one defend.py run for the parameter-free defences, one per defence with strengths
    by_name.setdefault(d if s is not None else "", []).append((d, s))
  for group in by_name.values():
    names, strengths = sorted({d for d, _ in group}), sorted({s for _, s in group if s is not None})
    progs.append((f"defend {','.join(names)}", py(
        "defend", f"--workdir={wd}/defend_{'_'.join(names)}", f"--victim={wd}/mia", f"--defences={','.join(names)}",
        *([f"--epsilons={','.join(f'{s:g}' for s in strengths)}"] if strengths else []),
        f"--num_test={cfg.num_test}", f"--num_guard={cfg.num_guard}", *data)))
  for e in (float(v) for v in FLAGS.dp_epsilons.split(",") if v.strip()):
    progs.append((f"mia dpsgd@{e:g}", py("mia", f"--workdir={wd}/mia_dp{e:g}", *mia_common,
                                         *game(cfg.dp_game or cfg.game), f"--dp_epsilon={e}")))
    for attack in (a for a in FLAGS.extraction_attacks.split(",") if a):
      progs.append((f"extract {attack} dpsgd@{e:g}", py("extract", f"--workdir={wd}/ext_{attack}_dp{e:g}",
                                                        f"--victim={wd}/mia_dp{e:g}", f"--attack={attack}",
                                                        *ext_common)))
  return dict(arena=arena_cmd, programs=progs)


def main(argv):
  del argv
  from mlpriv_jax.utils import write_json
  for name, value in SUBSET.items():   # the subset measured by default (the preset's own lists with the flags)
    if getattr(FLAGS, name) is None:
      setattr(FLAGS, name, value)
  wd = os.path.abspath(FLAGS.workdir or "/tmp/arena_vs_programs")
  from mlpriv_jax import presets
  cmds = commands(presets.get("arena", FLAGS.preset), wd)
  if FLAGS.print_only:
    print(" ".join(cmds["arena"]))
    for label, c in cmds["programs"]:
      print(f"# {label}\n{' '.join(c)}")
    return
  subprocess.run(["rm", "-rf", wd], check=True)
  os.makedirs(wd)
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
  out = dict(preset=FLAGS.preset, defences=FLAGS.defences, extraction_attacks=FLAGS.extraction_attacks,
             dp_epsilons=FLAGS.dp_epsilons, cpu_count=os.cpu_count(), programs=[])

  def timed(label, cmd):
    t0 = time.time()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode:
      raise SystemExit(f"error: {label} failed (exit {p.returncode}): {p.stderr.strip().splitlines()[-1:]}")
    print(f"{label}: {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    return time.time() - t0

  # The programs first: the embedded data's disk cache and the arena's are then equally warm for both sides.
  for label, c in cmds["programs"]:
    out["programs"].append(dict(what=label, seconds=timed(label, c)))
    out["programs_seconds"] = sum(r["seconds"] for r in out["programs"])
    if FLAGS.out:
      write_json(FLAGS.out, out)
  out["arena_seconds"] = timed("arena", cmds["arena"])
  cells = json.load(open(os.path.join(wd, "arena", "arena.json")))["cells"]
  out["arena_cells"] = len(cells)
  out["arena_monitor_cells"] = sum(c["family"] == "monitor" for c in cells)
  out["speedup_arena_vs_programs"] = out["programs_seconds"] / out["arena_seconds"]
  if FLAGS.out:
    write_json(FLAGS.out, out)
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  app.run(main)
