r"""The survey's Tables 1-2: KnockoffNets (random) surrogates of a WRN-16 and a VGG-16 victim.

  python experiments/survey_tables.py --preset=smoke --workdir=runs/tables        # embedded data, CPU
  python experiments/survey_tables.py --preset=cpu --data_dir=../shared/data --workdir=runs/tables_cpu
  python experiments/survey_tables.py --preset=paper --workdir=runs/tables_paper  # GPU

For each table: train the victim (or reuse its checkpoint in the workdir), query
it once with B random images of the pool (one transfer set per victim), train a
surrogate of each architecture (wres16, wres22, res32, res18, vgg16) on the
answers, and report `accuracy (ratio)` and `fidelity (ratio)` beside the
survey's figures. Writes tables.md and tables.json; a rerun reuses finished
victims and rows.

Presets (architectures map the survey's names to what the preset trains):
  smoke: shapes10 victims (4,000 images, 4 epochs), patterns20 pool, B = 1,000, 3 surrogate epochs;
         narrow stand-ins wrn16_1, wrn22_1, resnet8, resnet18_narrow, vgg16_narrow. ~4 min on 2 CPU
         cores: a check of the whole pipeline, not a result (BUILD_NOTES.md).
  cpu:   CIFAR-10 victims (10,000 images of cifar10_jpeg, 8 epochs), CIFAR-100 pool, B = 10,000,
         6 surrogate epochs; stand-ins as smoke with resnet20 for res32.
  paper: full CIFAR-10 victims (WRN recipe, 200 epochs), B = 50,000 CIFAR-100 queries,
         the real architectures; surrogates with knockoffnets' defaults for 100 epochs.
"""

import os
import sys
import time

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import common  # noqa: E402

SURVEY_NAMES = ("wres16", "wres22", "res32", "res18", "vgg16")
NARROW = {"wres16": "wrn16_1", "wres22": "wrn22_1", "res32": "resnet8", "res18": "resnet18_narrow",
          "vgg16": "vgg16_narrow"}
PRESETS = {
    "smoke": dict(victim_dataset="shapes10", num_train=4000, query_set="patterns20", budget=1000, archs=NARROW,
                  victim=dict(num_epochs=4, batch_size=64, learning_rate=0.05, momentum=0.9, nesterov=True,
                              weight_decay=5e-4, schedule="cosine", augment=True, warmup_epochs=1),
                  surrogate=dict(num_epochs=3, batch_size=32, learning_rate=0.05, momentum=0.9, nesterov=False,
                                 weight_decay=5e-4, schedule="cosine", augment=False, warmup_epochs=0.5),
                  num_test=500),
    "cpu": dict(victim_dataset="cifar10_jpeg", num_train=10000, query_set="cifar100", budget=10000,
                archs=dict(NARROW, res32="resnet20"),
                victim=dict(num_epochs=8, batch_size=128, learning_rate=0.1, momentum=0.9, nesterov=True,
                            weight_decay=5e-4, schedule="cosine", augment=True, warmup_epochs=1),
                surrogate=dict(num_epochs=6, batch_size=128, learning_rate=0.05, momentum=0.9, nesterov=False,
                               weight_decay=5e-4, schedule="cosine", augment=True, warmup_epochs=1), num_test=2000),
    "paper": dict(victim_dataset="cifar10", num_train=0, query_set="cifar100", budget=50000,
                  archs={n: n for n in SURVEY_NAMES},
                  victim=dict(num_epochs=200, batch_size=128, learning_rate=0.1, momentum=0.9, nesterov=True,
                              weight_decay=5e-4, schedule="multistep", milestones_epochs=(60, 120, 160),
                              lr_decay_factor=0.2, augment=True),
                  surrogate=dict(num_epochs=100, batch_size=64, learning_rate=0.01, momentum=0.5, nesterov=False,
                                 weight_decay=0.0, schedule="multistep", milestones_epochs=(60,), lr_decay_factor=0.1,
                                 augment=False), num_test=0),
}
TABLES = (("table1", "wres16"), ("table2", "vgg16"))

