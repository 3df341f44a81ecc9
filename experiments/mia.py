r"""Membership inference against a target behind the victim's query door, with an optional defence.

  python experiments/mia.py --preset=smoke --workdir=runs/mia                      # embedded data, CPU
  python experiments/mia.py --preset=smoke --defence=memguard --epsilon=1 --workdir=runs/mia_mg
  python experiments/mia.py --preset=cpu --data_dir=../shared/data --workdir=runs/mia_cpu
  python experiments/mia.py --preset=paper --workdir=runs/mia_paper                # GPU: LiRA's setting

Member = positive, everywhere: every score is higher = member.

Protocol (LiRA's, Carlini et al. 2022; `mlpriv_jax.lab.membership`): a universe of N training examples; the
target trains on a random half; K shadow models of the same architecture and recipe train on balanced keep masks,
all K + 1 at once with `train_k` (keep.npy, row 0 the target). The target answers through `Victim.query` with the
chosen defence; every attack of the membership registry scores the N examples: shokri, loss, confidence,
entropy, mentropy, lira_online, lira_offline and rmia_online, rmia_offline (RMIA, Zarifzadeh et al. 2024, against
--num_population points of the test split) from the released outputs; the label-only attacks gap,
label_augmentation, label_noise and label_boundary (HopSkipJump) query the victim themselves, on
--label_examples random candidates, every query counted against --budget.

  python experiments/mia.py --preset=smoke --defence=label --attack=label_augmentation,gap,lira_online \
      --workdir=runs/mia_label

Writes the target's model artifact (target/), results.json (per attack: auc, balanced_accuracy, advantage,
tpr_at_fpr with bootstrap intervals; the target's train and test accuracy, released and undefended),
results.jsonl, scores.npz (per-example scores, labels, membership; index_<attack> for the candidates a query
attack scored) and roc.png (log-log ROC). Each attack's entry also holds its queries per example and settings. A
rerun with the same --workdir resumes the training.

DP-SGD (Abadi et al. 2016) with --dp_epsilon: the target and every shadow trained with one DP recipe (Poisson
sampling, clipping to --dp_clip_norm, noise calibrated by dp-accounting to --dp_epsilon at --dp_delta), with the
preset's DP recipe (a GroupNorm model); results.json's `dp` holds the accounted guarantee. Every attack's entry
holds `audit`: the epsilon its scores prove (Steinke, Nasr & Jagielski 2023's one-run bound, 95%; beside it the
Clopper-Pearson bound), for DP, undefended and output-defended targets alike.

  python experiments/mia.py --preset=smoke --dp_epsilon=8 --workdir=runs/mia_dp8

Presets (`mlpriv_jax.presets.mia`, each with its recipe, its DP recipe and its measured wall and figures):
smoke (shapes10, cnn_small, 8 shadows), cpu (4,000 CIFAR-10 examples, 16 shadows), paper (LiRA's WRN-28-2 with
256 shadows; a GPU).
RMIA's defaults (--rmia_preset=paper_softmax) are its authors' code's (gamma = 2, a = 0.3, 20% trimmed means, a
majority vote over views) with the true-class softmax at T = 1 for their Taylor soft margin, which needs logits; paper,
privacy_meter and leakpro name the published sets (docs/differences.md).
"""

import dataclasses
import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import common  # noqa: E402

common.define_base("mia", workdir_help="Output folder; a rerun resumes the training from its checkpoints.")
common.define_train_flags("the target and every shadow (one recipe)")
common.define_dp_flags("the target and every shadow (one recipe, as an attacker who knows it)")
common.define_host_flags()
common.define_endpoint_flags("Attack the target served at this URL (experiments/serve.py --victim=<this workdir>, "
                             "or the same model behind any Open Inference Protocol v2 server) instead of the "
                             "in-process one.")
flags.DEFINE_string("dataset", None, "Target data (shapes10, cifar10, cifar10_jpeg, cifar100, ...).")
flags.DEFINE_string("arch", None, "Architecture of the target and of every shadow model.")
flags.DEFINE_list("attack", None, "Attacks, comma-separated, or 'all' (the membership registry).")
flags.DEFINE_integer("num_examples", None, "Universe size N: the target trains on N/2, the rest are non-members.")
flags.DEFINE_integer("num_shadows", None, "Shadow models K (the target is trained with them, K + 1 at once).")
flags.DEFINE_integer("chunk_size", None, "Models trained per compiled chunk (0: train_k's default).")
flags.DEFINE_string("defence", "none", "The target's output defence (none, memguard, top1, round2, label, ...).")
flags.DEFINE_float("epsilon", 1.0, "Strength of the defence, where it takes one (MemGuard: expected L1 budget).")
flags.DEFINE_integer("num_defence_examples", None, "MemGuard: members and held-out images for its classifier.")
flags.DEFINE_boolean("fix_variance", None, "LiRA: one global std (default: when fewer than 64 shadows).")
flags.DEFINE_boolean("mirror", None, "LiRA: also query the horizontal flip (default: if training flipped).")
flags.DEFINE_integer("shifts", None, "LiRA: also query shifts of up to this many pixels (reflect padding).")
flags.DEFINE_enum("shokri_features", None, ["probs", "log_probs", "sorted_probs"],
                  "Shokri: the attack models' input (sorted_probs: MemGuard's own evaluation, Salem et al.).")
