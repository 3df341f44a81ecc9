"""Running the arena: one victim, its defences, every attack of both families, each cell once.

What is shared (nothing is computed twice):
* the victim and the attacker's shadows are one membership game, trained once (`membership.setup`); a DP-SGD
  victim is another game, trained once per epsilon, with shadows trained by the same DP recipe;
* the attacker's preparation (views, shadow logits, population points) is made once and used against every
  defence (`membership.prepare_attacker`): the shadows do not depend on the victim's defence;
* KnockoffNets-random sends the same queries to every defence setting, so the surrogates of one architecture and
  budget are trained together, one per setting (`train_k` with per-model labels [S, B, C] and equal key ids:
  the same initialisation and batch order, only the defence's answers differ);
* each defence's utility is measured once per setting.

The adaptive attacks (knockoff_adaptive, CloudLeak, JBDA, the label-only membership attacks) choose their queries
from the answers. Each runs once per class of settings that answer it alike (`lockstep`): its queries go to every
setting at once, and a setting whose answers read the same on every query shares the result, exactly what a run of
its own would give; for a label-only attack, the defences that keep the victim's label by construction read alike
without being asked. Output defences that defend only one family (MAD, Adaptive Misinformation: extraction;
MemGuard: membership) are skipped in the other and listed as such.
"""

import dataclasses
import os
import subprocess
import time
from typing import Callable, Dict, Optional, Tuple

import jax
import numpy as np

from mlpriv_jax import data, defences, models, results, train
from mlpriv_jax.arena import cells as C
from mlpriv_jax.arena import lockstep
from mlpriv_jax.arena import report
from mlpriv_jax.attacks import extraction as E
from mlpriv_jax.attacks import membership as M
from mlpriv_jax.errors import UserError
from mlpriv_jax.lab import defend, membership, victims
from mlpriv_jax.lab import workdir as wd
from mlpriv_jax.lab.extraction import evaluator
from mlpriv_jax.oracle import Service, Victim, query_all
from mlpriv_jax.utils import append_jsonl

STREAM_DEFENCE, STREAM_ATTACKER, STREAM_EXTRACTION, STREAM_EVAL = 11, 12, 13, 14
ROC_POINTS = 60


@dataclasses.dataclass(frozen=True)
class ArenaConfig:
  """Every axis of one arena (the workdir is claimed for exactly this config)."""
  dataset: str
  arch: str
  num_examples: int                       # the membership universe; the victim trains on half
  num_shadows: int
  victim_config: train.TrainConfig
  defences: Tuple[Tuple[str, Tuple[float, ...]], ...]   # (name, strengths); parameter-free: ()
  membership_attacks: Tuple[str, ...]
  extraction_attacks: Tuple[str, ...]
  budgets: Tuple[int, ...]
  surrogates: Tuple[str, ...]
  query_set: str
  surrogate_config: train.TrainConfig
  num_test: int = 500
  label_examples: int = 200
  num_population: int = 500
  attack_options: Tuple[Tuple[str, Tuple[Tuple[str, object], ...]], ...] = ()
  dp_epsilons: Tuple[float, ...] = ()
  dp_game: Tuple[Tuple[str, object], ...] = ()   # the DP victims' recipe: arch, num_examples, config fields
  monitor: bool = True
  num_guard: int = 200
  seed: int = 0

  def options(self) -> Dict[str, dict]:
    return {name: dict(kw) for name, kw in self.attack_options}


def settings_of(cfg: ArenaConfig) -> list:
  """[(defence, strength)]: `none` first, each strength of each defence (checked against its range)."""
  out = [("none", None)]
  for name, strengths in cfg.defences:
    if name == C.DPSGD:
      raise UserError("DP-SGD victims are given as dp_epsilons, not as a defence")
    for s in defences.settings(name, strengths):
      if s not in out:
        out.append(s)
  return out


