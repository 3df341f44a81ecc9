"""Running the arena: one victim, its defences, every attack of both families, each cell once.

The arena composes the experiment core (`mlpriv_jax.games`) as the programs do. What is shared (nothing is computed
twice):
* the victim and the attacker's shadows are one membership game, trained once (`games.membership.setup`); a DP-SGD
  victim is another game, trained once per epsilon, with shadows trained by the same DP recipe;
* the attacker's kit (views, shadow logits, population points) is made once and used against every defence
  (`games.membership.prepare`): the shadows do not depend on the victim's defence;
* KnockoffNets-random sends the same queries to every defence setting, so the surrogates of one architecture and
  budget are trained together, one per setting (`train_k` with per-model labels [S, B, C] and equal key ids:
  the same initialisation and batch order, only the defence's answers differ);
* what the defences need (MAD's proxy, MemGuard's classifier) is made once per defence (`defences.assemble`), and
  each setting's utility is measured once.

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

from mlpriv_jax import config as configs
from mlpriv_jax import data, defences, hosts, results, streams, train
from mlpriv_jax import workdir as wd
from mlpriv_jax.arena import cells as C
from mlpriv_jax.arena import lockstep
from mlpriv_jax.arena import proof
from mlpriv_jax.arena import report
from mlpriv_jax.attacks import extraction as E
from mlpriv_jax.attacks import membership as M
from mlpriv_jax.errors import UserError, number
from mlpriv_jax.games import extraction, membership, utility
from mlpriv_jax.games.ownership import OwnershipAudit
from mlpriv_jax.oracle import Service, Victim, query_all
from mlpriv_jax.utils import write_json

ROC_POINTS = 60


@dataclasses.dataclass(frozen=True)
class ArenaConfig:
  """Every axis of one arena (the workdir is claimed for exactly this config)."""
  game: membership.MembershipGame              # the victim and the attacker's shadows (its seed is the arena's)
  membership: membership.MembershipAudit       # the membership attacks, as mia.py spells them
  extraction: extraction.ExtractionAudit       # the extraction attacks, budgets, surrogates and pool
  defences: Tuple[Tuple[str, Tuple[float, ...]], ...] = ()   # (name, strengths); parameter-free: ()
  dp_epsilons: Tuple[float, ...] = ()          # a DP-SGD victim per epsilon ...
  dp_game: Optional[membership.MembershipGame] = None   # ... with this game (its dp: delta, clip norm; None: game's)
  num_test: int = 500                          # test images the utility and the fidelity are measured on
  num_guard: int = 200                         # MemGuard: members and non-members for its defence classifier
  monitor: bool = True                         # PRADA's queries-to-flag on each extraction stream
  aware: bool = True                           # also the membership score attacks calibrated on shadows answered
                                               # through each setting's defence (named <attack>_aware)
  ownership: OwnershipAudit = OwnershipAudit()  # the owner's verifiers on every surrogate (none: no such family)

  def validate(self, pool_size: Optional[int] = None):
    self.game.validate(self.membership.attacks)
    if self.membership.attacks:   # none: an arena of extraction (and ownership) alone
      self.membership.validate(self.game)
    self.extraction.validate(pool_size)
    self.ownership.validate()
    if self.ownership.verifiers and not self.extraction.attacks:
      raise UserError("the ownership verifiers judge the extraction attacks' surrogates; the arena runs none")
    for e in self.dp_epsilons:
      number(e, "a DP epsilon", above=0)
    for e in self.dp_epsilons:   # every DP game's recipe (a DP epsilon that no noise reaches, ...)
      dp_game(self, e).validate(self.membership.attacks)
    settings_of(self)
    return self


def dp_game(cfg: ArenaConfig, epsilon: float) -> membership.MembershipGame:
  """The game of the DP-SGD victim at `epsilon`: `dp_game` (or `game`) trained with DP-SGD to that epsilon."""
  from mlpriv_jax import dp
  g = cfg.dp_game or cfg.game
  target = dp.DPTarget(float(epsilon)) if g.dp is None else dataclasses.replace(g.dp, epsilon=float(epsilon))
  return dataclasses.replace(g, dp=target)


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


def skipped_of(cfg: ArenaConfig) -> list:
  """The (membership, setting) pairs not attacked, with why: a defence against extraction only is not audited for
  membership. Every setting is attacked by extraction: a thief steals through whatever the provider deploys (a
  defence against membership inference included), and the adaptive attacks are aimed at exactly such
  perturbations."""
  skipped = []
  for name, strength in settings_of(cfg):
    threats = defences.get(name).threats
    if cfg.membership.attacks and defences.MEMBERSHIP not in threats:
      skipped.append(dict(what=f"{defences.label(name, strength)} x membership",
                          why=f"{name} defends against {' and '.join(sorted(threats))} only"))
  if cfg.ownership.verifiers and cfg.dp_epsilons:
    skipped.append(dict(what="dpsgd x ownership", why="a DP-SGD victim is another model, with its own owner's "
                        "evidence and negatives: the ownership family verifies the arena's main victim"))
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
  """One line per cell this run computes, with the time left estimated from the cells done so far; each line also
  records the run's compute time so far in `timing/<run>.json` (so a killed run's time is kept)."""

  def __init__(self, total: int, log: Callable, timing_path: str, t0: float):
    self.total, self.done, self.t0, self.log, self.timing_path = total, 0, t0, log, timing_path

  def __call__(self, k: C.CellKey, what: str) -> None:
    self.done += 1
    rate = (time.time() - self.t0) / self.done
    self.log(f"[{self.done}/{self.total}] {k.family} {k.attack or ''} {k.setting}"
             + (f" B={k.budget}" if k.budget else "") + (f" {k.surrogate}" if k.surrogate else "")
             + f": {what}; ~{rate * max(self.total - self.done, 0):.0f} s left")
    self.record()

  def record(self) -> None:
    write_json(self.timing_path, dict(started=self.t0, seconds=time.time() - self.t0, cells=self.done))


@wd.releases
def run(cfg: ArenaConfig, *, workdir: str, data_dir: Optional[str] = None, collate_only: bool = False,
        run_config: Optional[dict] = None, endpoint=None, log: Callable = print) -> dict:
  """Computes the missing cells of `cfg` in `workdir` (none with collate_only), then writes the report.

  With `endpoint` (a `serve.Endpoint`), one more setting, `served`: every attack and the utility measured through
  the victim served there (e.g. `experiments/serve.py --victim=<workdir>/victim/target`, behind the server's own
  defence, or the same model behind any Open Inference Protocol v2 server), its membership truth the arena's. Its
  cells are added to a workdir's (the claimed config is unchanged), so the served row can follow the first run that
  trained the victim.
  """
  t_start = time.time()
  wd.require(workdir)
  cfg.validate()   # everything that needs no data, before anything is loaded
  if hosts.count() > 1 and (endpoint is not None or collate_only):
    raise UserError("a launch of several processes shares the arena's model training; the served row and "
                    "--collate_only are one process's work: run them without --num_processes")
  clients = []
  remote = _remote(endpoint, clients, log) if endpoint is not None and not collate_only else None
  pool = None
  if cfg.extraction.attacks:
    pool = data.load_dataset(cfg.extraction.query_set, data_dir, seed=cfg.game.seed + 1)
    cfg.extraction.validate(len(pool.x_train))
  for e in cfg.dp_epsilons:
    membership.dp_recipe(dp_game(cfg, e))
  config = dict(run_config or {}, arena=configs.as_dict(cfg))
  hosts.agree("arena", config)   # a multi-process launch: one config on every process, before anything is written
  hosts.on_writer("the workdir's claim", lambda: wd.claim(workdir, "arena", config, identity=("arena",)))
  if not collate_only:
    timing = os.path.join(workdir, "timing", f"{int(t_start * 1000)}-{os.getpid()}.json")
    try:
      _compute(cfg, workdir, pool, data_dir, remote, _Progress(0, log, timing, t_start), log)
    finally:
      for c in clients:
        c.close()
  if not hosts.writer():   # another process of a launch: its share of the models is trained and checkpointed
    return {}
  cells = C.load_cells(workdir, log)
  provenance = _provenance(t_start)
  runs = _timings(workdir)
  if runs:   # every computing run's time, in all (a resumed arena sums its runs, a killed one up to its last cell)
    provenance["compute_seconds"], provenance["compute_runs"] = sum(r["seconds"] for r in runs), len(runs)
  doc = report.collate(workdir, cells, config=dict(config, victim=f"{cfg.game.arch} on {cfg.game.dataset}"),
                       provenance=provenance, skipped=skipped_of(cfg))
  log(f"arena: {len(cells)} cells; report in {os.path.join(workdir, 'report.html')}")
  return doc


def _remote(endpoint, clients: list, log: Callable) -> Callable:
  """A factory of clients of the victim served at `url`, reached with this key now (before anything is written); one
  client per attack, so that each counts its own queries, each kept in `clients` to be closed."""
  from mlpriv_jax import serve
  serve.connect(endpoint, log=log).close()

  def remote():
    clients.append(serve.connect(endpoint))
    return clients[-1]
  return remote


def _timings(workdir: str) -> list:
  """The computing runs' records (`timing/*.json`): when each started and its compute time up to its last cell."""
  folder = os.path.join(workdir, "timing")
  runs = []
  for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
    try:
      rec = wd.load_json(os.path.join(folder, name)) if name.endswith(".json") else None
    except UserError:   # a damaged record costs only its run's time in the sum
      continue
    if isinstance(rec, dict) and isinstance(rec.get("seconds"), (int, float)):
      runs.append(rec)
  return runs


