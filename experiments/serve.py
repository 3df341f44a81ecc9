r"""Serves a victim artifact over HTTP behind a defence, with API keys and per-key budgets.

  python experiments/train.py --preset=smoke --workdir=runs/victim
  echo '{"clients": [{"name": "alice", "key": "sk-alice-0123456789"}]}' > keys.json
  python experiments/serve.py --victim=runs/victim --defence=round2 --keys_file=keys.json --port=8000
  MLPRIV_API_KEY=sk-alice-0123456789 python experiments/extract.py --victim=runs/victim \
      --victim_url=http://127.0.0.1:8000 --workdir=runs/knockoff_http

The Open Inference Protocol v2 (`/v2/health/ready`, `/v2/models/victim`, `/v2/models/victim/infer`, as KServe,
Triton and Seldon) and TF Serving's `/v1/models/victim:predict`; `Authorization: Bearer <key>` or `X-API-Key`.
Each key has its own budget (examples; --budget_per_key unless the keys file gives one), PRADA monitor (with
--monitor=prada), defence state and reproducible key stream; 401 / 403 / 429 / 400 / 408 / 413 / 404 as in
`mlpriv_jax.serve.app`. Each key's usage is kept in an SQLite ledger (--ledger, default beside the keys file): a
restart continues every count, and several servers on one ledger share it exactly. The server is ready once every
batch bucket is compiled; stop it with Ctrl-C.

Behind DAWN's watermark (`--defence=dawn --strength=0.005 --dawn_key_file=dawn_key.json`, the file made once with
`python -c "import json, secrets; print(json.dumps({'secret': secrets.token_hex(32)}))" > dawn_key.json`), each
key's watermarked answers are logged in the ledger: `experiments/verify.py --ledger=... --client=<key name>` later
tests a suspect model against them.
"""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import common  # noqa: E402

flags.DEFINE_string("victim", None, "The victim: a model artifact, or a workdir holding one.")
flags.DEFINE_string("defence", "none", "The output defence (see experiments/defend.py).")
flags.DEFINE_float("strength", None, "Strength of the defence, where it takes one.")
flags.DEFINE_string("keys_file", None, 'JSON {"clients": [{"name", "key", "budget"?}, ...]}, read once.')
flags.DEFINE_integer("budget_per_key", 50000, "Examples each key may query, unless the keys file says otherwise.")
flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every interface).")
flags.DEFINE_integer("port", 8000, "Port to listen on (0: a free one, printed).")
flags.DEFINE_string("model_name", "victim", "The model's name in the URLs.")
flags.DEFINE_boolean("disclose_defence", False, "Name the defence and its strength in the model metadata.")
flags.DEFINE_enum("monitor", "none", ["none", "prada"], "Stream monitor per key (PRADA, Juuti et al. 2019).")
flags.DEFINE_float("prada_delta", 0.9, "PRADA's Shapiro-Wilk threshold.")
flags.DEFINE_enum("on_detect", "refuse", ["refuse", "degrade"], "A flagged key: 403, or shuffled top-3 answers.")
flags.DEFINE_float("max_body_mb", 4.0, "Largest request body, in MiB (413 above it).")
flags.DEFINE_string("data_dir", None, "Folder with the victim's dataset (MemGuard trains on its members).")
flags.DEFINE_integer("seed", 0, "Root seed of the defence and of every key's stream.")
flags.DEFINE_boolean("access_log", True, "Log one line per request (never a key).")
flags.DEFINE_string("ledger", None, "SQLite file of every key's usage, kept across restarts and shared by servers on "
                    "it (default: <keys_file>.usage.sqlite).")
flags.DEFINE_string("dawn_key_file", None, 'DAWN\'s master secret, JSON {"secret": "<hex, >= 16 bytes>"} (with '
                    "--defence=dawn; keep it private).")
flags.DEFINE_float("header_timeout", 10.0, "Seconds a connection may take to send a request's headers.")
flags.DEFINE_float("body_timeout", 30.0, "Seconds a request's body may take to arrive (408 after).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from mlpriv_jax.errors import UserError
  from mlpriv_jax.lab import serving
  from mlpriv_jax import serve
  if not FLAGS.victim:
    raise UserError("--victim is required (a model artifact; train one with experiments/train.py)")
  if not FLAGS.keys_file:
    raise UserError('--keys_file is required: JSON {"clients": [{"name": ..., "key": ..., "budget"?: ...}]}')
  for name in ("max_body_mb", "header_timeout", "body_timeout"):
    if not FLAGS[name].value > 0:   # NaN fails too
      raise UserError(f"--{name} must be > 0, got {FLAGS[name].value}")
  sock = serve.bind(FLAGS.host, FLAGS.port)   # a port in use fails before anything is loaded
  served = serving.build(victim=FLAGS.victim, keys_file=FLAGS.keys_file, defence=FLAGS.defence,
                         strength=FLAGS.strength, budget_per_key=FLAGS.budget_per_key, model_name=FLAGS.model_name,
                         monitor=FLAGS.monitor, prada_delta=FLAGS.prada_delta, on_detect=FLAGS.on_detect,
                         disclose_defence=FLAGS.disclose_defence, max_body_bytes=int(FLAGS.max_body_mb * 2**20),
                         data_dir=FLAGS.data_dir, seed=FLAGS.seed, ledger=FLAGS.ledger,
                         body_timeout=FLAGS.body_timeout, dawn_key_file=FLAGS.dawn_key_file, log=common.log)
  host, port = sock.getsockname()[:2]
  common.log(f"listening on http://{host}:{port} (model {FLAGS.model_name!r}; ready at /v2/health/ready once "
             f"compiled)")
  serve.serve_forever(serve.create_app(served), sock, access_log=FLAGS.access_log,
                      header_timeout=FLAGS.header_timeout)


if __name__ == "__main__":
  common.run(main)
