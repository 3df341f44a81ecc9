r"""Membership inference against a target behind the victim's query door, with an optional defence.

  python experiments/mia.py --preset=smoke --workdir=runs/mia                      # embedded data, CPU
  python experiments/mia.py --preset=smoke --defence=memguard --epsilon=1 --workdir=runs/mia_mg
  python experiments/mia.py --preset=cpu --data_dir=../shared/data --workdir=runs/mia_cpu
  python experiments/mia.py --preset=paper --workdir=runs/mia_paper                # GPU: LiRA's setting

Member = positive, everywhere: every score is higher = member.

Protocol (LiRA's, Carlini et al. 2022): a universe of N training examples; the
target trains on a random half; K shadow models of the same architecture and
recipe train on balanced keep masks (each example in exactly half of them), all
K + 1 at once with `train_k` (saved: keep.npy, row 0 the target). The target
answers through `Victim.query` with the chosen defence; the attacks score all N
examples and are judged against the target's membership:
  shokri        per-class attack MLPs on the shadows' in/out outputs (Shokri et al. 2017)
  loss, confidence, entropy, mentropy
                metric scores with class-dependent thresholds fitted on the shadows
                (Yeom et al. 2018; Song & Mittal 2021)
  lira_online, lira_offline
                LiRA over the augmented views (identity, mirror; --shifts adds shifts)
MemGuard's defence classifier is trained by the defender on the target's members
against held-out test images (disjoint from the evaluated non-members).

Writes results.json (per attack: auc, balanced_accuracy, advantage, tpr_at_fpr
with bootstrap intervals; the target's train and test accuracy, released and
undefended), scores.npz (per-example scores, labels, membership) and roc.png
(log-log ROC). A rerun with the same --workdir resumes the training.

Presets: smoke (shapes10, 1,000 examples, cnn_small, 8 shadows, ~2 min on 2 CPU
cores), cpu (4,000 CIFAR-10 examples, cnn_small, 16 shadows), paper (LiRA:
WRN-28-2, 256 shadows, each on half of CIFAR-10's 50,000, 100 epochs; GPU).
"""

import os
import sys
import time

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import common  # noqa: E402

ATTACKS = ("shokri", "loss", "confidence", "entropy", "mentropy", "lira_online", "lira_offline")
METRIC_ATTACKS = ("loss", "confidence", "entropy", "mentropy")
PRESETS = {
    "smoke": dict(dataset="shapes10", arch="cnn_small", num_examples=1000, num_shadows=8, num_epochs=25,
                  batch_size=64, learning_rate=0.05, weight_decay=5e-4, augment=False, num_defence_examples=500,
                  chunk_size=0),
    "cpu": dict(dataset="cifar10_jpeg", arch="cnn_small", num_examples=4000, num_shadows=16, num_epochs=20,
                batch_size=128, learning_rate=0.05, weight_decay=5e-4, augment=True, num_defence_examples=1000,
                chunk_size=0),
    # LiRA's train.py: wrn28-2, lr 0.1 cosine, batch 256, wd 5e-4, momentum 0.9, crop+flip (algorithms.md s.6).
    "paper": dict(dataset="cifar10", arch="wrn28_2", num_examples=50000, num_shadows=256, num_epochs=100,
                  batch_size=256, learning_rate=0.1, weight_decay=5e-4, augment=True, num_defence_examples=5000,
                  chunk_size=16),  # bounds GPU memory; 257 vmapped WRN-28-2 would not fit (size unmeasured: no GPU yet)
}