def _compute(cfg: ArenaConfig, workdir: str, pool, data_dir, remote, progress: _Progress, log: Callable) -> None:
  settings = settings_of(cfg) + ([(C.SERVED, None)] if remote else [])
  key = jax.random.key(cfg.game.seed)
  games = [(None, cfg.game)] + [(e, dp_game(cfg, e)) for e in cfg.dp_epsilons]
  planned = _plan(cfg, settings)
  writer = hosts.writer()   # the other processes of a launch only train their share of the models
  todo = C.missing(workdir, planned, log, set_aside_damaged=writer)
  # a surrogate whose ownership cell is missing is trained again (the proof is made before its extraction cell)
  todo += [k._replace(family="extraction") for k in todo if k.family == "ownership" and k.attack != proof.NEGATIVE
           and k._replace(family="extraction") not in todo]
  log(f"arena: {len(planned)} cells, {len(todo)} to compute; {len(settings)} defence settings + "
      f"{len(cfg.dp_epsilons)} DP-SGD victims")
  if not todo:
    return
  if writer:
    progress.total = len(todo)
    progress.record()
  todo = set(todo)
  # Every victim's game first (its K + 1 models split over the processes of a launch), then, on process 0 alone,
  # the cells of each: the others are not left waiting at a barrier while process 0 attacks.
  games_todo = []
  for i, (e, game) in enumerate(games):
    mine = settings if e is None else [(C.DPSGD, float(e))]
    names = {C.setting(d, s) for d, s in mine}
    if not any(k.setting in names or (e is None and k.family == "monitor") for k in todo):
      continue   # every cell of this victim is done
    ds = membership.load_data(game, data_dir)
    name = "victim" if e is None else f"dpsgd_eps{e:g}"
    trained = membership.setup(game, ds, os.path.join(workdir, name), log=log)
    if trained is not None:
      games_todo.append((i, mine, trained))
  for i, mine, trained in games_todo:
    _victim_cells(cfg, workdir, trained, mine, pool, (key, i), todo, progress, remote, log)


