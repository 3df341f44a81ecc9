"""A victim under each output defence: what it costs benign users (what experiments/defend.py runs).

For every defence and strength, the victim's test images are queried through a `Victim` with that defence
(`games.utility`): accuracy of the released top-1, label-flip rate, mean L1 and KL distortion and seconds per 1,000
queries. MAD's proxy and MemGuard's classifier are made once (`defences.assemble`); MemGuard's is trained on the
victim's outputs for its training images (members) against held-out test images (non-members), disjoint from the
evaluated ones. Results are written after each setting; a rerun skips finished ones.
"""

import dataclasses
import os
from typing import Callable, Optional, Tuple

import jax
import numpy as np

from mlpriv_jax import config as configs
from mlpriv_jax import defences, results, streams, train
from mlpriv_jax import workdir as wd
from mlpriv_jax.errors import UserError, integer, number
from mlpriv_jax.games import utility, victims
from mlpriv_jax.oracle import Victim
from mlpriv_jax.utils import write_json

METRICS = (*utility.METRICS, "l1_std", "kl_std", "original_accuracy", "compile_seconds")


@dataclasses.dataclass(frozen=True)
class DefendRun:
  defences: Tuple[str, ...]           # registry names
  strengths: Tuple[float, ...]        # for the defences that take one (those outside a defence's range skipped)
  num_test: int = 0                   # evaluate on the first num_test test images (0: all)
  num_guard: int = 500                # MemGuard: members and non-members each for its defence classifier
  guard_steps: int = 500              # MemGuard: Adam steps of its defence classifier
  batch_size: int = 250               # queries per call
  seed: int = 0

  def validate(self):
    for name in self.defences:
      defences.get(name)
    for s in self.strengths:
      number(s, "a strength", at_least=0)
    integer(self.num_test, "num_test", at_least=0)
    integer(self.num_guard, "num_guard")
    integer(self.guard_steps, "guard_steps")
    integer(self.batch_size, "batch_size")
    if not self.settings():
      raise UserError(f"no defence setting to evaluate: every strength of {', '.join(self.defences)} is out of range")
    return self

  def settings(self):
    """[(defence, strength or None)] to evaluate: each defence at each strength in its range (None: it takes none)."""
    out = []
    for name in self.defences:
      spec = defences.get(name)
      grid = list(self.strengths) if spec.strength is not None else [None]
      out += [(name, s) for s in grid if s is None or spec.valid(s)]
    return out


@wd.releases
def run(cfg: DefendRun, *, victim: str, workdir: str, data_dir: Optional[str] = None,
        run_config: Optional[dict] = None, log: Callable = print) -> dict:
  wd.require(workdir)
  cfg.validate()
  v = victims.load(victim, data_dir)
  ds = v.dataset
  n_test = cfg.num_test or len(ds.x_test)
  if n_test > len(ds.x_test):
    raise UserError(f"--num_test {n_test} exceeds the {len(ds.x_test)} test images of {ds.name}")
  x_test, y_test = ds.x_test[:n_test], ds.y_test[:n_test]
  held_out = ds.x_test[n_test:]
  if any("members" in defences.get(n).needs for n in cfg.defences) and len(held_out) < 10:
    # Too few test images beyond the evaluated ones: evaluate on one half, train MemGuard's classifier on the other.
    held_out, x_test, y_test = ds.x_test[n_test // 2:], x_test[: n_test // 2], y_test[: n_test // 2]
    log(f"memguard: too few held-out test images; evaluating on {len(x_test)}, training g on the rest")
  root = jax.random.key(cfg.seed)
  original = np.asarray(jax.nn.softmax(train.predict(v.model, v.variables, x_test)))
  # The workdir holds one victim's settings at one evaluation: other defences and strengths are added to it.
  wd.claim(workdir, "defend", dict(run_config or {}, victim=os.path.abspath(v.meta["artifact"]), num_test=len(x_test),
                                   seed=cfg.seed, guard=dict(num_guard=cfg.num_guard, guard_steps=cfg.guard_steps),
                                   run=configs.as_dict(cfg)), identity=("victim", "num_test", "seed", "guard"))
  kit = defences.assemble(cfg.defences, v.model, streams.branch(root, streams.DEFENDER), variables=v.variables, input_shape=v.input_shape,
                          members=v.member_images(cfg.num_guard), nonmembers=held_out[:cfg.num_guard],
                          guard_steps=cfg.guard_steps, log=log)
  path = os.path.join(workdir, "results.json")
  out = wd.load_json(path) or {}
  out.setdefault("victim", dict(arch=v.model.name, dataset=ds.name, artifact=v.meta["artifact"], num_test=len(x_test),
                                accuracy=float((original.argmax(-1) == y_test).mean())))
  out["config"] = configs.as_dict(cfg)
  done = results.read_jsonl(os.path.join(workdir, "results.jsonl")) if out.get("settings") else []
  settings = cfg.settings()
  for name in cfg.defences:
    skipped = [s for s in cfg.strengths if defences.get(name).strength is not None and (name, s) not in settings]
    if skipped:
      log(f"{name}: skipping strengths outside its range ({defences.get(name).valid_text}): {skipped}")
  for name, s in settings:
    if (name, s) in {(r["defence"], r["strength"]) for r in done}:
      continue
    d = defences.build(name, s, **kit._asdict())
    account = Victim(v.model, v.variables, defence=d, key=streams.account(root, streams.EVALUATOR_CLIENT),
                     input_shape=ds.image_shape)
    m = utility.measure(account, x_test, y_test, original, cfg.batch_size)
    done += utility.judge(m, METRICS, defence=name, strength=s, seed=cfg.seed, data_source=ds.source)
    out["settings"] = results.summary(done, by=("defence", "strength"))   # strength "" where it takes none
    results.write_jsonl(os.path.join(workdir, "results.jsonl"), done)
    write_json(path, out)
    log(f"{defences.label(name, s):15s} acc {m['accuracy']:.4f} flips {m['label_flip_rate']:.4f} L1 {m['l1']:.3f} "
        f"KL {m['kl']:.3f} {m['seconds_per_1000_queries']:.3f} s/1k queries")
  log(f"results in {path}")
  return out
