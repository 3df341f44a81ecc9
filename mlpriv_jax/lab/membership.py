"""Membership inference against a target behind an oracle (what experiments/mia.py runs): the membership game of
`games.membership` composed with the target's defence, its results written to a workdir.

MemGuard's defence classifier is trained by the defender on the target's members against held-out test images
(disjoint from the evaluated non-members). With an `endpoint` the attacker queries the target served there instead.
"""

import dataclasses
import os
import time
from typing import Callable, Optional

import jax
import numpy as np

from mlpriv_jax import config as configs
from mlpriv_jax import defences, hosts, plots, results, streams, train
from mlpriv_jax import workdir as wd
from mlpriv_jax.attacks import membership as M
from mlpriv_jax.errors import UserError, integer
from mlpriv_jax.games import membership as G
from mlpriv_jax.oracle import Service, Victim, check_budget, query_all
from mlpriv_jax.utils import atomic_write, write_json


@dataclasses.dataclass(frozen=True)
class MiaRun:
  """One membership experiment: the game, the attacker, and the target's defence (mia.py's flags spell it)."""
  game: G.MembershipGame
  membership: G.MembershipAudit
  dp_game: Optional[G.MembershipGame] = None   # the game with --dp_epsilon: DP-SGD needs its own recipe (GroupNorm)
  defence: str = "none"                        # the target's output defence ...
  strength: Optional[float] = None             # ... at this strength (MemGuard: the expected L1 budget)
  num_defence_examples: int = 500              # MemGuard: members and held-out images for its classifier
  num_test: int = 1000                         # test images for the target's test accuracy
  budget: Optional[int] = None                 # the attacker's query budget at the victim (None: unlimited)

  def validate(self):
    self.game.validate(self.membership.attacks)
    self.membership.validate(self.game)
    integer(self.num_test, "num_test")
    if self.budget is not None:
      n = self.game.num_examples
      integer(self.budget, "budget", at_least=0)
      if self.budget < n:   # every attack asks about each target example at least once
        raise UserError(f"--budget {self.budget} cannot pay for one query per target example ({n}); the score "
                        f"attacks need {n} per view and population point, the label-only attacks more")
    spec = defences.check(self.defence, self.strength, threat=defences.MEMBERSHIP)
    if spec.strength is not None and self.strength is None:
      raise UserError(f"--defence={self.defence} needs a strength ({spec.strength}, {spec.valid_text})")
    if "members" in spec.needs:
      integer(self.num_defence_examples, "num_defence_examples", at_most=self.game.num_examples // 2)
      if self.game.dp is not None:
        raise UserError(f"{self.defence} trains on the target's members outside DP-SGD, so the DP guarantee would "
                        f"not cover what it releases; run it without --dp_epsilon")
    return self


@wd.releases
def run(cfg: MiaRun, *, workdir: str, data_dir: Optional[str] = None, run_config: Optional[dict] = None,
        endpoint=None, log: Callable = print) -> dict:
  """The whole membership experiment into `workdir`; returns results.json's content.

  With `endpoint` (a `serve.Endpoint`) the attacker queries the target served there (`experiments/serve.py
  --victim=<this workdir>`, behind the server's own defence); the game's models (the target's membership, the
  shadows) come from the workdir as always, and the utility figures are the undefended target's.
  """
  t_start = time.time()
  wd.require(workdir)
  cfg.validate()
  game, audit = cfg.game, cfg.membership
  victim_url = endpoint.url if endpoint is not None else None
  if victim_url and cfg.defence != "none":
    raise UserError(f"--defence={cfg.defence} defends the in-process target; a served target answers with its own "
                    f"defence (experiments/serve.py --defence)")
  strength = cfg.strength if defences.get(cfg.defence).strength is not None else None
  n = game.num_examples
  ds = G.load_data(game, data_dir)
  score_names, query_names = M.split(audit.attacks)
  if M.needs_population(score_names):
    G.population_points(ds, ds.x_train[:n], audit.num_population, audit.population)
  if "members" in defences.get(cfg.defence).needs and cfg.num_defence_examples > len(ds.x_test):
    raise UserError(f"--num_defence_examples must lie in [1, {min(n // 2, len(ds.x_test))}], got "
                    f"{cfg.num_defence_examples}")
  recipe = G.dp_recipe(game)   # an unreachable epsilon fails here, before anything is written
  # The workdir holds the trained game: other attacks and defences against it are reruns of this workdir.
  record = dict(run_config or {}, game=configs.as_dict(game), run=configs.as_dict(cfg))
  hosts.agree("mia", record)   # a multi-process launch: one config on every process, before anything is written
  hosts.on_writer("the workdir's claim", lambda: wd.claim(workdir, "mia", record, identity=("game",)))
  log(f"mia: {game.arch} on {game.dataset}, N = {n} (target on {n // 2}), {game.num_shadows} shadows, "
      f"{game.train.num_epochs} epochs; attacks {', '.join(audit.attacks)}; defence {cfg.defence}"
      + (f"; DP-SGD to epsilon {game.dp.epsilon:g}" if game.dp is not None else ""))
  trained = G.setup(game, ds, workdir, recipe=recipe, log=log)
  if trained is None:   # another process of a multi-process launch: its models are trained and checkpointed
    return {}
  t_train = time.time() - t_start
  x, y, model = trained.x, trained.y, trained.model
  target_keep, target_vars = trained.target_keep, trained.target_variables

  # The defender: the target's defence, and our own (undefended) view of what it costs.
  root = jax.random.key(game.seed)
  n_test = min(len(ds.x_test), cfg.num_test)
  xt, yt = ds.x_test[:n_test], ds.y_test[:n_test]
  m = cfg.num_defence_examples
  # The defender's non-members are test images: disjoint from the evaluated non-members (training split).
  kit = defences.assemble([cfg.defence], model, streams.branch(root, streams.DEFENDER), variables=target_vars,
                          input_shape=ds.image_shape, members=x[target_keep][:m], nonmembers=ds.x_test[-m:])
  d = defences.build(cfg.defence, strength, **kit._asdict())
  service = Service.from_model(model, target_vars, input_shape=ds.image_shape, defence=d)
  if victim_url:
    from mlpriv_jax import serve
    victim = serve.connect(endpoint, expect=(ds.image_shape, model.num_classes), log=log)
  else:   # the attacker's account
    victim = Victim.of(service, budget=cfg.budget, key=streams.account(root, streams.MEMBERSHIP_CLIENT))
  evaluator = Victim.of(service, key=streams.account(root, streams.EVALUATOR_CLIENT))   # ours, not the attacker's

  # The attacker: its kit, then every attack against the target, then the judge.
  key = streams.derive(streams.branch(root, streams.ATTACKER), streams.MEMBERSHIP)
  attacker = G.prepare(trained, audit, key)
  if score_names:
    pop = len(attacker.population[0][0]) if attacker.population is not None else 0
    check_budget(victim, len(attacker.views) * (n + pop), "the score attacks' queries")
  t0 = time.time()
  scores = G.attack(attacker, victim, key, audit.options)
  t_attacks = time.time() - t0
  audit_delta = game.dp.delta if game.dp is not None else G.DEFAULT_AUDIT_DELTA
  rows = G.judge(scores, target_keep, fprs=audit.fprs, num_bootstrap=audit.num_bootstrap, audit_delta=audit_delta,
                 key=streams.derive(streams.branch(root, streams.EVALUATION), streams.BOOTSTRAP), seed=game.seed,
                 defence=cfg.defence, strength=strength, data_source=ds.source)
  by_attack = results.summary(rows)
  for name in audit.attacks:
    log(G.log_line(name, by_attack[name], audit.fprs))

  # What the defence changed on the evaluated queries (identity view): L1 distortion, labels flipped.
  released = G.released_views(evaluator, M.query_views(x, mirror=False)[:1])[:, 0]   # f32[N, C], our measurement
  released_test = query_all(evaluator, xt, 500)
  test_logits = train.predict(model, target_vars, xt)
  clean = np.asarray(jax.nn.softmax(train.predict(model, target_vars, x)))
  l1 = np.abs(released - clean).sum(-1)
  target = dict(
      target_train_accuracy=float((released[target_keep].argmax(-1) == y[target_keep]).mean()),
      target_test_accuracy=float((released_test.argmax(-1) == yt).mean()),
      target_test_accuracy_undefended=float((np.asarray(test_logits).argmax(-1) == yt).mean()),
      shadow_train_accuracy=_shadow_train_accuracy(trained),
      defence_mean_l1=float(l1.mean()), defence_changed_fraction=float((l1 > 1e-6).mean()),
      defence_label_flips=int((released.argmax(-1) != clean.argmax(-1)).sum()),
      queries_used=victim.queries_used)
  if kit.memguard_params is not None:  # MemGuard's own view: its classifier g before and after the noise
    for what, p in (("clean", clean), ("released", released)):
      target[f"memguard_classifier_auc_{what}"] = M.membership_report(
          np.asarray(defences.defence_classifier_score(kit.memguard_params, p)), target_keep, num_bootstrap=0)["auc"]
    log(f"  MemGuard's classifier g: AUC {target['memguard_classifier_auc_clean']:.4f} on clean outputs, "
        f"{target['memguard_classifier_auc_released']:.4f} on released ones")
  rows += [results.row(metric=k, value=v, defence=cfg.defence, strength=strength, seed=game.seed,
                       data_source=ds.source) for k, v in target.items()]
  seconds = dict(train=t_train, attacks=t_attacks, total=time.time() - t_start)

  res = dict(
      member_is_positive=True, dataset=ds.name, arch=model.name, num_examples=n,
      num_members=int(target_keep.sum()), num_shadows=game.num_shadows, num_views=int(len(attacker.views)),
      num_population=int(len(attacker.population[1])) if attacker.population is not None else 0,
      population=audit.population if attacker.population is not None else None, budget=cfg.budget,
      dp=trained.dp, audit_delta=audit_delta, defence=d.name, strength=strength, victim_url=victim_url,
      seconds=seconds, settings=G.settings_of(scores), config=dict(run_config or {}, **configs.as_dict(cfg)),
      attacks={name: by_attack[name] for name in audit.attacks},
      target=results.summary([r for r in rows if not r["attack"]], by=()))
  write_json(os.path.join(workdir, "results.json"), res)
  results.write_jsonl(os.path.join(workdir, "results.jsonl"), rows)
  extras = {k: v for sc in scores.values() for k, v in sc.extras.items() if k.startswith("phi_")}
  subset_index = {f"index_{k}": scores[k].index for k in query_names}   # the candidates a query attack scored
  atomic_write(os.path.join(workdir, "scores.npz"),
               lambda f: np.savez(f, is_member=target_keep, labels=y, shadow_keep=trained.shadow_keep, **extras,
                                  **subset_index, **{f"score_{k}": sc.scores for k, sc in scores.items()}))
  curves = {}
  for name, sc in scores.items():
    fpr, tpr = M.roc_curve(sc.scores, target_keep[sc.index])
    curves[name] = (fpr, tpr, by_attack[name]["auc"])
  plots.roc_loglog(os.path.join(workdir, "roc.png"), curves,
                   f"{model.name} on {ds.name}, {game.num_shadows} shadows, defence {d.name} (member = positive)")
  log(f"target train acc {target['target_train_accuracy']:.4f}, test acc {target['target_test_accuracy']:.4f} "
      f"(undefended {target['target_test_accuracy_undefended']:.4f}); wall {time.time() - t_start:.0f} s; "
      f"results in {workdir}")
  return res


def _shadow_train_accuracy(trained: G.TrainedGame) -> float:
  k = trained.shadow_keep.shape[0]
  logits = np.asarray(train.predict(trained.model, trained.shadow_variables, trained.x, num_models=k))
  return float(np.mean([(logits[j, trained.shadow_keep[j]].argmax(-1) == trained.y[trained.shadow_keep[j]]).mean()
                        for j in range(k)]))