def _plan(cfg: ArenaConfig, settings) -> list:
  keys, seed, x = [], cfg.game.seed, cfg.extraction
  all_settings = list(settings) + [(C.DPSGD, float(e)) for e in cfg.dp_epsilons]
  for d, s in all_settings:
    threats = _threats(d)
    keys.append(C.key("utility", None, d, s, seed=seed))
    if defences.MEMBERSHIP in threats:
      keys += [C.key("membership", a, d, s, seed=seed) for a in _membership_attacks(cfg, d)]
    if defences.EXTRACTION in threats:
      keys += [C.key("extraction", a, d, s, b, g, seed) for a in x.attacks for g in x.surrogates for b in x.budgets]
  if cfg.monitor and x.attacks:
    keys += [C.key("monitor", a, "none", None, max(x.budgets), None, seed) for a in (*x.attacks, "benign")]
  if cfg.ownership.verifiers:   # every surrogate of the main victim, and the owner's negatives
    keys += [proof.key_of(k) for k in keys if k.family == "extraction" and k.defence != C.DPSGD]
    keys += proof.negative_keys(cfg.ownership, seed)
  return keys


def _membership_attacks(cfg: ArenaConfig, d: str) -> list:
  """The membership attacks run against setting `d`: the audit's, and with `aware` each score attack calibrated on
  shadows behind the defence where there is one the attacker can copy (not `none`, a DP-SGD victim's undefended
  output, or a served victim's unknown one)."""
  names = list(cfg.membership.attacks)
  if cfg.aware and d not in ("none", C.DPSGD, C.SERVED):
    names += [a + membership.AWARE for a in M.split(cfg.membership.attacks)[0]]
  return names