def check(cfg: ArenaConfig, pool_size: Optional[int] = None) -> list:
  """Validates the config (one line per problem); returns the skipped (family, setting) pairs."""
  settings = settings_of(cfg)
  for a in cfg.membership_attacks:
    M.get(a)
  for a in cfg.extraction_attacks:
    E.get(a)
  for s in cfg.surrogates:
    models.canonical_name(s)
  if not cfg.budgets or any(int(b) != b or b < 1 for b in cfg.budgets):
    raise UserError(f"budgets must be positive integers, got {list(cfg.budgets)}")
  if pool_size is not None and max(cfg.budgets) > pool_size:
    raise UserError(f"budget {max(cfg.budgets)} is larger than the query pool {cfg.query_set} ({pool_size} images)")
  if any(not e > 0 for e in cfg.dp_epsilons):
    raise UserError(f"DP epsilons must be > 0, got {list(cfg.dp_epsilons)}")
  M.check_shadows(cfg.membership_attacks, cfg.num_shadows)
  skipped = []
  for name, strength in settings:
    threats = defences.get(name).threats
    for family, threat in (("extraction", defences.EXTRACTION), ("membership", defences.MEMBERSHIP)):
      attacks = cfg.extraction_attacks if family == "extraction" else cfg.membership_attacks
      if attacks and threat not in threats:
        skipped.append(dict(what=f"{defences.label(name, strength)} x {family}",
                            why=f"{name} defends against {' and '.join(sorted(threats))} only"))
  return skipped


def _provenance(t_start: float) -> dict:
  try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or None
  except (OSError, subprocess.SubprocessError):
    commit = None
  return dict(git_commit=commit, jax_version=jax.__version__, backend=jax.default_backend(),
              device=jax.devices()[0].device_kind, wall_seconds=time.time() - t_start)


def _roc(scores, member):
  fpr, tpr = M.roc_curve(scores, member)
  grid = np.unique(np.r_[0.0, np.logspace(-4, 0, ROC_POINTS)])
  return [grid.tolist(), np.interp(grid, fpr, tpr).tolist()]


class _Progress:
  """One line per finished cell, with the time left estimated from the cells done so far."""

  def __init__(self, total: int, log: Callable):
    self.total, self.done, self.t0, self.log = total, 0, time.time(), log

  def __call__(self, k: C.CellKey, what: str) -> None:
    self.done += 1
    rate = (time.time() - self.t0) / self.done
    self.log(f"[{self.done}/{self.total}] {k.family} {k.attack or ''} {k.setting}"
             + (f" B={k.budget}" if k.budget else "") + (f" {k.surrogate}" if k.surrogate else "")
             + f": {what}; ~{rate * (self.total - self.done):.0f} s left")


def run(cfg: ArenaConfig, *, workdir: str, data_dir: Optional[str] = None, collate_only: bool = False,
        run_config: Optional[dict] = None, victim_url: Optional[str] = None, api_key: Optional[str] = None,
        model_name: str = "victim", log: Callable = print) -> dict:
  """Computes the missing cells of `cfg` in `workdir` (none with collate_only), then writes the report.

  With `victim_url`, one more setting, `served`: every attack and the utility measured through the victim served
  there (e.g. `experiments/serve.py --victim=<workdir>/victim/target`, behind the server's own defence), its
  membership truth the arena's. Its cells are added to a workdir's (the claimed config is unchanged), so the
  served row can follow the first run that trained the victim.
  """
  t_start = time.time()
  wd.require(workdir)
  skipped = check(cfg)   # everything that needs no data, before anything is loaded
  clients = []
  remote = _connect(victim_url, api_key, model_name, clients) if victim_url and not collate_only else None
  pool = data.load_dataset(cfg.query_set, data_dir, seed=cfg.seed + 1) if cfg.extraction_attacks else None
  if pool is not None:
    check(cfg, len(pool.x_train))
  for e in (None, *cfg.dp_epsilons):   # every game's recipe (a DP epsilon that no noise reaches, ...)
    game = _game(cfg, e)
    membership.check_game(game, cfg.membership_attacks)
    if e is not None:
      membership.dp_recipe(game)
  config = dict(run_config or {}, arena=repr(cfg))
  wd.claim(workdir, config, keys=("arena",))
  timing = os.path.join(workdir, "timing.jsonl")
  if not collate_only:
    try:
      _compute(cfg, workdir, pool, data_dir, remote, log)
    finally:
      for c in clients:
        c.close()
    append_jsonl(timing, dict(started=t_start, seconds=time.time() - t_start))
  cells = C.load_cells(workdir)
  provenance = _provenance(t_start)
  if os.path.exists(timing):   # every computing run's wall, in all (a resumed arena sums its runs)
    provenance["compute_seconds"] = sum(r["seconds"] for r in results.read_jsonl(timing))
  doc = report.collate(workdir, cells, config=dict(run_config or {}, **_jsonable(cfg),
                                                    victim=f"{cfg.arch} on {cfg.dataset}"),
                       provenance=provenance, skipped=skipped)
  log(f"arena: {len(cells)} cells; report in {os.path.join(workdir, 'report.html')}")
  return doc


