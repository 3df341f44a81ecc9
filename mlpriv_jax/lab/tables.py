"""The survey's Tables 1-2: KnockoffNets (random) surrogates of a WRN-16 and a VGG-16 victim
(Lee, Han, Cho, Kim & Paek, "A Study on Protecting Privacy of Machine Learning Models"; what
experiments/survey_tables.py runs).

For each table: train the victim (or resume its checkpoint), write it as an artifact `victim_<name>/`, query it
once with B random images of the pool (one transfer set per victim), train a surrogate of each architecture on
the answers, and report `accuracy (ratio)` and `fidelity (ratio)` beside the survey's figures. Writes tables.md,
tables.json and results.jsonl; a rerun reuses finished victims and rows.
"""

import dataclasses
import json
import os
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import jax
import numpy as np

from mlpriv_jax import config as configs
from mlpriv_jax import data, models, results, streams, train
from mlpriv_jax.attacks import extraction as E
from mlpriv_jax.errors import UserError, integer, number
from mlpriv_jax import workdir as wd
from mlpriv_jax.lab.training import load_train_split, model_meta
from mlpriv_jax.oracle import Victim
from mlpriv_jax.utils import write_json

SURVEY_NAMES = ("wres16", "wres22", "res32", "res18", "vgg16")
TABLES = (("table1", "wres16"), ("table2", "vgg16"))
_SURVEY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "survey_tables.json")


def survey_figures() -> dict:
  """The survey's own Tables 1-2 (percent, ratios to the victim)."""
  with open(_SURVEY) as f:
    return json.load(f)


def _cell(row, what):
  return f"{row[what]:.2f} ({row[what + '_ratio']:.2f}x)" if what in row else "-"


def render(out: dict, *, preset: str, budget: int, pool_name: str, data_name: str) -> str:
  """tables.md: ours beside the survey's, one table per victim."""
  survey = survey_figures()
  lines = [f"# Survey Tables 1-2, preset `{preset}`", "",
           f"KnockoffNets (random), B = {budget} queries of {pool_name}; victim data {data_name}. "
           f"Ours beside the survey's (CIFAR-10 victim, CIFAR-100 queries). `acc (r x)`: the surrogate's accuracy "
           f"and its ratio to the victim's; `fid (r x)`: its agreement with the victim's top-1 (the victim's own is 1).",
           ""]
  for table, _ in TABLES:
    if table not in out["tables"]:
      continue
    e, s = out["tables"][table], survey.get(table, {})
    lines += [f"## {table}", "", "| arch (ours) | accuracy | fidelity | survey accuracy | survey fidelity |",
              "|---|---|---|---|---|",
              f"| victim {e['victim']['arch']} ({e['victim']['model']}) | {100 * e['victim']['accuracy']:.2f} | "
              f"100.00 | {s.get('victim', {}).get('accuracy', '-')} | 100.00 |"]
    ref = {a["arch"]: a for a in s.get("attackers", [])}
    for name, m in e["rows"].items():
      sv = ref.get(name, {})
      lines.append(f"| {name} ({m['model']}) | {E.survey_cell(m['accuracy'], m['accuracy_ratio'])} | "
                   f"{E.survey_cell(m['fidelity'], m['fidelity_ratio'])} | {_cell(sv, 'accuracy')} | "
                   f"{_cell(sv, 'fidelity')} |")
    lines.append("")
  return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class TablesRun:
  """The survey's Tables 1-2 at one scale (survey_tables.py's flags spell it)."""
  victim_dataset: str
  query_set: str
  num_train: int                           # victim training images (0: all)
  budget: int                              # queries B per victim
  archs: Tuple[Tuple[str, str], ...]       # (survey name, the architecture trained in its place), victims included
  victim: train.TrainConfig
  surrogate: train.TrainConfig
  num_test: int = 0                        # victim test images scored (0: all)
  rows: Tuple[str, ...] = SURVEY_NAMES     # the tables' rows: survey names
  tables: Tuple[str, ...] = ("table1", "table2")
  lr_by_arch: Tuple[Tuple[str, float], ...] = ()   # an architecture's own peak learning rate, victim and surrogate
  seed: int = 0
  dtype: str = "float32"                   # every model's compute dtype (parameters stay float32)
  checkpoint_every_s: float = 0.0          # a victim's checkpoint once this long after the last (0: every epoch)

  def validate(self):
    archs = dict(self.archs)
    unknown = set(self.rows) - set(archs)
    if unknown or set(self.tables) - {t for t, _ in TABLES}:
      raise UserError(f"unknown rows {sorted(unknown)} or tables {list(self.tables)}; rows: "
                      f"{', '.join(SURVEY_NAMES)}; tables: table1, table2")
    integer(self.budget, "budget")
    integer(self.num_train, "num_train", at_least=0)
    integer(self.num_test, "num_test", at_least=0)
    for a in archs.values():
      models.canonical_name(a)
    if self.dtype not in models.DTYPES:
      raise UserError(f"unknown compute dtype {self.dtype!r}; known: {', '.join(models.DTYPES)}")
    number(self.checkpoint_every_s, "checkpoint_every_s", at_least=0)
    for a, lr in self.lr_by_arch:
      models.canonical_name(a)
      number(lr, f"the learning rate of {a}", above=0)
    self.victim.validate()
    self.surrogate.validate()
    return self