def _threats(d: str) -> set:
  """The families of attacks run against setting `d`: extraction against all; membership where the defence
  addresses it (and against a DP-SGD or a served victim)."""
  both = {defences.EXTRACTION, defences.MEMBERSHIP}
  return both if d in (C.DPSGD, C.SERVED) else defences.get(d).threats | {defences.EXTRACTION}


def _reading(label_only: bool, settings: Dict[str, tuple]) -> dict:
  """How an attack reads the answers, and the settings it reads alike by construction (`lockstep`): a label-only
  attack reads the top-1, the same behind every defence that keeps the victim's label (never a DP-SGD victim's
  or a served one's: another model)."""
  if not label_only:
    return dict(read=lockstep.whole)
  alike = [n for n, (d, _) in settings.items() if d not in (C.DPSGD, C.SERVED) and defences.get(d).keeps_label]
  return dict(read=lockstep.top1, alike=alike)


def _victim_cells(cfg, workdir, trained: membership.TrainedGame, settings, pool, at, todo, progress, remote,
                  log) -> None:
  """Every cell of one victim; `at` = (root key, game index): its parties' streams are `streams.branch(root, party,
  game)` and its accounts `streams.account(root, client, game)`."""
  ds, model, target_vars = trained.dataset, trained.model, trained.target_variables
  seed = cfg.game.seed
  if pool is not None and pool.image_shape != ds.image_shape:
    raise UserError(f"query set {pool.name} has images of shape {pool.image_shape}, the victim takes {ds.image_shape}")
  xt, yt = ds.x_test[:cfg.num_test], ds.y_test[:cfg.num_test]
  held_out = ds.x_test[cfg.num_test:]
  original = np.asarray(jax.nn.softmax(train.predict(model, target_vars, xt)))
  ev = extraction.Evaluator(xt, yt, original.argmax(-1), float((original.argmax(-1) == yt).mean()))
  kits, services = {}, {}
  root, g = at
  key_defence = streams.branch(root, streams.DEFENDER, g)

  def oracle(d, s, budget=None, stream=None):
    """The attacker's account at setting (d, s); what each defence needs is made on first use (MemGuard's
    classifier only when one of its cells is still to compute), its service compiled once."""
    name = C.setting(d, s)
    if d == C.SERVED:
      return remote()
    if name not in services:
      if d not in kits:
        kits[d] = defences.DefenderKit() if d == C.DPSGD else defences.assemble(
            [d], model, key_defence, variables=target_vars, input_shape=ds.image_shape,
            members=trained.x[trained.target_keep][:cfg.num_guard], nonmembers=held_out[:cfg.num_guard],
            guard_steps=500, log=log)
      dfn = defences.identity() if d == C.DPSGD else defences.build(d, s, **kits[d]._asdict())
      services[name] = Service.from_model(model, target_vars, input_shape=ds.image_shape, defence=dfn)
    return Victim.of(services[name], budget=budget, key=stream)

  if remote is not None and any(k.defence == C.SERVED for k in todo):
    with remote() as r:
      if (r.input_shape, r.num_classes) != (tuple(ds.image_shape), ds.num_classes):
        raise UserError(f"the served victim answers {r.num_classes} classes of {r.input_shape}; the arena's takes "
                        f"{tuple(ds.image_shape)} with {ds.num_classes}")

  for d, s in settings:   # utility, once per setting
    k = C.key("utility", None, d, s, seed=seed)
    if k in todo:
      m = utility.measure(oracle(d, s, stream=streams.account(root, streams.EVALUATOR_CLIENT, g)), xt, yt, original,
                          250)
      C.write_cell(workdir, k, utility.judge(m, **_fields(k)))
      if d == C.SERVED and m["label_flip_rate"] > 0.5:
        log(f"arena: the served victim's top-1 differs from the arena's on {m['label_flip_rate']:.0%} of the test "
            f"images: is it {os.path.join(workdir, 'victim', 'target')}? Its membership cells assume so")
      progress(k, f"accuracy {m['accuracy']:.3f}")

  _membership_cells(cfg, workdir, trained, settings, oracle, at, todo, progress)
  prover = None
  if any(k.family == "ownership" for k in todo) and g == 0:   # the main victim's owner
    n = cfg.ownership.num_points
    prover = proof.Prover(cfg.ownership, workdir, trained, (held_out[:n], ds.y_test[cfg.num_test:][:n]), key_defence,
                          account=streams.account(root, streams.EXTRACTION_CLIENT, g),
                          master=lambda: kits["dawn"].watermark_master, todo=todo, progress=progress, log=log)
  _extraction_cells(cfg, workdir, trained, settings, pool, oracle, ev, at, todo, progress, prover)
  if prover is not None:
    prover.negatives   # their cells, even where every surrogate was proved before


