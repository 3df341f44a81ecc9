r"""DAWN at its paper rate: how long a surrogate must fit its stolen answers before the watermark convicts it.

  python benchmarks/dawn_fit.py --out=benchmarks/results/dawn_fit_smoke.json

A cnn_tiny victim on 500 shapes10 images (40 epochs) answers a thief's `--budget` queries (other shapes10 images)
through DAWN at `--rate`; the thief trains a cnn_tiny surrogate on the answers for each of `--epochs` (soft labels,
cosine schedule), and an independent model (the victim's recipe on 500 other images) is the null. Per epoch count:
the surrogate's agreements with the thief's triggers, its binomial p against the independent model's rate
(`verdicts.binomial_p`), and the triggers (and queries at the rate) its agreement would need for p < 1% and for the
paper's 2^-64 (`ownership.dawn.triggers_needed`).
"""

import datetime
import os
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks.provenance import commit, machine  # noqa: E402

flags.DEFINE_float("rate", 0.005, "DAWN's fraction of watermarked answers (the paper's 0.5%).")
flags.DEFINE_integer("budget", 4000, "The thief's queries.")
flags.DEFINE_string("epochs", "30,100", "The surrogate's training epochs, one surrogate per value.")
flags.DEFINE_string("out", None, "Also write the JSON here.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import jax
  import numpy as np

  from mlpriv_jax import data, defences, models, train
  from mlpriv_jax.games import ownership
  from mlpriv_jax.oracle import Victim, query_all
  from mlpriv_jax.ownership import dawn as DW
  from mlpriv_jax.ownership import verdicts
  from mlpriv_jax.utils import write_json

  t0 = time.time()
  ds = data.load_dataset("shapes10")
  m = models.get_model("cnn_tiny", 10)
  recipe = train.TrainConfig(num_epochs=40, batch_size=32, learning_rate=0.05, momentum=0.9, schedule="cosine",
                             augment=False)
  victim = train.variables_of(train.train(m, recipe, ds.x_train[:500], ds.y_train[:500], jax.random.key(0)).state)
  other = train.variables_of(train.train(m, recipe, ds.x_train[500:1000], ds.y_train[500:1000],
                                         jax.random.key(1)).state)
  master, account = bytes(range(32)), jax.random.key(2)
  api = Victim(m, victim, defence=defences.build("dawn", FLAGS.rate, watermark_master=master), key=account)
  pool = ds.x_train[2000:2000 + FLAGS.budget]
  answers = query_all(api, pool)
  ev = ownership.dawn_evidence(master, account, pool, answers, FLAGS.rate)
  n = len(ev.x)
  null = DW.agreements(ev, Victim(m, other))["agreed"]
  q = null / max(n, 1)
  rows = []
  for e in (int(s) for s in FLAGS.epochs.split(",")):
    t = time.time()
    cfg = train.TrainConfig(num_epochs=e, batch_size=64, learning_rate=0.05, momentum=0.9, schedule="cosine",
                            augment=False)
    stolen = train.variables_of(train.train(m, cfg, pool, answers, jax.random.key(3)).state)
    agreed = DW.agreements(ev, Victim(m, stolen))["agreed"]
    row = dict(epochs=e, agreed=agreed, triggers=n, p_value=verdicts.binomial_p(agreed, n, q),
               accuracy=float(train.evaluate(m, stolen, ds.x_test[:1000], ds.y_test[:1000])),
               seconds=time.time() - t)
    for name, alpha in (("0.01", 0.01), ("2^-64", 2.0 ** -64)):
      try:
        need = DW.triggers_needed(agreed / n, q, alpha)
        row[f"triggers_needed_p<{name}"], row[f"queries_needed_p<{name}"] = need, int(np.ceil(need / FLAGS.rate))
      except ValueError:   # no more agreement than the null: never
        row[f"triggers_needed_p<{name}"] = row[f"queries_needed_p<{name}"] = None
    rows.append(row)
    print(row, flush=True)
  best = rows[-1]
  doc = dict(
      what=(f"DAWN at {FLAGS.rate:g} on {FLAGS.budget} queries ({n} triggers) of a cnn_tiny shapes10 victim: the "
            f"thief's cnn_tiny surrogate against its training epochs"),
      summary=", ".join(f"{r['epochs']} epochs: {r['agreed']}/{n} agreed, p {r['p_value']:.2g}" for r in rows)
      + f" (independent {null}/{n}); at {best['epochs']} epochs p < 2^-64 needs "
      + (f"{best['triggers_needed_p<2^-64']} triggers ({best['queries_needed_p<2^-64']:,} queries)"
         if best["triggers_needed_p<2^-64"] else "more agreement than the null"),
      provenance=dict(date=datetime.date.today().isoformat(), commit=commit(), machine=machine(),
                      command="python benchmarks/dawn_fit.py "
                      + " ".join(a for a in sys.argv[1:] if not a.startswith("--out"))),
      rate=FLAGS.rate, budget=FLAGS.budget, triggers=n, independent_agreed=null,
      victim_accuracy=float(train.evaluate(m, victim, ds.x_test[:1000], ds.y_test[:1000])), rows=rows,
      wall_seconds=time.time() - t0)
  if FLAGS.out:
    write_json(FLAGS.out, doc)


if __name__ == "__main__":
  app.run(main)
