"""One extraction attack against a (defended) victim, evaluated as the survey does (what experiments/extract.py runs).

The attack sees only the oracle; afterwards the evaluator compares the surrogate with the victim's undefended
top-1 on the victim's test set (fidelity) and with the true labels (accuracy). Writes results.json (accuracy,
fidelity, their ratios, queries used, the curve at the budget checkpoints), results.jsonl and curve.png.
"""

import os
import time
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from mlpriv_jax import data, defences, models, plots, results, train
from mlpriv_jax.attacks import extraction as E
from mlpriv_jax.errors import UserError
from mlpriv_jax.lab import victims
from mlpriv_jax.lab import workdir as wd
from mlpriv_jax.oracle import Victim, check_budget
from mlpriv_jax.utils import write_json

STREAM_VICTIM, STREAM_ATTACK, STREAM_DEFENCE = 1, 2, 7


def evaluator(surrogate: models.Model, x_test, victim_top1, y_test, victim_accuracy: float) -> Callable:
  """eval_fn(state) -> (accuracy, fidelity) of a surrogate state on the victim's test set."""
  def evaluate(state):
    m = E.extraction_metrics(train.predict(surrogate, train.variables_of(state), x_test), victim_top1, y_test,
                             victim_accuracy)
    return m["accuracy"], m["fidelity"]
  return evaluate


def load_pool(query_set: str, data_dir: Optional[str], seed: int, input_shape) -> data.Dataset:
  pool = data.load_dataset(query_set, data_dir, seed=seed + 1)
  if pool.image_shape != tuple(input_shape):
    raise UserError(f"query set {pool.name} has images of shape {pool.image_shape}, the victim takes "
                    f"{tuple(input_shape)}")
  return pool


