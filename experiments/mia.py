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

Presets: smoke (shapes10, 1,000 examples, cnn_small, 8 shadows; label-only attacks on 500 candidates,
HopSkipJump capped at 300 queries each; ~4 min on 2 CPU cores), cpu (4,000 CIFAR-10 examples, cnn_small, 16
shadows, label-only attacks on 500 candidates, HopSkipJump 1,000 queries; ~14 min), paper (LiRA: WRN-28-2, 256
shadows, each on half of CIFAR-10's 50,000, 100 epochs; RMIA against 10,000 test images; HopSkipJump with
cleverhans' defaults, ~35,000 queries; GPU). Their DP recipes: smoke cnn_tiny_gn on 4,000 examples, 40 epochs,
expected batch 256, lr 2 (~8 min); cpu cnn_small_gn on 8,000 CIFAR-10 examples, 30 epochs, batch 512; paper
De et al.'s WRN-16-4.
RMIA's defaults (--rmia_preset=paper_softmax) are its authors' code's (gamma = 2, a = 0.3, 20% trimmed means, a
majority vote over views) with the true-class softmax at T = 1 for their Taylor soft margin, which needs logits; paper,
privacy_meter and leakpro name the published sets (BUILD_NOTES.md).
"""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import common  # noqa: E402

_RECIPE = dict(momentum=0.9, nesterov=True, schedule="cosine")
# The label-only attacks' query budgets: HopSkipJump capped per example (0: cleverhans' 64 iterations uncapped).
_SMALL_QUERIES = dict(num_population=1000, label_examples=500, hsj_max_queries=300, hsj_initial_evals=20,
                      noise_samples=20)
# With --dp_epsilon a preset's `dp` entries replace its recipe: DP-SGD needs a GroupNorm model, more data, larger
# expected batches and a larger learning rate (clipping shrinks the gradient); explicit flags still win.
PRESETS = {
    "smoke": dict(_RECIPE, **_SMALL_QUERIES, dataset="shapes10", arch="cnn_small", num_examples=1000, num_shadows=8,
                  num_epochs=25, batch_size=64, learning_rate=0.05, weight_decay=5e-4, augment=False,
                  num_defence_examples=500, chunk_size=0,
                  dp=dict(arch="cnn_tiny_gn", num_examples=4000, num_epochs=40, batch_size=256, learning_rate=2.0,
                          weight_decay=0.0)),
    "cpu": dict(_RECIPE, dataset="cifar10_jpeg", arch="cnn_small", num_examples=4000, num_shadows=16, num_epochs=20,
                batch_size=128, learning_rate=0.05, weight_decay=5e-4, augment=True, num_defence_examples=1000,
                chunk_size=0, num_population=2000, label_examples=500, hsj_max_queries=1000, hsj_initial_evals=50,
                noise_samples=100,
                # cnn_tiny_gn: cnn_small_gn's 95k parameters drown in the noise at this scale (see BUILD_NOTES)
                dp=dict(arch="cnn_tiny_gn", num_examples=8000, num_shadows=8, num_epochs=20, batch_size=256,
                        learning_rate=2.0, weight_decay=0.0)),
    # LiRA's train.py: wrn28-2, lr 0.1 cosine, batch 256, wd 5e-4, momentum 0.9, crop+flip.
    "paper": dict(_RECIPE, dataset="cifar10", arch="wrn28_2", num_examples=50000, num_shadows=256, num_epochs=100,
                  batch_size=256, learning_rate=0.1, weight_decay=5e-4, augment=True, num_defence_examples=5000,
                  chunk_size=16,  # bounds GPU memory; 257 vmapped WRN-28-2 would not fit (size unmeasured: no GPU yet)
                  num_population=10000, label_examples=1000, hsj_max_queries=0, hsj_initial_evals=100,
                  noise_samples=2500,
                  # De et al. (2022)'s WRN-16-4 recipe (GroupNorm, B 4096, lr 2, no momentum); unmeasured here
                  dp=dict(arch="wrn16_4_gn", batch_size=4096, learning_rate=2.0, momentum=0.0, nesterov=False,
                          weight_decay=0.0, num_epochs=100)),
}

common.define_base(PRESETS, workdir_help="Output folder; a rerun resumes the training from its checkpoints.")
common.define_train_flags("the target and every shadow (one recipe)")
common.define_dp_flags("the target and every shadow (one recipe, as an attacker who knows it)")
flags.DEFINE_string("victim_url", None, "Attack the target served at this URL (experiments/serve.py "
                    "--victim=<this workdir>) instead of the in-process one.")
flags.DEFINE_string("api_key", None, "API key for --victim_url (default: $MLPRIV_API_KEY).")
flags.DEFINE_string("model_name", "victim", "Model name at --victim_url.")
flags.DEFINE_string("dataset", None, "Target data (shapes10, cifar10, cifar10_jpeg, cifar100, ...).")
flags.DEFINE_string("arch", None, "Architecture of the target and of every shadow model.")
flags.DEFINE_list("attack", ["all"], "Attacks, comma-separated, or 'all' (the membership registry).")
flags.DEFINE_integer("num_examples", None, "Universe size N: the target trains on N/2, the rest are non-members.")
flags.DEFINE_integer("num_shadows", None, "Shadow models K (the target is trained with them, K + 1 at once).")
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
flags.DEFINE_integer("num_population", None, "RMIA: population points z, the first of the --population split.")
flags.DEFINE_enum("population", "test", ["test", "train"],
                  "RMIA: population from the test split, or from the training split after the N candidates.")
flags.DEFINE_enum("rmia_preset", "paper_softmax", ["paper_softmax", "paper", "privacy_meter", "leakpro"],
                  "RMIA: whose defaults (signal, temperature, gamma, a, trimming, views); see BUILD_NOTES.md.")
flags.DEFINE_float("rmia_gamma", None, "RMIA: the likelihood-ratio threshold gamma > 0 (default: the preset's).")
flags.DEFINE_string("rmia_offline_a", None, "RMIA: a in [0, 1] of P_IN ~ a P_OUT + 1 - a, or 'tune' (on the "
                    "attacker's shadows; default: the preset's).")
flags.DEFINE_integer("label_examples", None, "Label-only attacks: random candidates they score (0: all N).")
flags.DEFINE_integer("aug_d", 1, "label_augmentation: translations by d pixels (4d + 1 queries per example).")
flags.DEFINE_integer("noise_samples", None, "label_noise: noisy copies queried per example.")
flags.DEFINE_float("noise_sigma", 0.05, "label_noise: std of the Gaussian noise, pixels in [0, 1].")
flags.DEFINE_integer("hsj_max_queries", None, "label_boundary: HopSkipJump queries per example (0: no cap).")
flags.DEFINE_integer("hsj_initial_evals", None, "label_boundary: HopSkipJump's first gradient estimate's queries.")
flags.DEFINE_integer("budget", None, "The attacker's query budget at the victim (default: unlimited).")
flags.DEFINE_integer("num_bootstrap", 200, "Bootstrap resamples for the confidence intervals.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from mlpriv_jax.lab import membership
  dp_target = common.dp_target()
  s = common.settings(PRESETS, ("dataset", "arch", "num_examples", "num_shadows", "chunk_size",
                                "num_defence_examples", "num_population", "label_examples", "hsj_max_queries",
                                "hsj_initial_evals", "noise_samples", *common.TRAIN_FLAGS),
                      derived=lambda p: p.get("dp", {}) if dp_target is not None else {})
  warmup = {} if common.given("warmup_epochs") else dict(warmup_epochs=min(1.0, s["num_epochs"] / 10))
  game = membership.MembershipGame(s["dataset"], s["arch"], s["num_examples"], s["num_shadows"],
                                   common.train_config(s, **warmup), FLAGS.seed, s["chunk_size"] or None,
                                   dp=dp_target)
  membership.run(game=game, workdir=FLAGS.workdir, attacks=FLAGS.attack, defence=FLAGS.defence,
                 strength=FLAGS.epsilon, data_dir=FLAGS.data_dir, num_defence_examples=s["num_defence_examples"],
                 fix_variance=FLAGS.fix_variance, mirror=FLAGS.mirror, shifts=FLAGS.shifts,
                 shokri_features=FLAGS.shokri_features, fprs=common.parse_floats(",".join(FLAGS.fprs), "--fprs"),
                 num_test=FLAGS.num_test, num_bootstrap=FLAGS.num_bootstrap, num_population=s["num_population"],
                 population=FLAGS.population, label_examples=s["label_examples"] or None, budget=FLAGS.budget,
                 attack_options=_attack_options(s), run_config=dict(preset=FLAGS.preset),
                 victim_url=FLAGS.victim_url, api_key=FLAGS.api_key or os.environ.get("MLPRIV_API_KEY"),
                 model_name=FLAGS.model_name, log=common.log)


def _attack_options(s) -> dict:
  a = FLAGS.rmia_offline_a
  if a is not None and a != "tune":
    a = common.parse_floats(a, "--rmia_offline_a")[0] if a.strip() else None
  rmia = dict(preset=FLAGS.rmia_preset, gamma=FLAGS.rmia_gamma, offline_a=a)
  return dict(rmia_online=rmia, rmia_offline=rmia, label_augmentation=dict(d=FLAGS.aug_d),
              label_noise=dict(sigma=FLAGS.noise_sigma, num_samples=s["noise_samples"]),
              label_boundary=dict(max_queries=s["hsj_max_queries"] or None, initial_num_evals=s["hsj_initial_evals"]))


if __name__ == "__main__":
  common.run(main)
