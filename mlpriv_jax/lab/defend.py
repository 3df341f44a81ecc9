"""A victim under each output defence: what it costs benign users (what experiments/defend.py runs).

For every defence and strength, the victim's test images are queried through a `Victim` with that defence:
accuracy of the released top-1, label-flip rate, mean L1 and KL distortion (with std) and seconds per 1,000
queries. MAD's proxy is a randomly initialised copy of the victim's architecture (the paper's choice);
MemGuard's defence classifier is trained on the victim's outputs for its training images (members) against
held-out test images (non-members), disjoint from the evaluated ones. Results are written after each entry; a
rerun skips finished entries.
"""

import os
import time
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from mlpriv_jax import defences, results, train
from mlpriv_jax.errors import UserError
from mlpriv_jax.lab import victims
from mlpriv_jax.lab import workdir as wd
from mlpriv_jax.oracle import Victim
from mlpriv_jax.utils import write_json


def defence_needs(names, victim: victims.LoadedVictim, key, *, held_out, num_guard: int, guard_steps: int,
                  log: Callable = print) -> dict:
  """What the named defences need, made once: MAD's proxy, MemGuard's trained classifier."""
  needs = {}
  specs = [defences.get(n) for n in names]
  if any("proxy" in s.needs for s in specs):
    needs["proxy_probs"] = defences.make_proxy(victim.model, jax.random.fold_in(key, 1), victim.input_shape)
  if any("members" in s.needs for s in specs):
    members, nonmembers = victim.member_images(num_guard), held_out[:num_guard]
    n = min(len(members), len(nonmembers))
    needs["memguard_params"] = defences.make_memguard_classifier(
        victim.model, victim.variables, members[:n], nonmembers[:n], jax.random.fold_in(key, 2),
        num_steps=guard_steps)
    g = lambda x: np.asarray(defences.defence_classifier_score(
        needs["memguard_params"], jax.nn.softmax(train.predict(victim.model, victim.variables, x))))
    acc = ((g(members[:n]) > 0.5).mean() + (g(nonmembers[:n]) <= 0.5).mean()) / 2
    log(f"memguard: defence classifier accuracy {acc:.3f} on {n} members + {n} non-members")
  return needs


def utility(victim: Victim, x, y, original, batch_size: int) -> dict:
  """Defence utility on (x, y) through `victim`, plus the seconds it took per 1,000 queries (after compiling)."""
  t0 = time.perf_counter()
  first = victim.query(x[:batch_size])                  # compiles
  t1 = time.perf_counter()
  rest = [victim.query(x[s:s + batch_size]) for s in range(batch_size, len(x), batch_size)]
  t2 = time.perf_counter()
  m = defences.defence_utility(np.concatenate([first, *rest]), original, y)
  n_timed = len(x) - min(batch_size, len(x))
  m.update(compile_seconds=t1 - t0, queries_used=victim.queries_used,
           seconds_per_1000_queries=(t2 - t1) / n_timed * 1000 if n_timed else (t1 - t0) / len(x) * 1000)
  return m


def run(*, victim: str, workdir: str, defence_names: Sequence[str], strengths: Sequence[float],
        data_dir: Optional[str] = None, num_test: int = 0, num_guard: int = 500, guard_steps: int = 500,
        batch_size: int = 250, seed: int = 0, run_config: Optional[dict] = None, log: Callable = print) -> dict:
  for name in defence_names:
    defences.get(name)
  if any(not s >= 0 for s in strengths):
    raise UserError(f"epsilons must be >= 0, got {list(strengths)}")
  if batch_size < 1:
    raise UserError(f"--batch_size must be >= 1, got {batch_size}")
  v = victims.load(victim, data_dir)
  ds = v.dataset
  n_test = num_test or len(ds.x_test)
  if n_test > len(ds.x_test):
    raise UserError(f"--num_test {n_test} exceeds the {len(ds.x_test)} test images of {ds.name}")
  x_test, y_test = ds.x_test[:n_test], ds.y_test[:n_test]
  held_out = ds.x_test[n_test:]
  if any("members" in defences.get(n).needs for n in defence_names) and len(held_out) < 10:
    # Too few test images beyond the evaluated ones: evaluate on one half, train MemGuard's classifier on the other.
    held_out, x_test, y_test = ds.x_test[n_test // 2:], x_test[: n_test // 2], y_test[: n_test // 2]
    log(f"memguard: too few held-out test images; evaluating on {len(x_test)}, training g on the rest")
  key = jax.random.key(seed)
  original = np.asarray(jax.nn.softmax(train.predict(v.model, v.variables, x_test)))
  wd.claim(workdir, dict(run_config or {}, victim=os.path.abspath(v.meta["artifact"]), num_test=len(x_test),
                         seed=seed), keys=("victim", "num_test", "seed", "preset"))
  needs = defence_needs(defence_names, v, key, held_out=held_out, num_guard=num_guard, guard_steps=guard_steps,
                        log=log)
  path = os.path.join(workdir, "results.json")
  out = wd.load_json(path) or {}
  out.setdefault("victim", dict(arch=v.model.name, dataset=ds.name, artifact=v.meta["artifact"], num_test=len(x_test),
                                accuracy=float((original.argmax(-1) == y_test).mean())))
  out.setdefault("defences", {})
  for name in defence_names:
    spec = defences.get(name)
    grid = list(strengths) if spec.strength is not None else [0.0]
    skipped = [s for s in grid if spec.strength is not None and not spec.valid(s)]
    if skipped:
      log(f"{name}: skipping strengths outside its range ({spec.valid_text}): {skipped}")
    for s in (s for s in grid if s not in skipped):
      entry = f"{s:g}"
      if entry in out["defences"].get(name, {}):
        continue
      d = defences.build(name, s if spec.strength is not None else None, **needs)
      m = utility(Victim(v.model, v.variables, defence=d, key=jax.random.fold_in(key, 3), input_shape=ds.image_shape),
                  x_test, y_test, original, batch_size)
      out["defences"].setdefault(name, {})[entry] = m
      write_json(path, out)
      log(f"{name:11s} eps={entry:5s} acc {m['accuracy']:.4f} flips {m['label_flip_rate']:.4f} "
          f"L1 {m['l1']:.3f} KL {m['kl']:.3f} {m['seconds_per_1000_queries']:.3f} s/1k queries")
  rows = [results.row(metric=metric, value=m[metric], defence=name,
                      strength=float(e) if defences.get(name).strength is not None else None, seed=seed,
                      data_source=ds.source, queries=m["queries_used"])
          for name, per in out["defences"].items() for e, m in per.items()
          for metric in ("accuracy", "label_flip_rate", "l1", "kl", "seconds_per_1000_queries")]
  results.write_jsonl(os.path.join(workdir, "results.jsonl"), rows)
  log(f"results in {path}")
  return out