def _fields(k: C.CellKey) -> dict:
  """The results-row fields of a cell's key."""
  return dict(defence=k.defence, strength=k.strength, attack=k.attack or "", seed=k.seed)


def _membership_cells(cfg, workdir, trained, settings, oracle, at, todo, progress) -> None:
  audit, seed = cfg.membership, cfg.game.seed
  mem_keys = {(d, s): [C.key("membership", a, d, s, seed=seed) for a in _membership_attacks(cfg, d)]
              for d, s in settings if defences.MEMBERSHIP in _threats(d)}
  pending = {C.setting(d, s): (d, s) for (d, s), ks in mem_keys.items() if any(k in todo for k in ks)}
  if not pending:
    return
  root, g = at
  k_attack = streams.derive(streams.branch(root, streams.ATTACKER, g), streams.MEMBERSHIP)
  k_bootstrap = streams.derive(streams.branch(root, streams.EVALUATION, g), streams.BOOTSTRAP)
  kit = membership.prepare(trained, audit, k_attack)
  game = trained.game
  delta = game.dp.delta if game.dp is not None else membership.DEFAULT_AUDIT_DELTA
  _, query_names = M.split(audit.attacks)
  if query_names:   # the query attacks, once per class of settings that answer them alike
    classes = lockstep.run_in_lockstep(
        lambda o: membership.attack_by_query(kit, o, k_attack, audit.options), list(pending),
        lambda n: oracle(*pending[n], stream=streams.account(root, streams.MEMBERSHIP_QUERY_CLIENT, g)),
        **_reading(M.reads_labels_only(query_names), pending))
  else:
    classes = (({}, n, [n]) for n in pending)
  t0 = time.time()
  for by_query, run_with, sharing in classes:   # the cells of each class as soon as its run is done
    query_seconds = time.time() - t0
    for name in sharing:
      d, s = pending[name]
      t1 = time.time()
      account = oracle(d, s, stream=streams.account(root, streams.MEMBERSHIP_CLIENT, g))
      scores = dict(by_query)
      if M.split(audit.attacks)[0]:   # the target's answers once; the naive and the aware attacker score them
        released = membership.release(kit, account)
        scores.update(membership.score_released(kit, released, k_attack, audit.options))
        if any(k.attack.endswith(membership.AWARE) and k in todo for k in mem_keys[(d, s)]):
          aware = membership.aware_kit(kit, d, s, k_attack, guard_steps=500)
          scores.update({a + membership.AWARE: v for a, v in
                         membership.score_released(aware, released, k_attack, audit.options).items()})
      rows = membership.judge(scores, trained.target_keep, fprs=audit.fprs, num_bootstrap=audit.num_bootstrap,
                              audit_delta=delta, key=k_bootstrap, seed=seed, defence=d, strength=s)
      seconds = time.time() - t1 + query_seconds
      for k in (k for k in mem_keys[(d, s)] if k in todo):   # its finished siblings stay as they are
        sc = scores[k.attack]
        mine = [dict(r, family=k.family, budget=k.budget, surrogate="") for r in rows if r["attack"] == k.attack]
        info = {}
        if k.attack in query_names and run_with != name:
          info["run_with"] = run_with   # its answers read as run_with's on every query of the attack
        cell = C.write_cell(workdir, k, mine, curves=dict(roc=_roc(sc.scores, trained.target_keep[sc.index])),
                            seconds=seconds, info=info)
        m = cell["metrics"]
        progress(k, f"AUC {m['auc']:.3f}, TPR@0.1% {m['tpr_at_0.001']:.3f}"
                 + (f" (as {run_with})" if "run_with" in info else ""))
    t0 = time.time()