flags.DEFINE_list("fprs", None, "FPRs at which the TPR is reported, each in (0, 1).")
flags.DEFINE_integer("num_test", None, "Test images for the target's test accuracy (released and undefended).")
flags.DEFINE_integer("num_population", None, "RMIA: population points z, the first of the --population split.")
flags.DEFINE_enum("population", None, ["test", "train"],
                  "RMIA: population from the test split, or from the training split after the N candidates.")
flags.DEFINE_enum("rmia_preset", None, ["paper_softmax", "paper", "privacy_meter", "leakpro"],
                  "RMIA: whose defaults (signal, temperature, gamma, a, trimming, views); see docs/differences.md.")
flags.DEFINE_float("rmia_gamma", None, "RMIA: the likelihood-ratio threshold gamma > 0 (default: the preset's).")
flags.DEFINE_string("rmia_offline_a", None, "RMIA: a in [0, 1] of P_IN ~ a P_OUT + 1 - a, or 'tune' (on the "
                    "attacker's shadows; default: the preset's).")
flags.DEFINE_integer("label_examples", None, "Label-only attacks: random candidates they score (0: all N).")
flags.DEFINE_integer("aug_d", None, "label_augmentation: translations by d pixels (4d + 1 queries per example).")
flags.DEFINE_integer("noise_samples", None, "label_noise: noisy copies queried per example.")
flags.DEFINE_float("noise_sigma", None, "label_noise: std of the Gaussian noise, pixels in [0, 1].")
flags.DEFINE_integer("hsj_max_queries", None, "label_boundary: HopSkipJump queries per example (0: no cap).")
flags.DEFINE_integer("hsj_initial_evals", None, "label_boundary: HopSkipJump's first gradient estimate's queries.")
flags.DEFINE_integer("budget", None, "The attacker's query budget at the victim (default: unlimited).")
flags.DEFINE_integer("num_bootstrap", None, "Bootstrap resamples for the confidence intervals.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from mlpriv_jax import config as configs
  from mlpriv_jax import presets
  from mlpriv_jax.attacks import membership as M
  from mlpriv_jax.lab import membership
  dp_target = common.dp_target()
  cfg = presets.get("mia", FLAGS.preset)
  if dp_target is not None:   # the preset's DP recipe replaces its game; explicit flags still win
    cfg = configs.replace(cfg, dict(game=dataclasses.replace(cfg.dp_game, dp=dp_target)))
  none_if_zero = lambda v: v or None
  paths = dict(common.train_paths("game.train"), dataset="game.dataset", arch="game.arch",
               num_examples="game.num_examples", num_shadows="game.num_shadows",
               chunk_size=("game.chunk_size", none_if_zero), seed="game.seed",
               attack=("membership.attacks", lambda a: tuple(M.parse(a))),
               label_examples=("membership.label_examples", none_if_zero),
               num_population="membership.num_population", population="membership.population",
               mirror="membership.mirror", shifts="membership.shifts", num_bootstrap="membership.num_bootstrap",
               fprs=("membership.fprs", lambda f: tuple(common.parse_floats(",".join(f), "--fprs"))),
               shokri_features="membership.options.shokri.features",
               aug_d="membership.options.label_augmentation.d",
               noise_samples="membership.options.label_noise.num_samples",
               noise_sigma="membership.options.label_noise.sigma",
               hsj_max_queries=("membership.options.label_boundary.max_queries", none_if_zero),
               hsj_initial_evals="membership.options.label_boundary.initial_num_evals",
               defence="defence", num_defence_examples="num_defence_examples", num_test="num_test",
               budget="budget")
  cfg = common.config("mia", paths, base=cfg)
  extra = {}
  if common.given("defence"):
    extra["strength"] = FLAGS.epsilon
  if common.given("num_epochs") and not common.given("warmup_epochs"):   # the presets' warm-up: min(1, epochs / 10)
    extra["game.train.warmup_epochs"] = min(1.0, FLAGS.num_epochs / 10)
  for attack in ("lira_online", "lira_offline"):
    if common.given("fix_variance"):
      extra[f"membership.options.{attack}.fix_variance"] = FLAGS.fix_variance
  for attack in ("rmia_online", "rmia_offline"):
    for flag, field in (("rmia_preset", "preset"), ("rmia_gamma", "gamma"), ("rmia_offline_a", "offline_a")):
      if common.given(flag):
        extra[f"membership.options.{attack}.{field}"] = _offline_a(FLAGS[flag].value) if field == "offline_a" \
            else FLAGS[flag].value
  cfg = configs.replace(cfg, extra)
  membership.run(cfg, workdir=FLAGS.workdir, data_dir=FLAGS.data_dir, run_config=dict(preset=FLAGS.preset),
                 endpoint=common.endpoint(), log=common.log)


def _offline_a(a):
  """'tune', a number, or '' (the preset's)."""
  if a is None or a == "tune":
    return a
  return common.parse_floats(a, "--rmia_offline_a")[0] if a.strip() else None


if __name__ == "__main__":
  common.run(main)
