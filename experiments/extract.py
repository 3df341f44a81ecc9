r"""Model extraction against a trained victim: KnockoffNets (random, adaptive), CloudLeak-style, JBDA.

  python experiments/train.py --preset=smoke --workdir=runs/victim
  python experiments/extract.py --victim_workdir=runs/victim --attack=knockoff_random --workdir=runs/knockoff
  python experiments/extract.py --victim_workdir=runs/victim --attack=cloudleak --budget=1000 --workdir=runs/cl
  python experiments/extract.py --victim_workdir=runs/victim --defence=mad_argmax --epsilon=0.5 ...

The attack sees only `Victim.query` (with the chosen defence); the evaluation
afterwards uses the victim's test set and its undefended top-1 (fidelity), as the
survey does. Writes results.json (accuracy, fidelity, victim_accuracy,
accuracy_ratio, fidelity_ratio, queries_used, and the curve at the budget
checkpoints) and curve.png.

Presets: smoke (embedded patterns20 pool, 2,000 queries, cnn_small surrogate),
cpu (CIFAR-100 pool, 10,000 queries, resnet20 surrogate), paper (CIFAR-100,
50,000 queries, knockoffnets' training defaults: SGD lr 0.01, momentum 0.5, no
weight decay, x0.1 at epoch 60, 100 epochs, batch 64, no augmentation).
"""

import os
import sys
import time

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import common  # noqa: E402

ATTACKS = ("knockoff_random", "knockoff_adaptive", "cloudleak", "jbda")
PRESETS = {
    "smoke": dict(query_set="patterns20", budget=2000, surrogate_arch="cnn_small", checkpoints="500,1000,2000",
                  num_epochs=6, batch_size=64, learning_rate=0.05, momentum=0.9, weight_decay=5e-4,
                  schedule="cosine", milestones_epochs="", augment=False),
    "cpu": dict(query_set="cifar100", budget=10000, surrogate_arch="resnet20", checkpoints="1000,5000,10000",
                num_epochs=10, batch_size=128, learning_rate=0.05, momentum=0.9, weight_decay=5e-4,
                schedule="cosine", milestones_epochs="", augment=True),
    "paper": dict(query_set="cifar100", budget=50000, surrogate_arch="wrn16_8", checkpoints="1000,5000,10000,50000",
                  num_epochs=100, batch_size=64, learning_rate=0.01, momentum=0.5, weight_decay=0.0,
                  schedule="multistep", milestones_epochs="60", augment=False),
}

flags.DEFINE_enum("preset", "smoke", list(PRESETS), "Scale of the run; explicit flags override it.")
flags.DEFINE_string("victim_workdir", None, "Workdir of experiments/train.py holding the victim.")
flags.DEFINE_string("workdir", None, "Output folder.")
flags.DEFINE_string("data_dir", None, "Folder with <dataset>.npz files (else $MLPRIV_DATA_DIR, else TFDS).")
flags.DEFINE_enum("attack", "knockoff_random", list(ATTACKS), "Extraction attack.")
flags.DEFINE_string("surrogate_arch", None, "Surrogate architecture (wres16, wres22, res32, res18, vgg16, ...).")
flags.DEFINE_string("query_set", None, "The attacker's pool (patterns20, cifar100, ...).")
flags.DEFINE_integer("budget", None, "Queries the attacker may make.")
flags.DEFINE_string("checkpoints", None, "Comma-separated budgets at which the curve is measured.")
flags.DEFINE_string("defence", "none", "The victim's output defence (see experiments/defend.py).")
flags.DEFINE_float("epsilon", 0.5, "Strength of the defence, where it takes one.")
flags.DEFINE_integer("num_epochs", None, "Surrogate epochs.")
flags.DEFINE_integer("batch_size", None, "Surrogate batch size.")
flags.DEFINE_float("learning_rate", None, "Surrogate learning rate.")
flags.DEFINE_float("momentum", None, "Surrogate SGD momentum.")
flags.DEFINE_float("weight_decay", None, "Surrogate weight decay.")
flags.DEFINE_enum("schedule", None, ["multistep", "cosine", "constant"], "Surrogate schedule.")
flags.DEFINE_string("milestones_epochs", None, "Multistep decay epochs.")
flags.DEFINE_boolean("augment", None, "Crop/flip the transfer set (the victim's answer is reused: free).")
flags.DEFINE_integer("cloudleak_rounds", 5, "CloudLeak: active-learning rounds.")
flags.DEFINE_enum("cloudleak_method", "featurefool", ["featurefool", "pgd"], "CloudLeak: how candidates are made.")
flags.DEFINE_integer("jbda_seeds", 100, "JBDA: seed images, the first test images (held out from evaluation).")
flags.DEFINE_integer("num_test", 0, "Evaluate on the first num_test test images (0: all).")
flags.DEFINE_integer("seed", 0, "Root seed.")
FLAGS = flags.FLAGS


