"""Membership inference against a target behind an oracle (what experiments/mia.py runs).

Protocol (LiRA's, Carlini et al. 2022): a universe of N training examples; the target trains on a random half;
K shadow models of the same architecture and recipe train on balanced keep masks (each example in exactly half
of them), all K + 1 at once with `train_k` (keep.npy, row 0 the target). The target answers through a `Victim`
with the chosen defence; every registered attack scores all N examples and is judged against the target's
membership. MemGuard's defence classifier is trained by the defender on the target's members against held-out
test images (disjoint from the evaluated non-members).

The pieces (`membership_keep`, `train_models`, `released_views`, `shadow_view_logits`, `score_attacks`) are
shared with the arena, which trains the shadows once for every defence it puts in front of the target.
"""

import dataclasses
import os
import time
from typing import Callable, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mlpriv_jax import data, defences, models, plots, results, train
from mlpriv_jax.attacks import membership as M
from mlpriv_jax.errors import UserError
from mlpriv_jax.lab import workdir as wd
from mlpriv_jax.lab.training import STREAM_KEEP, STREAM_TRAIN, model_meta
from mlpriv_jax.oracle import Oracle, Victim, query_all
from mlpriv_jax.utils import atomic_write, write_json

STREAM_TARGET_HALF, STREAM_MEMGUARD, STREAM_SHOKRI, STREAM_VICTIM = 2, 3, 4, 5