flags.DEFINE_enum("preset", "smoke", list(PRESETS), "Scale of the run; explicit flags override it.")
flags.DEFINE_string("workdir", None, "Output folder; a rerun resumes the training from its checkpoints.")
flags.DEFINE_string("data_dir", None, "Folder with <dataset>.npz files (else $MLPRIV_DATA_DIR, else TFDS).")
flags.DEFINE_string("dataset", None, "Target data (shapes10, cifar10, cifar10_jpeg, cifar100, ...).")
flags.DEFINE_string("arch", None, "Architecture of the target and of every shadow model.")
flags.DEFINE_list("attack", ["all"], f"Attacks, comma-separated, or 'all': {', '.join(ATTACKS)}.")
flags.DEFINE_integer("num_examples", None, "Universe size N: the target trains on N/2, the rest are non-members.")
flags.DEFINE_integer("num_shadows", None, "Shadow models K (the target is trained with them, K + 1 at once).")
flags.DEFINE_integer("num_epochs", None, "Epochs of the target and the shadows (same recipe).")
flags.DEFINE_integer("batch_size", None, "Batch size.")
flags.DEFINE_float("learning_rate", None, "Peak learning rate (cosine schedule, SGD momentum 0.9).")
flags.DEFINE_float("weight_decay", None, "Weight decay.")
flags.DEFINE_boolean("augment", None, "Crop + flip while training.")
flags.DEFINE_integer("chunk_size", None, "Models trained per compiled chunk (0: train_k's default).")
flags.DEFINE_string("defence", "none", "The target's output defence (none, memguard, top1, round2, label, ...).")
flags.DEFINE_float("epsilon", 1.0, "Strength of the defence, where it takes one (MemGuard: expected L1 budget).")
flags.DEFINE_integer("num_defence_examples", None, "MemGuard: members and held-out images for its classifier.")
flags.DEFINE_boolean("fix_variance", None, "LiRA: one global std (default: when fewer than 64 shadows).")
flags.DEFINE_boolean("mirror", None, "LiRA: also query the horizontal flip (default: if training flipped).")
flags.DEFINE_integer("shifts", 0, "LiRA: also query shifts of up to this many pixels (reflect padding).")
flags.DEFINE_enum("shokri_features", "probs", ["probs", "log_probs", "sorted_probs"],
                  "Shokri: the attack models' input (sorted_probs: MemGuard's own evaluation, Salem et al.).")
flags.DEFINE_list("fprs", ["0.001", "0.01"], "FPRs at which the TPR is reported, each in (0, 1).")
flags.DEFINE_integer("num_test", 1000, "Test images for the target's test accuracy (released and undefended).")
flags.DEFINE_integer("num_bootstrap", 200, "Bootstrap resamples for the confidence intervals.")
flags.DEFINE_integer("seed", 0, "Root seed.")
FLAGS = flags.FLAGS

STREAM_TARGET_HALF, STREAM_MEMGUARD, STREAM_SHOKRI, STREAM_VICTIM = 2, 3, 4, 5


def setting(name):
  return common.setting(FLAGS, PRESETS, name)


def parse_attacks(names):
  names = [n.strip() for n in names if n.strip()]
  if names == ["all"]:
    return list(ATTACKS)
  unknown = [n for n in names if n not in ATTACKS]
  if unknown or not names:
    raise ValueError(f"unknown attack {', '.join(unknown) or '(none given)'}; known: {', '.join(ATTACKS)}, all")
  return names


