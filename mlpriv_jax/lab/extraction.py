"""One extraction attack against a (defended) victim, evaluated as the survey does (what experiments/extract.py
runs): the attack of `attacks.extraction` and the judge of `games.extraction`, composed, written to a workdir.

The attack sees only the oracle; afterwards the evaluator compares each snapshot of the surrogate with the victim's
undefended top-1 on the victim's test set (fidelity) and with the true labels (accuracy). Writes results.jsonl (the
rows), results.json (the run and the rows as a curve, with the survey's cells) and curve.png.
"""

import dataclasses
import os
import time
from typing import Callable, Optional

import jax

from mlpriv_jax import config as configs
from mlpriv_jax import data, defences, models, plots, results, streams, train
from mlpriv_jax import workdir as wd
from mlpriv_jax.attacks import extraction as E
from mlpriv_jax.errors import UserError, integer
from mlpriv_jax.games import extraction as G
from mlpriv_jax.games import victims
from mlpriv_jax.oracle import Victim, check_budget
from mlpriv_jax.utils import write_json


@dataclasses.dataclass(frozen=True)
class ExtractRun:
  """One attack, one surrogate architecture, the curve at `extraction.budgets` (its largest is the budget)."""
  extraction: G.ExtractionAudit
  defence: str = "none"              # the in-process victim's output defence ...
  strength: Optional[float] = None   # ... at this strength
  num_test: int = 0                  # evaluate on the first num_test test images (0: all)
  jbda_seeds: int = 100              # JBDA: seed images, the first test images (held out from the evaluation)
  seed: int = 0

  def validate(self):
    x = self.extraction.validate()
    if len(x.attacks) != 1 or len(x.surrogates) != 1:
      raise UserError(f"extract.py runs one attack with one surrogate, got {list(x.attacks)} and {list(x.surrogates)}")
    spec = defences.check(self.defence, self.strength, threat=defences.EXTRACTION)
    if spec.strength is not None and self.strength is None:
      raise UserError(f"--defence={self.defence} needs a strength ({spec.strength}, {spec.valid_text})")
    integer(self.num_test, "num_test", at_least=0)
    integer(self.jbda_seeds, "jbda_seeds")
    return self

  @property
  def budget(self) -> int:
    return max(self.extraction.budgets)


def load_pool(query_set: str, data_dir: Optional[str], seed: int, input_shape) -> data.Dataset:
  pool = data.load_dataset(query_set, data_dir, seed=seed + 1)
  if pool.image_shape != tuple(input_shape):
    raise UserError(f"query set {pool.name} has images of shape {pool.image_shape}, the victim takes "
                    f"{tuple(input_shape)}")
  return pool


