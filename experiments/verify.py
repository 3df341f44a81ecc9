r"""The owner's verdict on a suspect model: was it stolen from my victim?

  MLPRIV_API_KEY=... python experiments/verify.py --victim=runs/mia/target --suspect_url=http://host:8000 \
      --workdir=runs/verify
  python experiments/verify.py --victim=runs/mia/target --suspect=runs/extract --workdir=runs/verify_local
  python experiments/verify.py --victim=runs/mia/target --suspect_url=... --verifiers=dataset_inference,dawn \
      --ledger=runs/serve/ledger.sqlite --client=alice --workdir=runs/verify_alice

--victim is the owner's model artifact (or a workdir holding one) that records its training data: train.py's,
mia.py's target, the arena's victim. The suspect is reached only through its answers: a model served at
--suspect_url (this project's server or any Open Inference Protocol v2 server; --api_key or $MLPRIV_API_KEY), or a
model artifact run in process (--suspect). Verifiers (`mlpriv_jax.games.ownership`): dataset_inference (Maini et
al. 2021: the suspect's labels around the victim's private points), ipguard (Cao et al. 2021: the victim's boundary
fingerprint), dawn (Szyller et al. 2021: the watermarked answers the victim's server logged for --client in its
--ledger). Their negatives, models of the victim's recipe trained on disjoint data, are trained in the workdir once.
verdict.json holds each verifier's p-value, its raw counts and the queries it sent the suspect.

Presets (`mlpriv_jax.presets.verify`): smoke (40 points, 3 directions), cpu (100, 10), paper (1,000, 10).
"""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import common  # noqa: E402

common.define_base("verify")
flags.DEFINE_string("victim", None, "The owner's model artifact (or a workdir holding one).")
flags.DEFINE_string("suspect_url", None, "The suspect, served at this URL.")
flags.DEFINE_string("suspect", None, "The suspect, a model artifact run in process (instead of --suspect_url).")
flags.DEFINE_string("api_key", None, "API key for --suspect_url (default: $MLPRIV_API_KEY).")
flags.DEFINE_string("model_name", None, "Model name at --suspect_url (default: the server's one model).")
flags.DEFINE_enum("output_kind", "auto", ["auto", "probabilities", "logits", "labels"],
                  "How to read the suspect's output (labels: one-hot, needs --num_classes).")
flags.DEFINE_integer("num_classes", None, "Classes of a suspect whose output is labels.")
flags.DEFINE_string("verifiers", None, "Comma-separated: dataset_inference, ipguard, dawn (default: the first two).")
flags.DEFINE_integer("num_independent", None, "Negatives: independent models of the victim's recipe.")
flags.DEFINE_float("alpha", None, "A verifier calls the suspect stolen below this p-value.")
flags.DEFINE_string("ledger", None, "DAWN: the ledger file of the server that answered the suspected key.")
flags.DEFINE_string("client", None, "DAWN: the name of the key suspected of stealing.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from mlpriv_jax.errors import UserError
  from mlpriv_jax.lab import ownership
  if not FLAGS.victim:
    raise UserError("--victim is required (the owner's model artifact)")
  if bool(FLAGS.suspect_url) == bool(FLAGS.suspect):
    raise UserError("give exactly one suspect: --suspect_url (served) or --suspect (a model artifact)")
  names = lambda t: tuple(n.strip() for n in str(t).split(",") if n.strip())
  cfg = common.config("verify", dict(verifiers=("audit.verifiers", names), num_independent="audit.num_independent",
                                     alpha="alpha"))
  if FLAGS.suspect_url:
    from mlpriv_jax.serve import client
    endpoint = client.Endpoint(FLAGS.suspect_url, FLAGS.api_key or os.environ.get("MLPRIV_API_KEY"),
                               FLAGS.model_name, None, None, FLAGS.output_kind, FLAGS.num_classes)
    suspect, name = client.connect(endpoint, log=common.log), FLAGS.suspect_url
  else:
    from mlpriv_jax import models
    from mlpriv_jax.oracle import Victim
    model, variables, meta = models.load_model(FLAGS.suspect)
    suspect, name = Victim(model, variables, input_shape=tuple(meta["input_shape"])), meta["artifact"]
  try:
    ownership.run(cfg, victim=FLAGS.victim, suspect=suspect, suspect_name=name, workdir=FLAGS.workdir,
                  data_dir=FLAGS.data_dir, ledger=FLAGS.ledger, client=FLAGS.client,
                  run_config=dict(preset=FLAGS.preset), log=common.log)
  finally:
    if hasattr(suspect, "close"):
      suspect.close()


if __name__ == "__main__":
  common.run(main)