def setting(name):
  return common.setting(FLAGS, PRESETS, name)


def main(argv):
  del argv
  import jax
  import numpy as np

  from mlpriv_jax import data, defences, models, train
  from mlpriv_jax.attacks import extraction as E
  from mlpriv_jax.utils import write_json
  from mlpriv_jax.victim import Victim, load_trained

  t_start = time.time()
  if not FLAGS.workdir or not FLAGS.victim_workdir:
    raise ValueError("--workdir and --victim_workdir are required")
  budget = setting("budget")
  if budget is None or budget < 1:
    raise ValueError(f"--budget must be a positive integer, got {budget}")
  checkpoints = sorted({int(c) for c in str(setting("checkpoints")).split(",") if c.strip() and int(c) <= budget}
                       | {budget})
  models.canonical_name(setting("surrogate_arch"))
  defences.named.check_name(FLAGS.defence)

  model, variables, cfg = load_trained(FLAGS.victim_workdir)
  victim_ds = data.load_dataset(cfg["dataset"], FLAGS.data_dir, seed=cfg.get("seed", 0))
  pool = data.load_dataset(setting("query_set"), FLAGS.data_dir, seed=FLAGS.seed + 1)
  if pool.image_shape != victim_ds.image_shape:
    raise ValueError(f"query set {pool.name} has images of shape {pool.image_shape}, the victim takes "
                     f"{victim_ds.image_shape}")
  E.check_budget(budget, len(pool.x_train))
  if FLAGS.attack == "jbda" and FLAGS.jbda_seeds < 1:
    raise ValueError(f"--jbda_seeds must be >= 1, got {FLAGS.jbda_seeds}")
  # JBDA's seeds are held out from the victim's test set (never its training members): the first
  # jbda_seeds test images, and the evaluation uses the rest.
  first = FLAGS.jbda_seeds if FLAGS.attack == "jbda" else 0
  if first >= len(victim_ds.x_test):
    raise ValueError(f"--jbda_seeds {first} leaves no test images of {victim_ds.name} to evaluate on")
  n_test = min(FLAGS.num_test or len(victim_ds.x_test), len(victim_ds.x_test) - first)
  xt, yt = victim_ds.x_test[first:first + n_test], victim_ds.y_test[first:first + n_test]
  victim_top1 = np.asarray(train.predict(model, variables, xt).argmax(-1))   # evaluation only
  victim_acc = float((victim_top1 == yt).mean())

  key = jax.random.key(FLAGS.seed)
  proxy = memguard_params = None
  if FLAGS.defence in ("mad", "mad_argmax"):
    proxy = defences.proxy_from_model(model, model.init(jax.random.fold_in(key, 7), xt[:1].astype(np.float32)))
  if FLAGS.defence == "memguard":
    raise ValueError("memguard defends membership, not extraction; use experiments/defend.py")
  defence = defences.make_defence(FLAGS.defence, FLAGS.epsilon, proxy_probs=proxy, memguard_params=memguard_params)
  victim = Victim(model, variables, defence=defence, budget=budget, key=jax.random.fold_in(key, 1),
                  input_shape=victim_ds.image_shape)

  mean, std = data.channel_stats(pool.x_train)   # the attacker normalises with its own data
  surrogate = models.get_model(setting("surrogate_arch"), victim.num_classes, mean=mean, std=std)
  config = train.TrainConfig(
      num_epochs=setting("num_epochs"), batch_size=setting("batch_size"), learning_rate=setting("learning_rate"),
      momentum=setting("momentum"), nesterov=False, weight_decay=setting("weight_decay"),
      schedule=setting("schedule"),
      milestones_epochs=tuple(int(m) for m in str(setting("milestones_epochs")).split(",") if m.strip()),
      lr_decay_factor=0.1, augment=setting("augment")).validate()
  os.makedirs(FLAGS.workdir, exist_ok=True)
  common.claim_workdir(FLAGS.workdir, dict(attack=FLAGS.attack, budget=budget, surrogate=surrogate.name,
                                           query_set=pool.name, defence=FLAGS.defence, epsilon=FLAGS.epsilon,
                                           victim=FLAGS.victim_workdir, preset=FLAGS.preset, seed=FLAGS.seed),
                       keys=("attack", "budget", "surrogate", "query_set", "defence", "epsilon", "seed"))
  print(f"{FLAGS.attack}: victim {model.name} ({victim_ds.name}, acc {victim_acc:.4f}), surrogate {surrogate.name}, "
        f"pool {pool.name} ({len(pool.x_train)}), budget {budget}, defence {defence.name}", flush=True)

  def evaluate(state):
    m = E.extraction_metrics(train.predict(surrogate, train.variables_of(state), xt), victim_top1, yt, victim_acc)
    return m["accuracy"], m["fidelity"]

  curve = []
  k_attack, k_train = jax.random.fold_in(key, 2), jax.random.fold_in(key, 3)
  if FLAGS.attack in ("knockoff_random", "knockoff_adaptive"):
    if FLAGS.attack == "knockoff_random":
      idx, answers = E.knockoff_random(victim, pool.x_train, budget, k_attack)
    else:
      idx, answers, _ = E.knockoff_adaptive(victim, pool.x_train, pool.y_train, budget, k_attack, surrogate,
                                            pool_coarse=pool.y_train_coarse)
    for b in checkpoints:    # the transfer set's prefixes, as knockoffnets trains per budget
      state = E.train_surrogate(surrogate, config, pool.x_train[idx[:b]], answers[:b], k_train).state
      curve.append((b, *evaluate(state)))
      print(f"  {b:6d} queries: accuracy {curve[-1][1]:.4f} fidelity {curve[-1][2]:.4f}", flush=True)
  elif FLAGS.attack == "cloudleak":
    res = E.cloudleak(victim, pool.x_train, budget, k_attack, surrogate, config, num_rounds=FLAGS.cloudleak_rounds,
                      method=FLAGS.cloudleak_method, eval_fn=evaluate)
    curve = res.curve
  else:
    seeds = victim_ds.x_test[:first]
    res = E.jbda(victim, seeds, budget, k_attack, surrogate, config, eval_fn=evaluate)
    curve = res.curve
  accuracy, fidelity = curve[-1][1], curve[-1][2]
  results = dict(attack=FLAGS.attack, accuracy=accuracy, fidelity=fidelity, victim_accuracy=victim_acc,
                 accuracy_ratio=accuracy / victim_acc, fidelity_ratio=fidelity, queries_used=victim.queries_used,
                 budget=budget, surrogate=surrogate.name, query_set=pool.name, defence=defence.name,
                 curve=[dict(queries=int(q), accuracy=a, fidelity=f) for q, a, f in curve],
                 survey_cells=dict(accuracy=E.survey_cell(accuracy, accuracy / victim_acc),
                                   fidelity=E.survey_cell(fidelity, fidelity)),
                 wall_seconds=time.time() - t_start)
  write_json(os.path.join(FLAGS.workdir, "results.json"), results)
  common.plot_curve(os.path.join(FLAGS.workdir, "curve.png"), results["curve"],
                    f"{FLAGS.attack} on {model.name}: surrogate {surrogate.name}, pool {pool.name}")
  print(f"accuracy {results['survey_cells']['accuracy']}, fidelity {results['survey_cells']['fidelity']}, "
        f"{victim.queries_used} queries; results in {FLAGS.workdir}", flush=True)


if __name__ == "__main__":
  common.run(main)