def plot_roc(path, curves, title):
  """Log-log ROC curves (LiRA's Fig. style) as a PNG; curves: {name: (fpr, tpr, auc)}."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from mlpriv_jax.utils import atomic_write
  fig, ax = plt.subplots(figsize=(4.5, 4.5))
  lo = 1e-4
  for name, (fpr, tpr, auc) in curves.items():
    ax.plot(fpr.clip(lo), tpr.clip(lo), label=f"{name} (AUC {auc:.3f})")
  ax.plot([lo, 1], [lo, 1], "k--", lw=0.8)
  ax.set(xscale="log", yscale="log", xlim=(lo, 1), ylim=(lo, 1), xlabel="FPR (non-members called members)",
         ylabel="TPR (members found)")
  ax.set_title(title, fontsize=8)
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
  plt.close(fig)


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp
  import numpy as np

  from mlpriv_jax import data, defences, models, train
  from mlpriv_jax.attacks import membership as M
  from mlpriv_jax.utils import atomic_write, write_json
  from mlpriv_jax.victim import Victim

  t_start = time.time()
  if not FLAGS.workdir:
    raise ValueError("--workdir is required")
  attacks = parse_attacks(FLAGS.attack)
  fprs = M.check_fprs([float(f) for f in FLAGS.fprs])
  num_shadows, n = setting("num_shadows"), setting("num_examples")
  if num_shadows < 2:
    raise ValueError(f"--num_shadows {num_shadows}: {attacks[0]} needs at least 2 shadow models, so that every "
                     f"example has shadows trained with it (in) and without it (out)")
  if n < 4 or n % 2:
    raise ValueError(f"--num_examples must be an even number >= 4 (half members, half not), got {n}")
  if FLAGS.shifts < 0 or FLAGS.num_bootstrap < 0:
    raise ValueError(f"--shifts and --num_bootstrap must be >= 0, got {FLAGS.shifts}, {FLAGS.num_bootstrap}")
  defences.check_name(FLAGS.defence)
  if FLAGS.defence in ("mad", "mad_argmax", "misinfo"):
    raise ValueError(f"{FLAGS.defence} defends against extraction; membership defences here: memguard and the "
                     f"output baselines (top1, top3, round1, round2, label, gaussian, laplace, revsig)")
  if not defences.epsilon_in_range(FLAGS.defence, FLAGS.epsilon):
    raise ValueError(f"--epsilon {FLAGS.epsilon} is out of range for {FLAGS.defence}")

  ds = data.load_dataset(setting("dataset"), FLAGS.data_dir, seed=FLAGS.seed)
  if n > len(ds.x_train):
    raise ValueError(f"--num_examples {n} is more than {ds.name}'s {len(ds.x_train)} training examples")
  n_def = setting("num_defence_examples")
  if FLAGS.defence == "memguard" and not 1 <= n_def <= min(n // 2, len(ds.x_test)):
    raise ValueError(f"--num_defence_examples must lie in [1, {min(n // 2, len(ds.x_test))}], got {n_def}")
  x, y = ds.x_train[:n], ds.y_train[:n]
  mean, std = data.channel_stats(x)
  model = models.get_model(setting("arch"), ds.num_classes, mean=mean, std=std)
  config = train.TrainConfig(num_epochs=setting("num_epochs"), batch_size=setting("batch_size"),
                             learning_rate=setting("learning_rate"), momentum=0.9, nesterov=True,
                             weight_decay=setting("weight_decay"), schedule="cosine", augment=setting("augment"),
                             warmup_epochs=min(1.0, setting("num_epochs") / 10)).validate()
  fix_variance = FLAGS.fix_variance if FLAGS.fix_variance is not None else num_shadows < 64

  key = jax.random.key(FLAGS.seed)
  target_keep = np.zeros(n, bool)
  target_keep[np.asarray(jax.random.permutation(jax.random.fold_in(key, STREAM_TARGET_HALF), n))[: n // 2]] = True
  shadow_keep = np.asarray(train.balanced_keep(jax.random.fold_in(key, common.STREAM_KEEP), num_shadows, n))
  keep = np.concatenate([target_keep[None], shadow_keep])  # row 0: the target

  os.makedirs(FLAGS.workdir, exist_ok=True)
  common.claim_workdir(FLAGS.workdir, dict(dataset=ds.name, arch=model.name, num_examples=n, num_shadows=num_shadows,
                                           config=repr(config), seed=FLAGS.seed, preset=FLAGS.preset),
                       keys=("dataset", "arch", "num_examples", "num_shadows", "config", "seed"))
  common.save_npy(os.path.join(FLAGS.workdir, "keep.npy"), keep)
  print(f"mia: {model.name} on {ds.name}, N = {n} (target on {n // 2}), {num_shadows} shadows, "
        f"{config.num_epochs} epochs; attacks {', '.join(attacks)}; defence {FLAGS.defence}", flush=True)

  res = train.train_k(model, config, x, y, keep, jax.random.fold_in(key, common.STREAM_TRAIN),
                      chunk_size=setting("chunk_size") or None,
                      workdir=os.path.join(FLAGS.workdir, "models"), meta=dict(dataset=ds.name),
                      on_epoch_end=lambda r: print(f"  epoch {r['epoch']} models {r['models']} "
                                                   f"loss {r['train_loss']:.3f}", flush=True))
  t_train = time.time() - t_start
  variables = train.variables_of(res.state)
  target_vars = jax.tree.map(lambda v: v[0], variables)

  # The target's own (undefended) view, for the defender and for the accuracy it gives up.
  n_test = min(len(ds.x_test), FLAGS.num_test)
  xt, yt = ds.x_test[:n_test], ds.y_test[:n_test]
  test_logits = train.predict(model, target_vars, xt)
  memguard_params = None
  if FLAGS.defence == "memguard":
    # The defender's non-members are test images: disjoint from the evaluated non-members (training split).
    held = ds.x_test[-n_def:]
    members = x[target_keep][:n_def]
    memguard_params = defences.train_defence_classifier(
        jax.random.fold_in(key, STREAM_MEMGUARD), jax.nn.softmax(train.predict(model, target_vars, members)),
        jax.nn.softmax(train.predict(model, target_vars, held)))
  defence = defences.make_defence(FLAGS.defence, FLAGS.epsilon, memguard_params=memguard_params)
  victim = Victim(model, target_vars, defence=defence, key=jax.random.fold_in(key, STREAM_VICTIM),
                  input_shape=ds.image_shape)

  # Query the views the models trained on: a mirror view of models that never saw flips only adds noise
  # (measured on the smoke preset: LiRA online TPR at 1% FPR 0.07 with it, 0.25 without).
  mirror = FLAGS.mirror if FLAGS.mirror is not None else config.augment
  views = M.query_views(x, mirror=mirror, shifts=FLAGS.shifts)  # u8[A, N, H, W, C]
  asked = views if any(a.startswith("lira") for a in attacks) else views[:1]  # the others use the identity
  t0 = time.time()
  released = np.stack([np.concatenate([victim.query(v[s:s + 500]) for s in range(0, n, 500)])
                       for v in asked], axis=1)  # f32[N, A, C], through the defence
  released_test = np.concatenate([victim.query(xt[s:s + 500]) for s in range(0, n_test, 500)])
  t_query = time.time() - t0
  shadow_vars = jax.tree.map(lambda v: v[1:], variables)
  shadow_logits = jnp.stack([train.predict(model, shadow_vars, v, num_models=num_shadows) for v in asked],
                            axis=2)  # f32[K, N, A, C]
  shadow_logp = jax.nn.log_softmax(shadow_logits)
  target_logp = M.released_log_probs(released)

  scores, out, extra = {}, {}, {}
  t0 = time.time()
  for name in attacks:
    if name == "shokri":
      probs, labels, is_in = M.attack_records(jnp.exp(shadow_logp[:, :, 0]), y, shadow_keep)
      attack = M.train_shokri(jax.random.fold_in(key, STREAM_SHOKRI), probs, labels, is_in, ds.num_classes,
                              features=FLAGS.shokri_features)
      s = M.shokri_score(attack, released[:, 0], y)
    elif name in METRIC_ATTACKS:
      signal = M.SIGNALS[name]
      tau = M.class_thresholds(np.asarray(signal(shadow_logp[:, :, 0], y[None])).ravel(), np.tile(y, num_shadows),
                               shadow_keep.ravel(), ds.num_classes)
      s = M.calibrated_score(signal(target_logp[:, 0], y), y, tau)
    else:
      phi_target = M.logit_scaled_confidence(target_logp, y[:, None])        # [N, A]
      phi_shadow = M.logit_scaled_confidence(shadow_logp, y[None, :, None])  # [K, N, A]
      extra.update(phi_target=np.asarray(phi_target), phi_shadow=np.asarray(phi_shadow))
      fn = M.lira_online if name == "lira_online" else M.lira_offline
      s = fn(phi_target, phi_shadow, shadow_keep, fix_variance=fix_variance)
    scores[name] = np.asarray(s, np.float64)
    out[name] = M.membership_report(scores[name], target_keep, fprs=fprs, num_bootstrap=FLAGS.num_bootstrap,
                                    seed=FLAGS.seed)
    print(f"  {name:13s} AUC {out[name]['auc']:.4f}  balanced acc {out[name]['balanced_accuracy']:.4f}  " +
          "  ".join(f"TPR@{f} {v:.4f}" for f, v in out[name]["tpr_at_fpr"].items()), flush=True)

  train_acc = float((released[target_keep, 0].argmax(-1) == y[target_keep]).mean())
  # What the defence changed on the evaluated queries (identity view): L1 distortion, labels flipped.
  clean = np.asarray(jax.nn.softmax(train.predict(model, target_vars, x)))
  l1 = np.abs(released[:, 0] - clean).sum(-1)
  g_auc = {}
  if memguard_params is not None:  # MemGuard's own view: its classifier g before and after the noise
    for what, p in (("clean", clean), ("released", released[:, 0])):
      g_auc[what] = M.membership_report(np.asarray(defences.defence_classifier_score(memguard_params, p)),
                                        target_keep, num_bootstrap=0)["auc"]
    print(f"  MemGuard's classifier g: AUC {g_auc['clean']:.4f} on clean outputs, {g_auc['released']:.4f} on "
          f"released ones", flush=True)
  results = dict(
      member_is_positive=True, dataset=ds.name, arch=model.name, num_examples=n, num_members=int(target_keep.sum()),
      num_shadows=num_shadows, num_views=int(released.shape[1]), fix_variance=fix_variance,
      defence=defence.name, epsilon=FLAGS.epsilon if defences.takes_epsilon(FLAGS.defence) else None,
      target_train_accuracy=train_acc,
      defence_mean_l1=float(l1.mean()), defence_changed_fraction=float((l1 > 1e-6).mean()),
      defence_label_flips=int((released[:, 0].argmax(-1) != clean.argmax(-1)).sum()),
      memguard_classifier_auc=g_auc or None,
      target_test_accuracy=float((released_test.argmax(-1) == yt).mean()),
      target_test_accuracy_undefended=float((np.asarray(test_logits).argmax(-1) == yt).mean()),
      shadow_train_accuracy=float(np.mean([(np.asarray(shadow_logits[k, shadow_keep[k], 0]).argmax(-1) ==
                                            y[shadow_keep[k]]).mean() for k in range(num_shadows)])),
      attacks=out, seconds=dict(train=t_train, queries=t_query, attacks=time.time() - t0,
                                total=time.time() - t_start),
      config=dict(preset=FLAGS.preset, **{k: getattr(config, k) for k in ("num_epochs", "batch_size",
                                                                          "learning_rate", "weight_decay",
                                                                          "augment")}))
  write_json(os.path.join(FLAGS.workdir, "results.json"), results)
  atomic_write(os.path.join(FLAGS.workdir, "scores.npz"),
               lambda f: np.savez(f, is_member=target_keep, labels=y, shadow_keep=shadow_keep, **extra,
                                  **{f"score_{k}": v for k, v in scores.items()}))
  curves = {}
  for name in attacks:
    fpr, tpr = M.roc_curve(scores[name], target_keep)
    curves[name] = (fpr, tpr, out[name]["auc"])
  plot_roc(os.path.join(FLAGS.workdir, "roc.png"), curves,
           f"{model.name} on {ds.name}, {num_shadows} shadows, defence {defence.name} (member = positive)")
  print(f"target train acc {train_acc:.4f}, test acc {results['target_test_accuracy']:.4f} "
        f"(undefended {results['target_test_accuracy_undefended']:.4f}); wall {time.time() - t_start:.0f} s; "
        f"results in {FLAGS.workdir}", flush=True)


if __name__ == "__main__":
  common.run(main)