@wd.releases
def run(cfg: ExtractRun, *, victim: str, workdir: str, data_dir: Optional[str] = None,
        run_config: Optional[dict] = None, endpoint=None, log: Callable = print) -> dict:
  """Runs the attack against the victim artifact at `victim` behind `cfg.defence`, or, with `endpoint` (a
  `serve.Endpoint`), against the model served there (`experiments/serve.py` or any Open Inference Protocol v2
  server; its defence is the server's), evaluating with the artifact."""
  t_start = time.time()
  victim_url = endpoint.url if endpoint is not None else None
  if victim_url and cfg.defence != "none":
    raise UserError(f"--defence={cfg.defence} defends the in-process victim; a served victim answers with its own "
                    f"defence (experiments/serve.py --defence)")
  wd.require(workdir)
  cfg.validate()
  x = cfg.extraction
  attack, arch, budget = x.attacks[0], x.surrogates[0], cfg.budget
  spec = E.get(attack)
  strength = cfg.strength if defences.get(cfg.defence).strength is not None else None

  v = victims.load(victim, data_dir)
  pool = load_pool(x.query_set, data_dir, cfg.seed, v.input_shape)
  if spec.pool == "pool":   # the budget against the pool, before anything is written
    x.validate(len(pool.x_train))
  # JBDA's seeds are held out from the victim's test set (never its training members): the first jbda_seeds
  # test images; the evaluation uses the rest.
  first = cfg.jbda_seeds if spec.pool == "seeds" else 0
  ds = v.dataset
  if first >= len(ds.x_test):
    raise UserError(f"--jbda_seeds {first} leaves no test images of {ds.name} to evaluate on")
  n_test = min(cfg.num_test or len(ds.x_test), len(ds.x_test) - first)
  ev = G.evaluator(v.model, v.variables, ds.x_test[first:first + n_test], ds.y_test[first:first + n_test])

  root = jax.random.key(cfg.seed)
  if victim_url:
    from mlpriv_jax import serve
    oracle = serve.connect(endpoint, expect=(v.input_shape, v.model.num_classes), log=log)
    check_budget(oracle, budget, f"{attack} with --budget={budget}")
  else:
    kit = defences.assemble([cfg.defence], v.model, streams.branch(root, streams.DEFENDER), input_shape=v.input_shape)
    d = defences.build(cfg.defence, strength, **kit._asdict())
    oracle = Victim(v.model, v.variables, defence=d, budget=budget, input_shape=v.input_shape,
                    key=streams.account(root, streams.EXTRACTION_CLIENT))
  images = None if spec.pool == "none" else ds.x_test[:first] if spec.pool == "seeds" else pool.x_train
  surrogate = x.surrogate_model(arch, oracle.num_classes, None if images is None else pool.x_train,
                                input_shape=v.input_shape, victim_data=ds.name)
  name = G.canonical_surrogate(arch)
  record = dict(run_config or {}, run=configs.as_dict(cfg), victim=os.path.abspath(v.meta["artifact"]),
                victim_url=victim_url)
  wd.claim(workdir, "extract", record, identity=("run", "victim", "victim_url"))
  log(f"{attack}: victim {v.model.name} ({ds.name}, acc {ev.victim_accuracy:.4f}), surrogate {name}, "
      + ("no pool (data-free)" if images is None else f"pool {pool.name} ({len(pool.x_train)})")
      + f", budget {budget}, "
      + (f"served at {victim_url}" if victim_url else f"defence {cfg.defence}"))

  extra = dict(pool_labels=pool.y_train, pool_coarse=pool.y_train_coarse) if "pool_labels" in spec.needs else {}
  key = streams.derive(streams.branch(root, streams.ATTACKER), streams.EXTRACTION)

  def progress(queries, state, record):   # a data-free attack's report: the evaluator's fidelity, the time left
    log(f"  {queries} queries ({record['iterations']} iterations): fidelity "
        f"{G.evaluate(surrogate, state, ev)['fidelity']:.4f}, student loss {record['student_loss']:.4f}, the "
        f"victim answered {record['answered_classes']} classes (the top one {record['top_class_share']:.0%}); "
        f"{record['seconds']:.0f} s, about {record['seconds_left']:.0f} s left")
  res = E.run(attack, oracle, images, budget=budget, surrogate=surrogate, key=key, config=x.surrogate,
              options=x.options.of(attack), checkpoints=x.budgets, progress=progress, **extra)
  if res.extra.get("note"):
    log(f"{attack}: {res.extra['note']}")
  rows = G.judge(res, surrogate, ev, attack=attack, defence=cfg.defence, strength=strength, surrogate=name,
                 seed=cfg.seed, data_source="none" if images is None else pool.source)
  curve = G.curve(rows)
  for c in curve:
    log(f"  {c['queries']:6d} queries: accuracy {c['accuracy']:.4f} fidelity {c['fidelity']:.4f}")
  last = curve[-1]
  out = dict(attack=attack, victim_accuracy=ev.victim_accuracy, queries_used=res.queries_used, budget=budget,
             surrogate=name, query_set=None if images is None else pool.name, defence=cfg.defence, strength=strength,
             victim_url=victim_url, wall_seconds=time.time() - t_start, curve=curve,
             survey_cells=dict(accuracy=E.survey_cell(last["accuracy"], last["accuracy_ratio"]),
                               fidelity=E.survey_cell(last["fidelity"], last["fidelity"])))
  variables = train.variables_of(res.state) if res.state is not None else None
  if variables is not None and surrogate.spec is not None and G.members(surrogate, variables, v.input_shape) is None:
    # the thief's model, as an artifact (what experiments/verify.py takes as --suspect)
    models.save_model(os.path.join(workdir, "surrogate"), surrogate, variables, input_shape=v.input_shape,
                      meta=dict(role=f"surrogate stolen by {attack}", queries=res.queries_used,
                                victim=os.path.abspath(v.meta["artifact"])))
  write_json(os.path.join(workdir, "results.json"), out)
  results.write_jsonl(os.path.join(workdir, "results.jsonl"), rows)
  plots.extraction_curve(os.path.join(workdir, "curve.png"), curve,
                         f"{attack} on {v.model.name}: surrogate {name}, "
                         + ("no pool" if images is None else f"pool {pool.name}"))
  log(f"accuracy {out['survey_cells']['accuracy']}, fidelity {out['survey_cells']['fidelity']}, "
      f"{res.queries_used} queries; results in {workdir}")
  return out