def _connect(url: str, api_key: Optional[str], model_name: str, clients: list) -> Callable:
  """A factory of clients of the victim at `url`, checked reachable with this key now, before anything is written;
  one client per attack, so that each counts its own queries; each kept in `clients` to be closed."""
  if not api_key:
    raise UserError("--victim_url needs an API key (--api_key, or $MLPRIV_API_KEY)")
  from mlpriv_jax.serve import RemoteVictim
  RemoteVictim(url, api_key, model_name).close()

  def remote():
    clients.append(RemoteVictim(url, api_key, model_name))
    return clients[-1]
  return remote


def _jsonable(cfg: ArenaConfig) -> dict:
  d = dataclasses.asdict(cfg)
  d["victim_config"], d["surrogate_config"] = repr(cfg.victim_config), repr(cfg.surrogate_config)
  return d


def _game(cfg: ArenaConfig, epsilon: Optional[float] = None) -> membership.MembershipGame:
  if epsilon is None:
    return membership.MembershipGame(cfg.dataset, cfg.arch, cfg.num_examples, cfg.num_shadows, cfg.victim_config,
                                     cfg.seed)
  from mlpriv_jax import dp
  g = dict(cfg.dp_game)
  config = dataclasses.replace(cfg.victim_config, **{k: v for k, v in g.items()
                                                      if k in train.TrainConfig.__dataclass_fields__})
  return membership.MembershipGame(cfg.dataset, g.get("arch", cfg.arch), g.get("num_examples", cfg.num_examples),
                                   g.get("num_shadows", cfg.num_shadows), config, cfg.seed,
                                   dp=dp.DPTarget(float(epsilon), g.get("delta", 1e-5)))


def _compute(cfg: ArenaConfig, workdir: str, pool, data_dir, remote, log: Callable) -> None:
  settings = settings_of(cfg) + ([(C.SERVED, None)] if remote else [])
  key = jax.random.key(cfg.seed)
  games = [(None, _game(cfg))] + [(e, _game(cfg, e)) for e in cfg.dp_epsilons]
  planned = _plan(cfg, settings)
  todo = C.missing(workdir, planned)
  log(f"arena: {len(planned)} cells, {len(todo)} to compute; {len(settings)} defence settings + "
      f"{len(cfg.dp_epsilons)} DP-SGD victims")
  if not todo:
    return
  progress = _Progress(len(todo), log)
  todo = set(todo)
  for i, (e, game) in enumerate(games):
    mine = settings if e is None else [(C.DPSGD, float(e))]
    names = {C.setting(d, s) for d, s in mine}
    if not any(k.setting in names or (e is None and k.family == "monitor") for k in todo):
      continue   # every cell of this victim is done
    ds = membership.load_game_data(game, data_dir)
    name = "victim" if e is None else f"dpsgd_eps{e:g}"
    g = membership.setup(game, ds, os.path.join(workdir, name), log=log)
    _victim_cells(cfg, workdir, game, g, ds, mine, pool, jax.random.fold_in(key, i), todo, progress, remote, log)