def run(*, victim: str, workdir: str, attack: str, budget: int, surrogate_arch: str, query_set: str,
        config: train.TrainConfig, checkpoints: Sequence[int] = (), defence: str = "none",
        strength: Optional[float] = None, data_dir: Optional[str] = None, num_test: int = 0, jbda_seeds: int = 100,
        attack_options: Optional[dict] = None, seed: int = 0, run_config: Optional[dict] = None,
        victim_url: Optional[str] = None, api_key: Optional[str] = None, model_name: str = "victim",
        log: Callable = print) -> dict:
  """Runs `attack` against the victim artifact at `victim` behind `defence`, or, with `victim_url`, against the
  victim served there (`experiments/serve.py`; its defence is the server's), evaluating with the artifact."""
  t_start = time.time()
  if victim_url and not api_key:
    raise UserError("--victim_url needs an API key (--api_key, or $MLPRIV_API_KEY)")
  if victim_url and defence != "none":
    raise UserError(f"--defence={defence} defends the in-process victim; a served victim answers with its own "
                    f"defence (experiments/serve.py --defence)")
  wd.require(workdir)
  spec = E.get(attack)
  if int(budget) != budget or budget < 1:
    raise UserError(f"--budget must be a positive integer, got {budget}")
  models.canonical_name(surrogate_arch)
  dspec = defences.check(defence, strength, threat=defences.EXTRACTION)
  strength = strength if dspec.strength is not None else None
  if spec.pool == "seeds" and jbda_seeds < 1:
    raise UserError(f"--jbda_seeds must be >= 1, got {jbda_seeds}")

  v = victims.load(victim, data_dir)
  pool = load_pool(query_set, data_dir, seed, v.input_shape)
  if spec.pool == "pool":
    E.check_budget(budget, len(pool.x_train))
  # JBDA's seeds are held out from the victim's test set (never its training members): the first jbda_seeds
  # test images; the evaluation uses the rest.
  first = jbda_seeds if spec.pool == "seeds" else 0
  ds = v.dataset
  if first >= len(ds.x_test):
    raise UserError(f"--jbda_seeds {first} leaves no test images of {ds.name} to evaluate on")
  n_test = min(num_test or len(ds.x_test), len(ds.x_test) - first)
  xt, yt = ds.x_test[first:first + n_test], ds.y_test[first:first + n_test]
  victim_top1 = np.asarray(train.predict(v.model, v.variables, xt).argmax(-1))   # the evaluator's, not the attacker's
  victim_acc = float((victim_top1 == yt).mean())

  key = jax.random.key(seed)
  d = defences.build(defence, strength, model=v.model, key=jax.random.fold_in(key, STREAM_DEFENCE),
                     input_shape=v.input_shape)
  if victim_url:
    from mlpriv_jax.serve import RemoteVictim
    oracle = RemoteVictim(victim_url, api_key, model_name)
    if (oracle.input_shape, oracle.num_classes) != (tuple(v.input_shape), v.model.num_classes):
      raise UserError(f"{victim_url} serves {oracle.num_classes} classes of {oracle.input_shape}; the artifact "
                      f"{v.meta['artifact']} has {v.model.num_classes} of {tuple(v.input_shape)}")
    check_budget(oracle, budget, f"{attack} with --budget={budget}")
  else:
    oracle = Victim(v.model, v.variables, defence=d, budget=budget, key=jax.random.fold_in(key, STREAM_VICTIM),
                    input_shape=v.input_shape)
  mean, std = data.channel_stats(pool.x_train)   # the attacker normalises with its own data
  surrogate = models.get_model(surrogate_arch, oracle.num_classes, mean=mean, std=std)
  wd.claim(workdir, dict(run_config or {}, attack=attack, budget=budget, surrogate=surrogate.name, query_set=pool.name,
                         defence=defence, strength=strength, victim=v.meta["artifact"], seed=seed,
                         victim_url=victim_url),
           keys=("attack", "budget", "surrogate", "query_set", "defence", "strength", "seed"))
  log(f"{attack}: victim {v.model.name} ({ds.name}, acc {victim_acc:.4f}), surrogate {surrogate.name}, "
      f"pool {pool.name} ({len(pool.x_train)}), budget {budget}, "
      + (f"served at {victim_url}" if victim_url else f"defence {d.name}"))

  images = ds.x_test[:first] if spec.pool == "seeds" else pool.x_train
  options = dict(attack_options or {})
  if spec.pool == "pool" and attack.startswith("knockoff"):
    options.update(checkpoints=checkpoints)
  if "pool_labels" in spec.needs:
    options.update(pool_labels=pool.y_train, pool_coarse=pool.y_train_coarse)
  res = E.run(attack, oracle, images, budget=budget, surrogate=surrogate, key=jax.random.fold_in(key, STREAM_ATTACK),
              config=config, eval_fn=evaluator(surrogate, xt, victim_top1, yt, victim_acc), **options)
  for c in res.curve:
    log(f"  {c['queries']:6d} queries: accuracy {c['accuracy']:.4f} fidelity {c['fidelity']:.4f}")
  accuracy, fidelity = res.curve[-1]["accuracy"], res.curve[-1]["fidelity"]
  out = dict(attack=attack, accuracy=accuracy, fidelity=fidelity, victim_accuracy=victim_acc,
             accuracy_ratio=accuracy / victim_acc, fidelity_ratio=fidelity, queries_used=res.queries_used,
             budget=budget, surrogate=surrogate.name, query_set=pool.name, defence=d.name, curve=res.curve,
             survey_cells=dict(accuracy=E.survey_cell(accuracy, accuracy / victim_acc),
                               fidelity=E.survey_cell(fidelity, fidelity)),
             victim_url=victim_url, wall_seconds=time.time() - t_start)
  write_json(os.path.join(workdir, "results.json"), out)
  results.write_jsonl(os.path.join(workdir, "results.jsonl"), [
      results.row(metric=m, value=c[m], attack=attack, defence=defence, strength=strength, queries=c["queries"],
                  seed=seed, data_source=pool.source) for c in res.curve for m in ("accuracy", "fidelity")])
  plots.extraction_curve(os.path.join(workdir, "curve.png"), res.curve,
                         f"{attack} on {v.model.name}: surrogate {surrogate.name}, pool {pool.name}")
  log(f"accuracy {out['survey_cells']['accuracy']}, fidelity {out['survey_cells']['fidelity']}, "
      f"{res.queries_used} queries; results in {workdir}")
  return out