def _extraction_cells(cfg, workdir, trained, settings, pool, oracle, ev, at, todo, progress, prover) -> None:
  x, seed, ds = cfg.extraction, cfg.game.seed, trained.dataset
  ext_settings = [(d, s) for d, s in settings if defences.EXTRACTION in _threats(d)]
  if pool is None or not ext_settings:
    return
  root, g = at
  kx = streams.derive(streams.branch(root, streams.ATTACKER, g), streams.EXTRACTION)
  top = max(x.budgets)
  main = settings[0][0] == "none"   # the undefended victim's streams are the monitor's
  account = streams.account(root, streams.EXTRACTION_CLIENT, g)
  for arch in x.surrogates:
    surrogate = x.surrogate_model(arch, ds.num_classes, pool.x_train, input_shape=ds.image_shape,
                                  victim_data=ds.name)
    if any(a in TOGETHER for a in x.attacks):
      _knockoff_together(cfg, workdir, surrogate, ev, pool, oracle, ext_settings, arch, kx, account, todo,
                         progress, prover, monitor=cfg.monitor and main)
    for attack in x.attacks:
      keys = {(d, s, b): C.key("extraction", attack, d, s, b, arch, seed) for d, s in ext_settings for b in x.budgets}
      watch = cfg.monitor and main and C.key("monitor", attack, "none", None, top, None, seed) in todo
      if attack in TOGETHER or (not any(k in todo for k in keys.values()) and not watch):
        continue
      spec = E.get(attack)
      # JBDA's seeds: the last test images (never evaluated on), half the budget at most so that it augments; a
      # data-free attack has no images, and its student no statistics of any
      images = (ds.x_test[-min(100, max(1, top // 2)):] if spec.pool == "seeds" else None if spec.pool == "none"
                else pool.x_train)
      model = surrogate if images is not None or extraction.split_surrogate(arch)[1] else x.surrogate_model(
          arch, ds.num_classes, None, input_shape=ds.image_shape, victim_data=ds.name)
      extra = dict(pool_labels=pool.y_train, pool_coarse=pool.y_train_coarse) if "pool_labels" in spec.needs else {}
      names = {C.setting(d, s): (d, s) for d, s in ext_settings
               if any(keys[(d, s, b)] in todo for b in x.budgets) or (watch and d == "none")}
      # an attack that knows the defence runs against each setting apart (it is told which)
      groups = [[n] for n in names] if "defence" in spec.needs else [list(names)]
      runs = (run for group in groups for run in lockstep.run_in_lockstep(   # each run's cells as soon as it is done
          lambda o, g=group: _attack(attack, o, images, budget=top, surrogate=model, key=kx, config=x.surrogate,
                                     options=x.options.of(attack), checkpoints=x.budgets,
                                     **_told(spec, names[g[0]]), **extra),
          group, lambda n: oracle(*names[n], budget=top, stream=account),
          **_reading(spec.label_only, {n: names[n] for n in group})))
      t0 = time.time()
      for res, run_with, sharing in runs:
        judged = extraction.judge(res, model, ev)
        seconds = time.time() - t0
        for name in sharing:
          d, s = names[name]
          info = {} if run_with == name else dict(run_with=run_with)   # its answers read as run_with's throughout
          info.update({k: res.extra[k] for k in ("defence", "note") if k in res.extra})
          for b in x.budgets:   # the snapshot with the most queries within each budget
            k = keys[(d, s, b)]
            if k not in todo:
              continue
            rows = [dict(r, **_fields(k), budget=b, surrogate=arch) for r in extraction.at_budget(judged, b)]
            if not rows:   # the attack measured nothing within this budget (its first round is larger)
              note = info["note"] if res.extra.get("refused") else "no checkpoint of the attack within this budget"
              if prover is not None:
                prover.nothing(k, note)
              C.write_cell(workdir, k, {m: None for m in extraction.METRICS}, seconds=seconds,
                           info=dict(info, note=note))
              progress(k, note)
              continue
            if prover is not None and prover.wanted(k):   # the proof first: a surrogate is kept with neither or both
              q = rows[0]["queries"]
              state = next(st for n, st in res.snapshots if n == q)
              prover.prove(k, model, train.variables_of(state),
                           **dict(zip(("images", "answers"), proof.transfer_until(res.images, res.answers,
                                                                                  res.queries_used, q))))
            cell = C.write_cell(workdir, k, rows, seconds=seconds, info=info)
            progress(k, f"fidelity {cell['metrics']['fidelity']:.3f}"
                     + (f" (as {run_with})" if "run_with" in info else ""))
          if cfg.monitor and main and d == "none":
            _monitor(cfg, workdir, attack, res.images, trained, todo, progress)
        t0 = time.time()
  if cfg.monitor and main:
    _monitor(cfg, workdir, "benign", ds.x_test, trained, todo, progress)


def _attack(name, oracle, images, **kw) -> E.ExtractionResult:
  """`E.run`, except that a data-free attack that needs probabilities, refused by a label-only setting, leaves a
  result without a surrogate whose note says why (its cells hold no figure, not a crash of the arena)."""
  try:
    return E.run(name, oracle, images, **kw)
  except E.NeedsProbabilities as e:
    return E.ExtractionResult(None, oracle.queries_used, np.zeros((0, *oracle.input_shape), np.float32),
                              np.zeros((0, oracle.num_classes), np.float32), [], dict(note=f"refused: {e}",
                                                                                      refused=True))


def _told(spec, setting) -> dict:
  """What the arena tells an attack that needs the defence (Kerckhoffs): the setting's defence and strength; a
  DP-SGD victim's output is undefended; a served victim's defence is what its server disclosed."""
  if "defence" not in spec.needs:
    return {}
  d, s = setting
  return dict(defence=None if d == C.SERVED else ("none", None) if d == C.DPSGD else (d, s))


# KnockoffNets-random and Top-1 read the same queries (the same stream of the same key): run together.
TOGETHER = ("knockoff_random", "top1")


def _knockoff_together(cfg, workdir, surrogate, ev, pool, oracle, ext_settings, arch, kx, account, todo, progress,
                       prover, monitor: bool) -> None:
  """KnockoffNets-random and Top-1 against every setting at once: the same B queries, answered once per setting
  (each attack's own account would draw the same answers: the same stream, the same queries in the same calls),
  one surrogate per (attack, setting) with a cell still to compute, all trained together from the same
  initialisation (the monitor's stream is the same queries)."""
  x, seed = cfg.extraction, cfg.game.seed
  budgets, top = x.budgets, max(x.budgets)
  keys = {(a, d, s, b): C.key("extraction", a, d, s, b, arch, seed)
          for a in x.attacks if a in TOGETHER for d, s in ext_settings for b in budgets}
  lanes = [(a, d, s) for a in x.attacks if a in TOGETHER for d, s in ext_settings
           if any(keys[(a, d, s, b)] in todo for b in budgets)]
  watch = [a for a in x.attacks if a in TOGETHER and monitor
           and C.key("monitor", a, "none", None, top, None, seed) in todo]
  if not lanes and not watch:
    return
  asked = [(d, s) for d, s in ext_settings if any(lane[1:] == (d, s) for lane in lanes)] or ext_settings[:1]
  k_query = streams.derive(kx, streams.KNOCKOFF_QUERIES)
  k_train = streams.derive(kx, streams.KNOCKOFF_TRAIN)
  idx = np.asarray(jax.random.permutation(k_query, len(pool.x_train))[:top])
  images = pool.x_train[idx]
  answers = {}
  for d, s in asked:
    a = query_all(oracle(d, s, budget=top, stream=account), images)
    if np.all((a == 0) | (a == 1)):   # label-only answers: one-hot of the argmax (as train_surrogate)
      a = np.eye(a.shape[-1], dtype=np.float32)[a.argmax(-1)]
    answers[(d, s)] = a
  top1 = lambda a: np.eye(a.shape[-1], dtype=np.float32)[a.argmax(-1)]
  labels = np.stack([top1(answers[(d, s)]) if a == "top1" else answers[(d, s)] for a, d, s in lanes]) \
      if lanes else None   # f32[lanes, B, C]
  for b in sorted(budgets):
    mine = [i for i, (a, d, s) in enumerate(lanes) if keys[(a, d, s, b)] in todo]
    if not mine:
      continue
    t0 = time.time()
    r = train.train_k(surrogate, x.surrogate, images[:b], labels[:, :b], np.ones((len(lanes), b), bool), k_train,
                      key_ids=np.zeros(len(lanes), np.int64))
    seconds = (time.time() - t0) / len(lanes)
    for i in mine:   # a lane without a cell at this budget was trained beside the others, its cell kept as it is
      k = keys[lanes[i][0], lanes[i][1], lanes[i][2], b]
      state = jax.tree.map(lambda v, i=i: v[i], r.state)
      rows = [results.row(metric=m, value=v, family="extraction", queries=b, budget=b, surrogate=k.surrogate,
                          **_fields(k)) for m, v in extraction.evaluate(surrogate, state, ev).items()]
      if prover is not None:   # the proof first: a surrogate is kept with neither or both
        d, s = lanes[i][1:]
        prover.prove(k, surrogate, train.variables_of(state), images=images[:b], answers=answers[(d, s)][:b])
      cell = C.write_cell(workdir, k, rows, seconds=seconds)
      progress(k, f"fidelity {cell['metrics']['fidelity']:.3f}")
  for a in watch:
    _monitor(cfg, workdir, a, images, None, todo, progress, oracle=oracle)


def _monitor(cfg, workdir, attack, stream, trained, todo, progress, oracle=None) -> None:
  """PRADA on the stream's first `max(budgets)` queries (undefended top-1): queries until it flags (None: never)."""
  top = max(cfg.extraction.budgets)
  k = C.key("monitor", attack, "none", None, top, None, cfg.game.seed)
  if k not in todo:
    return
  stream = np.asarray(stream)[:top]
  if oracle is not None:
    top1 = query_all(oracle("none", None), stream).argmax(-1)
  else:
    top1 = np.asarray(train.predict(trained.model, trained.target_variables, stream)).argmax(-1)
  prada = defences.Prada()
  for s in range(0, len(stream), 50):
    if prada.observe(stream[s:s + 50].astype(np.float32) / 255.0 if stream.dtype == np.uint8 else stream[s:s + 50],
                     top1[s:s + 50]):
      break
  flagged = prada.first_flag_at
  C.write_cell(workdir, k, dict(queries_to_flag=flagged, flagged=float(flagged is not None), stream=len(stream)))
  todo.discard(k)   # once per attack: the first surrogate's stream (KnockoffNets sends the same for every surrogate)
  progress(k, f"PRADA {'flags after ' + str(flagged) if flagged is not None else 'never flags'}")