flags.DEFINE_enum("preset", "smoke", list(PRESETS), "Scale of the run.")
flags.DEFINE_string("workdir", None, "Output folder; a rerun reuses finished victims and rows.")
flags.DEFINE_string("data_dir", None, "Folder with <dataset>.npz files (else $MLPRIV_DATA_DIR, else TFDS).")
flags.DEFINE_list("surrogates", list(SURVEY_NAMES), "Rows: the survey's surrogate names.")
flags.DEFINE_list("tables", ["table1", "table2"], "Which tables to produce.")
flags.DEFINE_boolean("res18_imagenet_stem", False, "Also a res18 row with the ImageNet stem (algorithms.md s.12).")
flags.DEFINE_integer("num_train", None, "Override: victim training images (0: all).")
flags.DEFINE_integer("budget", None, "Override: queries B per victim.")
flags.DEFINE_integer("victim_epochs", None, "Override: victim epochs.")
flags.DEFINE_integer("surrogate_epochs", None, "Override: surrogate epochs.")
flags.DEFINE_integer("seed", 0, "Root seed.")
FLAGS = flags.FLAGS


def _survey(row, what):
  return f"{row[what]:.2f} ({row[what + '_ratio']:.2f}x)" if what in row else "-"


def main(argv):
  del argv
  import jax
  import numpy as np

  from mlpriv_jax import data, models, train
  from mlpriv_jax.attacks import extraction as E
  from mlpriv_jax.utils import atomic_write, write_json
  from mlpriv_jax.victim import Victim

  t_start = time.time()
  if not FLAGS.workdir:
    raise ValueError("--workdir is required")
  unknown = set(FLAGS.surrogates) - set(SURVEY_NAMES)
  if unknown or set(FLAGS.tables) - {"table1", "table2"}:
    raise ValueError(f"unknown rows {sorted(unknown)} or tables {FLAGS.tables}; rows: {', '.join(SURVEY_NAMES)}; "
                     f"tables: table1, table2")
  p = dict(PRESETS[FLAGS.preset])
  overrides = {k: v for k, v in (("num_train", FLAGS.num_train), ("budget", FLAGS.budget),
                                 ("victim_epochs", FLAGS.victim_epochs),
                                 ("surrogate_epochs", FLAGS.surrogate_epochs)) if v is not None}
  for k, v in overrides.items():
    if v < (0 if k == "num_train" else 1):
      raise ValueError(f"--{k} must be >= {0 if k == 'num_train' else 1}, got {v}")
  p.update({k: overrides[k] for k in ("num_train", "budget") if k in overrides})
  for role in ("victim", "surrogate"):
    if f"{role}_epochs" in overrides:
      epochs = overrides[f"{role}_epochs"]
      p[role] = dict(p[role], num_epochs=epochs, warmup_epochs=min(p[role].get("warmup_epochs", 0), epochs / 4))
  archs = dict(p["archs"])
  rows = list(FLAGS.surrogates)
  if FLAGS.res18_imagenet_stem:
    archs["res18_imagenet"] = "resnet18_imagenet" if FLAGS.preset == "paper" else "resnet18_imagenet_narrow"
    rows.append("res18_imagenet")
  survey = common.load_json(os.path.join(os.path.dirname(os.path.abspath(__file__)), "survey_tables.json"))

  ds = data.load_dataset(p["victim_dataset"], FLAGS.data_dir, seed=FLAGS.seed)
  pool = data.load_dataset(p["query_set"], FLAGS.data_dir, seed=FLAGS.seed + 1)
  if p["num_train"] > len(ds.x_train):
    raise ValueError(f"--num_train {p['num_train']} is more than {ds.name}'s {len(ds.x_train)} training images")
  x_train, y_train = (ds.x_train[: p["num_train"]], ds.y_train[: p["num_train"]]) if p["num_train"] else \
      (ds.x_train, ds.y_train)
  xt, yt = (ds.x_test[: p["num_test"]], ds.y_test[: p["num_test"]]) if p["num_test"] else (ds.x_test, ds.y_test)
  mean, std = data.channel_stats(x_train)
  pool_mean, pool_std = data.channel_stats(pool.x_train)
  key = jax.random.key(FLAGS.seed)
  os.makedirs(FLAGS.workdir, exist_ok=True)
  out_path = os.path.join(FLAGS.workdir, "tables.json")
  out = common.load_json(out_path) or {"preset": FLAGS.preset, "overrides": overrides, "tables": {}}
  if out.get("preset") != FLAGS.preset or out.get("overrides", {}) != overrides:
    raise ValueError(f"{FLAGS.workdir} holds tables of preset {out.get('preset')!r} with overrides "
                     f"{out.get('overrides', {})}; use another --workdir")

  for t, (table, victim_name) in enumerate(TABLES):
    if table not in FLAGS.tables:
      continue
    entry = out["tables"].setdefault(table, {"rows": {}})
    victim_model = models.get_model(archs[victim_name], ds.num_classes, mean=mean, std=std)
    print(f"{table}: victim {victim_name} = {victim_model.name} on {ds.name} ({len(x_train)} images)", flush=True)
    vres = train.train(victim_model, train.TrainConfig(**p["victim"]), x_train, y_train, jax.random.fold_in(key, t),
                       ckpt_path=os.path.join(FLAGS.workdir, f"victim_{victim_name}.msgpack"),
                       meta=dict(dataset=ds.name), on_epoch_end=lambda r: print(
                           f"  victim epoch {r['epoch']} loss {r['train_loss']:.3f}", flush=True))
    variables = train.variables_of(vres.state)
    victim_top1 = np.asarray(train.predict(victim_model, variables, xt).argmax(-1))
    victim_acc = float((victim_top1 == yt).mean())
    entry["victim"] = dict(arch=victim_name, model=victim_model.name, accuracy=victim_acc, fidelity=1.0)
    victim = Victim(victim_model, variables, budget=p["budget"], key=jax.random.fold_in(key, 10 + t),
                    input_shape=ds.image_shape)
    idx, answers = E.knockoff_random(victim, pool.x_train, p["budget"], jax.random.fold_in(key, 20 + t))
    for r, name in enumerate(rows):
      if name in entry["rows"]:
        continue
      sur = models.get_model(archs[name], ds.num_classes, mean=pool_mean, std=pool_std)
      t0 = time.time()
      state = E.train_surrogate(sur, train.TrainConfig(**p["surrogate"]), pool.x_train[idx], answers,
                                jax.random.fold_in(key, 100 * (t + 1) + r)).state
      m = E.extraction_metrics(train.predict(sur, train.variables_of(state), xt), victim_top1, yt, victim_acc)
      m.update(model=sur.name, seconds=time.time() - t0)
      entry["rows"][name] = m
      write_json(out_path, out)
      print(f"  {name:14s} {sur.name:16s} acc {E.survey_cell(m['accuracy'], m['accuracy_ratio'])} "
            f"fid {E.survey_cell(m['fidelity'], m['fidelity_ratio'])}", flush=True)
    write_json(out_path, out)

  lines = [f"# Survey Tables 1-2, preset `{FLAGS.preset}`", "",
           f"KnockoffNets (random), B = {p['budget']} queries of {pool.name}; victim data {ds.name}. "
           f"Ours beside the survey's (CIFAR-10 victim, CIFAR-100 queries).", ""]
  for table, _ in TABLES:
    if table not in out["tables"]:
      continue
    e, s = out["tables"][table], (survey or {}).get(table, {})
    lines += [f"## {table}", "", "| arch (ours) | accuracy | fidelity | survey accuracy | survey fidelity |",
              "|---|---|---|---|---|",
              f"| victim {e['victim']['arch']} ({e['victim']['model']}) | {100 * e['victim']['accuracy']:.2f} | 100.00 | "
              f"{s.get('victim', {}).get('accuracy', '-')} | 100.00 |"]
    ref = {a["arch"]: a for a in s.get("attackers", [])}
    for name, m in e["rows"].items():
      sv = ref.get(name, {})
      lines.append(f"| {name} ({m['model']}) | {E.survey_cell(m['accuracy'], m['accuracy_ratio'])} | "
                   f"{E.survey_cell(m['fidelity'], m['fidelity_ratio'])} | "
                   f"{_survey(sv, 'accuracy')} | {_survey(sv, 'fidelity')} |")
    lines.append("")
  text = "\n".join(lines)
  atomic_write(os.path.join(FLAGS.workdir, "tables.md"), lambda f: f.write(text), mode="w")
  print(text)
  print(f"wall {time.time() - t_start:.0f} s; tables in {FLAGS.workdir}", flush=True)


if __name__ == "__main__":
  common.run(main)