def _plan(cfg: ArenaConfig, settings) -> list:
  keys = []
  all_settings = list(settings) + [(C.DPSGD, float(e)) for e in cfg.dp_epsilons]
  for d, s in all_settings:
    threats = _threats(d)
    keys.append(C.key("utility", None, d, s, seed=cfg.seed))
    if defences.MEMBERSHIP in threats:
      keys += [C.key("membership", a, d, s, seed=cfg.seed) for a in cfg.membership_attacks]
    if defences.EXTRACTION in threats:
      keys += [C.key("extraction", a, d, s, b, g, cfg.seed) for a in cfg.extraction_attacks for g in cfg.surrogates
               for b in cfg.budgets]
  if cfg.monitor and cfg.extraction_attacks:
    keys += [C.key("monitor", a, "none", None, max(cfg.budgets), None, cfg.seed)
             for a in (*cfg.extraction_attacks, "benign")]
  return keys


def _threats(d: str) -> set:
  both = {defences.EXTRACTION, defences.MEMBERSHIP}
  return both if d in (C.DPSGD, C.SERVED) else defences.get(d).threats


def _reading(label_only: bool, settings: Dict[str, tuple]) -> dict:
  """How an attack reads the answers, and the settings it reads alike by construction (`lockstep`): a label-only
  attack reads the top-1, the same behind every defence that keeps the victim's label (never a DP-SGD victim's
  or a served one's: another model)."""
  if not label_only:
    return dict(read=lockstep.whole)
  alike = [n for n, (d, _) in settings.items() if d not in (C.DPSGD, C.SERVED) and defences.get(d).keeps_label]
  return dict(read=lockstep.top1, alike=alike)


