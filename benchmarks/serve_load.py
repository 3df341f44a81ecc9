r"""The served victim under load: HTTP against in-process, side by side in one run.

  python benchmarks/serve_load.py --out=benchmarks/results/serve_load_cpu.json

A randomly initialised `--arch` victim behind `--defence` (the cost of serving does not depend on the weights),
one API key with an unlimited budget. For batch sizes 1 and 64: the in-process `Victim.query` (one caller), then
`--concurrency` clients (threads, each its own HTTP connection) posting v2 FP32 requests to a real uvicorn on
127.0.0.1 for `--seconds` each. Per setting: examples per second, requests per second, p50 / p99 latency per
request, and the HTTP throughput as a fraction of the in-process one. Client and server share this machine's cores
(the client's JSON encoding and the server's decoding are both in the figures). Prints one JSON object.
"""

import json
import os
import sys
import threading
import time

from absl import app, flags

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # PYTHONPATH wins

flags.DEFINE_string("arch", "cnn_small", "Victim architecture.")
flags.DEFINE_string("defence", "none", "Victim defence (parameter-free, or with --strength).")
flags.DEFINE_float("strength", None, "Defence strength, where it takes one.")
flags.DEFINE_list("batch_sizes", ["1", "64"], "Images per request.")
flags.DEFINE_list("concurrency", ["1", "8", "32"], "Concurrent clients.")
flags.DEFINE_float("seconds", 5.0, "Seconds per setting.")
flags.DEFINE_string("out", None, "Also write the JSON here.")
FLAGS = flags.FLAGS
KEY = "sk-bench-0123456789abcdef"


def _percentiles(lat):
  import numpy as np
  lat = np.asarray(lat) * 1000
  return dict(p50_ms=float(np.percentile(lat, 50)), p99_ms=float(np.percentile(lat, 99)))


def main(argv):
  del argv
  import httpx
  import jax
  import jax.numpy as jnp
  import numpy as np

  from mlpriv_jax import defences, models, serve
  from mlpriv_jax.oracle import Service, Victim
  from mlpriv_jax.serve import protocol

  model = models.get_model(FLAGS.arch, 10)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  kit = defences.assemble([FLAGS.defence], model, jax.random.key(0))
  d = defences.build(FLAGS.defence, FLAGS.strength, **kit._asdict())
  service = Service.from_model(model, variables, defence=d)
  service.warm_up()
  batches = [int(b) for b in FLAGS.batch_sizes]
  x = np.asarray(jax.random.uniform(jax.random.key(1), (max(batches), 32, 32, 3)), np.float32)
  report = dict(backend=jax.default_backend(), device=jax.devices()[0].device_kind, cpu_count=os.cpu_count(),
                arch=FLAGS.arch, defence=d.name, seconds_per_setting=FLAGS.seconds, in_process={}, http={})

  for b in batches:
    victim, lat = Victim.of(service), []
    t_end = time.perf_counter() + FLAGS.seconds
    while time.perf_counter() < t_end:
      t0 = time.perf_counter()
      victim.query(x[:b])
      lat.append(time.perf_counter() - t0)
    report["in_process"][str(b)] = dict(examples_per_sec=b * len(lat) / sum(lat), requests=len(lat),
                                        **_percentiles(lat))

  served = serve.Served(service, serve.KeyRing([(KEY, serve.Client("bench", None))]))
  with serve.BackgroundServer(serve.create_app(served)) as s:
    for b in batches:
      body = protocol.request_v2(x[:b])[0]   # JSON, as the client's default against servers without binary
      for c in (int(c) for c in FLAGS.concurrency):
        lats, errors, start = [[] for _ in range(c)], [], threading.Barrier(c + 1)

        def client(mine, t_end_box):
          with httpx.Client(base_url=s.url, timeout=120, headers={"Authorization": f"Bearer {KEY}",
                                                                  "Content-Type": "application/json"}) as h:
            h.get("/v2/health/ready")   # opens the connection before the clock starts
            start.wait()
            while time.perf_counter() < t_end_box[0]:
              t0 = time.perf_counter()
              r = h.post("/v2/models/victim/infer", content=body)
              mine.append(time.perf_counter() - t0)
              if r.status_code != 200:
                errors.append(r.status_code)
                return

        t_end_box = [0.0]
        threads = [threading.Thread(target=client, args=(lats[i], t_end_box)) for i in range(c)]
        for t in threads:
          t.start()
        t_end_box[0] = time.perf_counter() + FLAGS.seconds
        t0 = time.perf_counter()
        start.wait()
        for t in threads:
          t.join()
        wall = time.perf_counter() - t0
        done = sum(len(l) for l in lats)
        eps = b * done / wall
        report["http"][f"batch{b}_clients{c}"] = dict(
            batch=b, clients=c, examples_per_sec=eps, requests_per_sec=done / wall, requests=done,
            errors=len(errors), body_bytes=len(body), **_percentiles([v for l in lats for v in l]),
            fraction_of_in_process=eps / report["in_process"][str(b)]["examples_per_sec"])
  text = json.dumps(report, indent=1)
  print(text)
  if FLAGS.out:
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  app.run(main)