@wd.releases
def run(cfg: TablesRun, *, workdir: str, data_dir: Optional[str] = None, run_config: Optional[dict] = None,
        log: Callable = print) -> dict:
  """Trains the victims and surrogates (or resumes them) and writes the tables; returns tables.json's content.

  `archs` maps each survey name (and a victim's) to the architecture trained in its place; `lr_by_arch` gives an
  architecture its own peak learning rate, victim and surrogate alike (the narrow VGG diverges at the others').
  run_config identifies the run (preset, overrides): a workdir holding tables of another run is refused.
  """
  t_start = time.time()
  wd.require(workdir)
  cfg.validate()
  archs, lr_by_arch, seed, budget, num_test = dict(cfg.archs), dict(cfg.lr_by_arch), cfg.seed, cfg.budget, cfg.num_test
  victim_config, surrogate_config = cfg.victim, cfg.surrogate
  for_arch = lambda config, a: dataclasses.replace(config, learning_rate=lr_by_arch[a]) if a in lr_by_arch else config
  ds, x_train, y_train = load_train_split(cfg.victim_dataset, data_dir, seed, cfg.num_train)
  pool = data.load_dataset(cfg.query_set, data_dir, seed=seed + 1)
  E.check_budget(budget, len(pool.x_train))
  xt, yt = (ds.x_test[:num_test], ds.y_test[:num_test]) if num_test else (ds.x_test, ds.y_test)
  mean, std = data.channel_stats(x_train)
  pool_mean, pool_std = data.channel_stats(pool.x_train)
  key = jax.random.key(seed)
  ident = dict(run_config or {})
  # The workdir holds the tables of one recipe: other rows and tables of it are added to it.
  recipe = {k: v for k, v in configs.as_dict(cfg).items() if k not in ("rows", "tables")}
  wd.claim(workdir, "survey_tables", dict(ident, run=recipe, select=dict(rows=cfg.rows, tables=cfg.tables)),
           identity=("run",))
  out_path = os.path.join(workdir, "tables.json")
  out = wd.load_json(out_path) or dict(ident, tables={})

  for t, (table, victim_name) in enumerate(TABLES):
    if table not in cfg.tables:
      continue
    entry = out["tables"].setdefault(table, {"rows": {}})
    victim_model = models.get_model(archs[victim_name], ds.num_classes, mean=mean, std=std, dtype=cfg.dtype)
    log(f"{table}: victim {victim_name} = {victim_model.name} on {ds.name} ({len(x_train)} images)")
    t0, trained = time.time(), []   # epochs trained by this run (none when its checkpoint is complete)

    def on_epoch_end(r):
      trained.append(r["epoch"])
      log(f"  victim epoch {r['epoch']} loss {r['train_loss']:.3f}")

    vcfg = for_arch(victim_config, archs[victim_name])
    vres = train.train(victim_model, vcfg, x_train, y_train, streams.derive(key, streams.TRAIN, t),
                       ckpt_path=os.path.join(workdir, f"victim_{victim_name}.msgpack"), meta=dict(dataset=ds.name),
                       on_epoch_end=on_epoch_end, checkpoint_every_s=cfg.checkpoint_every_s)
    variables = train.variables_of(vres.state)
    victim_top1 = np.asarray(train.predict(victim_model, variables, xt).argmax(-1))
    victim_acc = float((victim_top1 == yt).mean())
    models.save_model(os.path.join(workdir, f"victim_{victim_name}"), victim_model, variables,
                      input_shape=ds.image_shape,
                      meta=model_meta(ds, vcfg, seed=seed, num_train=len(x_train), test_accuracy=victim_acc,
                                      role=f"survey {table} victim ({victim_name})"))
    if trained or "victim" not in entry:
      seconds = time.time() - t0
      entry["victim"] = dict(arch=victim_name, model=victim_model.name, accuracy=victim_acc, fidelity=1.0,
                             seconds=seconds, epochs_run=len(trained),
                             seconds_per_epoch=seconds / len(trained) if trained else None,
                             compile_seconds=vres.compile_seconds)
    write_json(out_path, out)   # the victim's time is on disk before the first surrogate starts
    victim = Victim(victim_model, variables, budget=budget, key=streams.account(key, streams.EXTRACTION_CLIENT, t),
                    input_shape=ds.image_shape)
    attack = streams.derive(streams.branch(key, streams.ATTACKER, t), streams.EXTRACTION)   # as extraction.run's
    idx, answers = E.knockoff_random(victim, pool.x_train, budget, streams.derive(attack, streams.KNOCKOFF_QUERIES))
    for name in cfg.rows:
      if name in entry["rows"]:
        continue
      r = list(archs).index(name)   # the row's key: its place among all rows, whichever rows this run asks for
      sur = models.get_model(archs[name], ds.num_classes, mean=pool_mean, std=pool_std, dtype=cfg.dtype)
      t0 = time.time()
      state = E.train_surrogate(sur, for_arch(surrogate_config, archs[name]), pool.x_train[idx], answers,
                                streams.derive(attack, streams.KNOCKOFF_TRAIN, r)).state
      m = E.extraction_metrics(train.predict(sur, train.variables_of(state), xt), victim_top1, yt, victim_acc)
      m.update(model=sur.name, seconds=time.time() - t0, epochs=surrogate_config.num_epochs)
      entry["rows"][name] = m
      write_json(out_path, out)
      log(f"  {name:14s} {sur.name:16s} acc {E.survey_cell(m['accuracy'], m['accuracy_ratio'])} "
          f"fid {E.survey_cell(m['fidelity'], m['fidelity_ratio'])}")
    write_json(out_path, out)

  text = render(out, preset=ident.get("preset", ""), budget=budget, pool_name=pool.name, data_name=ds.name)
  wd.save_text(os.path.join(workdir, "tables.md"), text)
  results.write_jsonl(os.path.join(workdir, "results.jsonl"), [
      results.row(metric=f"{table}/{metric}", value=m[metric], family="extraction", attack="knockoff_random",
                  budget=budget, surrogate=name, queries=budget, seed=seed, data_source=pool.source)
      for table, e in out["tables"].items() for name, m in e["rows"].items()
      for metric in ("accuracy", "fidelity", "accuracy_ratio")])
  log(text)
  log(f"wall {time.time() - t_start:.0f} s; tables in {workdir}")
  return out


def parse_archs(pairs: Sequence[str]) -> Dict[str, str]:
  """['wres16=wrn16_8', ...] -> {'wres16': 'wrn16_8', ...}; survey names and architectures checked."""
  out = {}
  for pair in pairs:
    name, sep, arch = pair.partition("=")
    names = SURVEY_NAMES + ("res18_imagenet",)
    if not sep or name not in names or not arch:
      raise UserError(f"--archs takes name=architecture pairs with a name in {', '.join(names)}; got {pair!r}")
    models.canonical_name(arch)
    out[name] = arch
  return out


def with_epochs(config: train.TrainConfig, epochs: int, what: str = "epochs") -> train.TrainConfig:
  """A recipe with another epoch count; the warm-up shrinks with it (at most a quarter of the run)."""
  integer(epochs, f"--{what}")
  return dataclasses.replace(config, num_epochs=epochs, warmup_epochs=min(config.warmup_epochs, epochs / 4))