def membership_keep(key, num_examples: int, num_shadows: int):
  """(target_keep bool[N], shadow_keep bool[K, N]): the target on a random half, the shadows balanced."""
  target_keep = np.zeros(num_examples, bool)
  half = np.asarray(jax.random.permutation(jax.random.fold_in(key, STREAM_TARGET_HALF), num_examples))
  target_keep[half[: num_examples // 2]] = True
  shadow_keep = np.asarray(train.balanced_keep(jax.random.fold_in(key, STREAM_KEEP), num_shadows, num_examples))
  return target_keep, shadow_keep


def train_models(model, config, x, y, keep, key, *, workdir: Optional[str], chunk_size: Optional[int] = None,
                 meta: Optional[dict] = None, log: Callable = print):
  """The K + 1 models of the game, trained at once (resumes from `workdir`); variables stacked on axis 0."""
  res = train.train_k(model, config, x, y, keep, jax.random.fold_in(key, STREAM_TRAIN), chunk_size=chunk_size,
                      workdir=workdir, meta=meta,
                      on_epoch_end=lambda r: log(f"  epoch {r['epoch']} models {r['models']} loss {r['train_loss']:.3f}"))
  return train.variables_of(res.state)


def released_views(oracle: Oracle, views, batch_size: int = 500) -> np.ndarray:
  """The oracle's answers for every view, f32[N, A, C] (views: u8[A, N, H, W, C])."""
  return np.stack([query_all(oracle, v, batch_size) for v in views], axis=1)


def shadow_view_logits(model, shadow_variables, views, num_shadows: int) -> np.ndarray:
  """The shadows' logits for every view, f32[K, N, A, C]."""
  return np.asarray(jnp.stack([train.predict(model, shadow_variables, v, num_models=num_shadows) for v in views],
                              axis=2))


def score_attacks(names: Sequence[str], inputs: M.ScoreInputs, key, *, options: Optional[dict] = None,
                  log: Callable = print) -> Dict[str, tuple]:
  """{name: (scores f64[N], extras)} for the score attacks `names` (options[name]: that attack's keywords)."""
  out = {}
  for name in names:
    out[name] = M.score(name, inputs, jax.random.fold_in(key, STREAM_SHOKRI), **(options or {}).get(name, {}))
  return out


@dataclasses.dataclass(frozen=True)
class MembershipGame:
  """The data, models and recipe of one run: what the attacker's shadows share with the target."""
  dataset: str
  arch: str
  num_examples: int
  num_shadows: int
  config: train.TrainConfig
  seed: int = 0
  chunk_size: Optional[int] = None


def check_game(game: MembershipGame, attacks: Sequence[str]) -> None:
  M.check_shadows(attacks, game.num_shadows)
  n = game.num_examples
  if n < 4 or n % 2:
    raise UserError(f"--num_examples must be an even number >= 4 (half members, half not), got {n}")
  models.canonical_name(game.arch)
  game.config.validate()


def load_game_data(game: MembershipGame, data_dir: Optional[str] = None) -> data.Dataset:
  ds = data.load_dataset(game.dataset, data_dir, seed=game.seed)
  if game.num_examples > len(ds.x_train):
    raise UserError(f"--num_examples {game.num_examples} is more than {ds.name}'s {len(ds.x_train)} training "
                    f"examples")
  return ds


def setup(game: MembershipGame, ds: data.Dataset, workdir: str, *, log: Callable = print):
  """Trains (or resumes) the target and shadows on `ds`; writes keep.npy and the target artifact.

  Returns dict(ds, x, y, model, variables (K + 1 stacked), target_keep, shadow_keep, target_variables).
  """
  n = game.num_examples
  x, y = ds.x_train[:n], ds.y_train[:n]
  mean, std = data.channel_stats(x)
  model = models.get_model(game.arch, ds.num_classes, mean=mean, std=std)
  key = jax.random.key(game.seed)
  target_keep, shadow_keep = membership_keep(key, n, game.num_shadows)
  keep = np.concatenate([target_keep[None], shadow_keep])  # row 0: the target
  wd.save_npy(os.path.join(workdir, "keep.npy"), keep)
  variables = train_models(model, game.config, x, y, keep, key, workdir=os.path.join(workdir, "models"),
                           chunk_size=game.chunk_size, meta=dict(dataset=ds.name), log=log)
  target_vars = jax.tree.map(lambda v: v[0], variables)
  target_dir = os.path.join(workdir, "target")
  if not os.path.exists(os.path.join(target_dir, models.artifact.FILE)):
    test_acc = float(train.evaluate(model, target_vars, ds.x_test, ds.y_test))
    meta = model_meta(ds, game.config, seed=game.seed, num_train=int(target_keep.sum()), test_accuracy=test_acc,
                      role="membership target (row 0 of keep.npy)")
    meta["data"]["member_indices"] = np.flatnonzero(target_keep).tolist()
    models.save_model(target_dir, model, target_vars, input_shape=ds.image_shape, meta=meta)
  return dict(ds=ds, x=x, y=y, model=model, variables=variables, target_vars=target_vars, target_keep=target_keep,
              shadow_keep=shadow_keep)


def run(*, game: MembershipGame, workdir: str, attacks: Sequence[str] = ("all",), defence: str = "none",
        strength: Optional[float] = None, data_dir: Optional[str] = None, num_defence_examples: int = 500,
        fix_variance: Optional[bool] = None, mirror: Optional[bool] = None, shifts: int = 0,
        shokri_features: str = "probs", fprs: Sequence[float] = (0.001, 0.01), num_test: int = 1000,
        num_bootstrap: int = 200, run_config: Optional[dict] = None, log: Callable = print) -> dict:
  """The whole membership experiment into `workdir`; returns results.json's content."""
  t_start = time.time()
  wd.require(workdir)
  attacks = M.parse(attacks)
  fprs = M.check_fprs(fprs)
  check_game(game, attacks)
  if shifts < 0 or num_bootstrap < 0:
    raise UserError(f"--shifts and --num_bootstrap must be >= 0, got {shifts}, {num_bootstrap}")
  dspec = defences.check(defence, strength, threat=defences.MEMBERSHIP)
  strength = strength if dspec.strength is not None else None
  n = game.num_examples
  ds = load_game_data(game, data_dir)
  if "members" in dspec.needs and not 1 <= num_defence_examples <= min(n // 2, len(ds.x_test)):
    raise UserError(f"--num_defence_examples must lie in [1, {min(n // 2, len(ds.x_test))}], got "
                    f"{num_defence_examples}")
  wd.claim(workdir, dict(run_config or {}, dataset=game.dataset, arch=models.canonical_name(game.arch),
                         num_examples=n, num_shadows=game.num_shadows, config=repr(game.config), seed=game.seed),
           keys=("dataset", "arch", "num_examples", "num_shadows", "config", "seed"))
  log(f"mia: {game.arch} on {game.dataset}, N = {n} (target on {n // 2}), {game.num_shadows} shadows, "
      f"{game.config.num_epochs} epochs; attacks {', '.join(attacks)}; defence {defence}")
  g = setup(game, ds, workdir, log=log)
  t_train = time.time() - t_start
  x, y, model = g["x"], g["y"], g["model"]
  target_keep, shadow_keep, target_vars = g["target_keep"], g["shadow_keep"], g["target_vars"]

  # The target's own (undefended) view, for the defender and for the accuracy it gives up.
  key = jax.random.key(game.seed)
  n_test = min(len(ds.x_test), num_test)
  xt, yt = ds.x_test[:n_test], ds.y_test[:n_test]
  test_logits = train.predict(model, target_vars, xt)
  guard = None
  if "members" in dspec.needs:
    # The defender's non-members are test images: disjoint from the evaluated non-members (training split).
    guard = defences.make_memguard_classifier(model, target_vars, x[target_keep][:num_defence_examples],
                                              ds.x_test[-num_defence_examples:], jax.random.fold_in(key, STREAM_MEMGUARD))
  d = defences.build(defence, strength, memguard_params=guard)
  victim = Victim(model, target_vars, defence=d, key=jax.random.fold_in(key, STREAM_VICTIM), input_shape=ds.image_shape)

  # Query the views the models trained on: a mirror view of models that never saw flips only adds noise
  # (measured on the smoke preset: LiRA online TPR at 1% FPR 0.07 with it, 0.25 without).
  mirror = game.config.augment if mirror is None else mirror
  views = M.query_views(x, mirror=mirror, shifts=shifts)  # u8[A, N, H, W, C]
  asked = views if M.views_needed(attacks) else views[:1]
  t0 = time.time()
  released = released_views(victim, asked)                  # f32[N, A, C], through the defence
  released_test = query_all(victim, xt, 500)
  t_query = time.time() - t0
  shadow_vars = jax.tree.map(lambda v: v[1:], g["variables"])
  shadow_logits = shadow_view_logits(model, shadow_vars, asked, game.num_shadows)
  inputs = M.ScoreInputs(released, y, shadow_logits, shadow_keep)

  t0 = time.time()
  options = dict(shokri=dict(features=shokri_features), lira_online=dict(fix_variance=fix_variance),
                 lira_offline=dict(fix_variance=fix_variance))
  scored = score_attacks(attacks, inputs, key, options=options, log=log)
  out, extra = {}, {}
  for name in attacks:
    s, ex = scored[name]
    extra.update({k: v for k, v in ex.items() if k.startswith("phi_")})
    out[name] = M.membership_report(s, target_keep, fprs=fprs, num_bootstrap=num_bootstrap, seed=game.seed)
    log(f"  {name:13s} AUC {out[name]['auc']:.4f}  balanced acc {out[name]['balanced_accuracy']:.4f}  " +
        "  ".join(f"TPR@{f} {v:.4f}" for f, v in out[name]["tpr_at_fpr"].items()))
  t_attacks = time.time() - t0

  train_acc = float((released[target_keep, 0].argmax(-1) == y[target_keep]).mean())
  # What the defence changed on the evaluated queries (identity view): L1 distortion, labels flipped.
  clean = np.asarray(jax.nn.softmax(train.predict(model, target_vars, x)))
  l1 = np.abs(released[:, 0] - clean).sum(-1)
  g_auc = {}
  if guard is not None:  # MemGuard's own view: its classifier g before and after the noise
    for what, p in (("clean", clean), ("released", released[:, 0])):
      g_auc[what] = M.membership_report(np.asarray(defences.defence_classifier_score(guard, p)), target_keep,
                                        num_bootstrap=0)["auc"]
    log(f"  MemGuard's classifier g: AUC {g_auc['clean']:.4f} on clean outputs, {g_auc['released']:.4f} on "
        f"released ones")
  fix = next((ex["fix_variance"] for _, ex in scored.values() if "fix_variance" in ex), fix_variance)
  res = dict(
      member_is_positive=True, dataset=ds.name, arch=model.name, num_examples=n, num_members=int(target_keep.sum()),
      num_shadows=game.num_shadows, num_views=int(released.shape[1]), fix_variance=fix,
      defence=d.name, epsilon=strength, target_train_accuracy=train_acc,
      defence_mean_l1=float(l1.mean()), defence_changed_fraction=float((l1 > 1e-6).mean()),
      defence_label_flips=int((released[:, 0].argmax(-1) != clean.argmax(-1)).sum()),
      memguard_classifier_auc=g_auc or None,
      target_test_accuracy=float((released_test.argmax(-1) == yt).mean()),
      target_test_accuracy_undefended=float((np.asarray(test_logits).argmax(-1) == yt).mean()),
      shadow_train_accuracy=float(np.mean([(shadow_logits[k, shadow_keep[k], 0].argmax(-1) == y[shadow_keep[k]]).mean()
                                           for k in range(game.num_shadows)])),
      attacks=out, seconds=dict(train=t_train, queries=t_query, attacks=t_attacks, total=time.time() - t_start),
      config=dict(run_config or {}, **{k: getattr(game.config, k) for k in ("num_epochs", "batch_size",
                                                                            "learning_rate", "weight_decay",
                                                                            "augment")}))
  write_json(os.path.join(workdir, "results.json"), res)
  results.write_jsonl(os.path.join(workdir, "results.jsonl"), report_rows(out, defence=defence, strength=strength,
                                                                          seed=game.seed, data_source=ds.source,
                                                                          queries=victim.queries_used))
  scores = {name: scored[name][0] for name in attacks}
  atomic_write(os.path.join(workdir, "scores.npz"),
               lambda f: np.savez(f, is_member=target_keep, labels=y, shadow_keep=shadow_keep, **extra,
                                  **{f"score_{k}": v for k, v in scores.items()}))
  curves = {}
  for name in attacks:
    fpr, tpr = M.roc_curve(scores[name], target_keep)
    curves[name] = (fpr, tpr, out[name]["auc"])
  plots.roc_loglog(os.path.join(workdir, "roc.png"), curves,
                   f"{model.name} on {ds.name}, {game.num_shadows} shadows, defence {d.name} (member = positive)")
  log(f"target train acc {train_acc:.4f}, test acc {res['target_test_accuracy']:.4f} "
      f"(undefended {res['target_test_accuracy_undefended']:.4f}); wall {time.time() - t_start:.0f} s; "
      f"results in {workdir}")
  return res


def report_rows(reports: dict, **common) -> list:
  """Flat result rows of membership reports {attack: membership_report(...)}."""
  rows = []
  for name, r in reports.items():
    iv = r.get("interval", {})
    for metric in ("auc", "balanced_accuracy", "advantage"):
      rows.append(results.row(metric=metric, value=r[metric], attack=name, ci=iv.get(metric), **common))
    for f, v in r["tpr_at_fpr"].items():
      rows.append(results.row(metric=f"tpr_at_fpr_{f}", value=v, attack=name, ci=iv.get("tpr_at_fpr", {}).get(f),
                              **common))
  return rows