def _victim_cells(cfg, workdir, game, g, ds, settings, pool, key, todo, progress, remote, log) -> None:
  model, target_vars, x, y = g["model"], g["target_vars"], g["x"], g["y"]
  if pool is not None and pool.image_shape != ds.image_shape:
    raise UserError(f"query set {pool.name} has images of shape {pool.image_shape}, the victim takes {ds.image_shape}")
  xt, yt = ds.x_test[:cfg.num_test], ds.y_test[:cfg.num_test]
  held_out = ds.x_test[cfg.num_test:]
  original = np.asarray(jax.nn.softmax(train.predict(model, target_vars, xt)))
  victim_top1, victim_acc = original.argmax(-1), float((original.argmax(-1) == yt).mean())
  loaded = victims.LoadedVictim(model, target_vars, dict(input_shape=list(ds.image_shape),
                                                         data=dict(member_indices=np.flatnonzero(g["target_keep"]))),
                                ds)
  needs, services = {}, {}
  key_defence = jax.random.fold_in(key, STREAM_DEFENCE)

  def oracle(d, s, budget=None, stream=None):
    """The attacker's account at setting (d, s); each defence is built on first use (MemGuard's classifier only
    when one of its cells is still to compute), its service compiled once."""
    name = C.setting(d, s)
    if d == C.SERVED:
      return remote()
    if name not in services:
      if d not in needs:
        needs[d] = {} if d == C.DPSGD else defend.defence_needs(
            [d], loaded, key_defence, held_out=held_out, num_guard=cfg.num_guard,
            guard_steps=500, log=log)
      dfn = defences.identity() if d == C.DPSGD else defences.build(d, s, **needs[d])
      services[name] = Service.from_model(model, target_vars, input_shape=ds.image_shape, defence=dfn)
    return Victim.of(services[name], budget=budget, key=stream)

  if remote is not None and any(k.defence == C.SERVED for k in todo):
    with remote() as r:
      if (r.input_shape, r.num_classes) != (tuple(ds.image_shape), ds.num_classes):
        raise UserError(f"the served victim answers {r.num_classes} classes of {r.input_shape}; the arena's takes "
                        f"{tuple(ds.image_shape)} with {ds.num_classes}")

  for i, (d, s) in enumerate(settings):   # utility, once per setting
    k = C.key("utility", None, d, s, seed=cfg.seed)
    if k in todo:
      m = defend.utility(oracle(d, s, stream=jax.random.fold_in(key, STREAM_EVAL)), xt, yt, original, 250)
      C.write_cell(workdir, k, {n: m[n] for n in ("accuracy", "label_flip_rate", "l1", "kl",
                                                  "seconds_per_1000_queries")})
      if d == C.SERVED and m["label_flip_rate"] > 0.5:
        log(f"arena: the served victim's top-1 differs from the arena's on {m['label_flip_rate']:.0%} of the test "
            f"images: is it {os.path.join(workdir, 'victim', 'target')}? Its membership cells assume so")
      progress(k, f"accuracy {m['accuracy']:.3f}")

  mem_settings = [(d, s) for d, s in settings if defences.MEMBERSHIP in _threats(d)]
  mem_keys = {(d, s): [C.key("membership", a, d, s, seed=cfg.seed) for a in cfg.membership_attacks]
              for d, s in mem_settings}
  if any(k in todo for ks in mem_keys.values() for k in ks):
    pop = None
    if any(M.get(a).population for a in cfg.membership_attacks):
      pop = membership.population_points(ds, x, cfg.num_population)
    shadow_vars = jax.tree.map(lambda v: v[1:], g["variables"])
    k_attack = jax.random.fold_in(key, STREAM_ATTACKER)
    kit = membership.prepare_attacker(model, shadow_vars, x, y, g["shadow_keep"], cfg.membership_attacks, pop=pop,
                                      mirror=game.config.augment, label_examples=cfg.label_examples, key=k_attack)
    delta = game.dp.delta if game.dp is not None else membership.DEFAULT_AUDIT_DELTA
    pending = {C.setting(d, s): (d, s) for (d, s), ks in mem_keys.items() if any(k in todo for k in ks)}
    query_names = [a for a in cfg.membership_attacks if M.get(a).kind == "query"]
    if query_names:   # the query attacks, once per class of settings that answer them alike
      classes = lockstep.run_in_lockstep(
          lambda o: membership.kit_query_attacks(kit, o, k_attack, options=cfg.options()), list(pending),
          lambda n: oracle(*pending[n], stream=jax.random.fold_in(k_attack, 1)),
          **_reading(all(M.get(a).label_only for a in query_names), pending))
    else:
      classes = ((None, n, [n]) for n in pending)
    t0 = time.time()
    for query_results, run_with, sharing in classes:   # the cells of each class as soon as its run is done
      query_seconds = time.time() - t0
      for name in sharing:
        d, s = pending[name]
        t1 = time.time()
        out, scores, subsets, _, _, _ = membership.attack_target(
            oracle(d, s, stream=k_attack), kit, g["target_keep"], k_attack, options=cfg.options(), num_bootstrap=100,
            audit_delta=delta, seed=cfg.seed, query_results=query_results, log=lambda *_: None)
        seconds = time.time() - t1 + query_seconds
        for k in mem_keys[(d, s)]:
          r = out[k.attack]
          ci = r.get("interval", {}).get("tpr_at_fpr", {})
          audit = r.get("audit") or {}
          info = dict(num_scored=r["num_scored"], num_members=r["num_members"], num_nonmembers=r["num_nonmembers"])
          if k.attack in query_names and run_with != name:
            info["run_with"] = run_with   # its answers read as run_with's on every query of the attack
          C.write_cell(workdir, k, {
              "auc": r["auc"], "balanced_accuracy": r["balanced_accuracy"], "advantage": r["advantage"],
              "tpr_at_0.001": r["tpr_at_fpr"]["0.001"], "tpr_at_0.01": r["tpr_at_fpr"]["0.01"],
              "tpr_at_0.001_low": (ci.get("0.001") or [None])[0],
              "tpr_at_0.001_high": (ci.get("0.001") or [None, None])[1],
              "epsilon_lower_bound": audit.get("epsilon_lower_bound"),
              "queries_per_example": r["queries_per_example"]},
              curves=dict(roc=_roc(scores[k.attack], g["target_keep"][subsets[k.attack]])), seconds=seconds,
              info=info)
          progress(k, f"AUC {r['auc']:.3f}, TPR@0.1% {r['tpr_at_fpr']['0.001']:.3f}"
                   + (f" (as {run_with})" if "run_with" in info else ""))
      t0 = time.time()

  ext_settings = [(d, s) for d, s in settings if defences.EXTRACTION in _threats(d)]
  if pool is None or not ext_settings:
    return
  kx = jax.random.fold_in(key, STREAM_EXTRACTION)
  top = max(cfg.budgets)
  mean, std = data.channel_stats(pool.x_train)   # the attacker normalises with its own data
  main = settings[0][0] == "none"   # the undefended victim's streams are the monitor's
  for arch in cfg.surrogates:
    surrogate = models.get_model(arch, ds.num_classes, mean=mean, std=std)
    evaluate = evaluator(surrogate, xt, victim_top1, yt, victim_acc)
    for attack in cfg.extraction_attacks:
      keys = {(d, s, b): C.key("extraction", attack, d, s, b, arch, cfg.seed) for d, s in ext_settings
              for b in cfg.budgets}
      watch = cfg.monitor and main and C.key("monitor", attack, "none", None, top, None, cfg.seed) in todo
      if not any(k in todo for k in keys.values()) and not watch:
        continue
      if attack == "knockoff_random":
        _knockoff_together(cfg, workdir, surrogate, evaluate, pool, oracle, ext_settings, keys, kx, victim_acc,
                           todo, progress, monitor=cfg.monitor and main)
        continue
      spec = E.get(attack)
      # JBDA's seeds: the last test images (never evaluated on), half the budget at most so that it augments
      images = ds.x_test[-min(100, max(1, top // 2)):] if spec.pool == "seeds" else pool.x_train
      extra = dict(pool_labels=pool.y_train, pool_coarse=pool.y_train_coarse) if "pool_labels" in spec.needs else {}
      if attack == "knockoff_adaptive":
        extra["checkpoints"] = cfg.budgets
      names = {C.setting(d, s): (d, s) for d, s in ext_settings
               if any(keys[(d, s, b)] in todo for b in cfg.budgets) or (watch and d == "none")}
      t0 = time.time()
      for res, run_with, sharing in lockstep.run_in_lockstep(   # each run's cells as soon as it is done
          lambda o: E.run(attack, o, images, budget=top, surrogate=surrogate, key=kx, config=cfg.surrogate_config,
                          eval_fn=evaluate, **extra, **cfg.options().get(attack, {})),
          list(names), lambda n: oracle(*names[n], budget=top, stream=jax.random.fold_in(kx, 1)),
          **_reading(spec.label_only, names)):
        seconds = time.time() - t0
        for name in sharing:
          d, s = names[name]
          info = {} if run_with == name else dict(run_with=run_with)   # its answers read as run_with's throughout
          for b in cfg.budgets:   # the curve point at the largest query count within each budget
            point = max((c for c in res.curve if c["queries"] <= b), key=lambda c: c["queries"], default=None)
            k = keys[(d, s, b)]
            if k not in todo:
              continue
            if point is None:   # the attack measured nothing within this budget (its first round is larger)
              C.write_cell(workdir, k, dict(fidelity=None, accuracy=None, accuracy_ratio=None, queries_used=None),
                           seconds=seconds, info=dict(info, note="no checkpoint of the attack within this budget"))
              progress(k, "no checkpoint within this budget")
              continue
            C.write_cell(workdir, k, dict(fidelity=point["fidelity"], accuracy=point["accuracy"],
                                          accuracy_ratio=point["accuracy"] / victim_acc,
                                          queries_used=point["queries"]), seconds=seconds, info=info)
            progress(k, f"fidelity {point['fidelity']:.3f}" + (f" (as {run_with})" if info else ""))
          if cfg.monitor and main and d == "none":
            _monitor(cfg, workdir, attack, res.images, model, target_vars, todo, progress)
        t0 = time.time()
  if cfg.monitor and main:
    _monitor(cfg, workdir, "benign", ds.x_test, model, target_vars, todo, progress)


def _knockoff_together(cfg, workdir, surrogate, evaluate, pool, oracle, ext_settings, keys, kx, victim_acc, todo,
                       progress, monitor: bool) -> None:
  """KnockoffNets-random against every setting at once: the same B queries, S surrogates trained together (the
  settings with a cell still to compute; the monitor's stream is the same queries)."""
  top = max(cfg.budgets)
  ext_settings = [(d, s) for d, s in ext_settings if any(keys[(d, s, b)] in todo for b in cfg.budgets)] \
      or ext_settings[:1]
  k_query, k_train = jax.random.fold_in(kx, 0), jax.random.fold_in(kx, 1)
  idx = np.asarray(jax.random.permutation(k_query, len(pool.x_train))[:top])
  images = pool.x_train[idx]
  answers = []
  for d, s in ext_settings:
    a = query_all(oracle(d, s, budget=top, stream=jax.random.fold_in(kx, 1)), images)
    if np.all((a == 0) | (a == 1)):   # label-only answers: one-hot of the argmax (as train_surrogate)
      a = np.eye(a.shape[-1], dtype=np.float32)[a.argmax(-1)]
    answers.append(a)
  answers = np.stack(answers)   # f32[S, B, C]
  for b in sorted(cfg.budgets):
    if not any(keys[(d, s, b)] in todo for d, s in ext_settings):
      continue
    t0 = time.time()
    r = train.train_k(surrogate, cfg.surrogate_config, images[:b], answers[:, :b], np.ones((len(ext_settings), b), bool),
                      k_train, key_ids=np.zeros(len(ext_settings), np.int64))
    seconds = (time.time() - t0) / len(ext_settings)
    for i, (d, s) in enumerate(ext_settings):
      state = jax.tree.map(lambda v, i=i: v[i], r.state)
      acc, fid = evaluate(state)
      k = keys[(d, s, b)]
      C.write_cell(workdir, k, dict(fidelity=fid, accuracy=acc, accuracy_ratio=acc / victim_acc, queries_used=b),
                   seconds=seconds)
      progress(k, f"fidelity {fid:.3f}")
  if monitor:
    _monitor(cfg, workdir, "knockoff_random", images, None, None, todo, progress, oracle=oracle)


def _monitor(cfg, workdir, attack, stream, model, variables, todo, progress, oracle=None) -> None:
  """PRADA on the stream's first `max(budgets)` queries (undefended top-1): queries until it flags (None: never)."""
  top = max(cfg.budgets)
  k = C.key("monitor", attack, "none", None, top, None, cfg.seed)
  if k not in todo:
    return
  stream = np.asarray(stream)[:top]
  if oracle is not None:
    top1 = query_all(oracle("none", None), stream).argmax(-1)
  else:
    top1 = np.asarray(train.predict(model, variables, stream)).argmax(-1)
  prada = defences.Prada()
  for s in range(0, len(stream), 50):
    if prada.observe(stream[s:s + 50].astype(np.float32) / 255.0 if stream.dtype == np.uint8 else stream[s:s + 50],
                     top1[s:s + 50]):
      break
  flagged = prada.first_flag_at
  C.write_cell(workdir, k, dict(queries_to_flag=flagged, flagged=float(flagged is not None), stream=len(stream)))
  progress(k, f"PRADA {'flags after ' + str(flagged) if flagged is not None else 'never flags'}")
