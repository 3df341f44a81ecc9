r"""Shadow-model training: K small models with one `train_k` call against K sequential `train` calls.

  python benchmarks/shadow_training.py --out=benchmarks/results/shadow_training_cpu.json   # CPU, ~15 min
  python benchmarks/shadow_training.py --arch=wrn16_1 --num_examples=2000 --ks=8,32,64     # GPU

Each model trains on its balanced half of N embedded shapes10 images (LiRA's keep
masks), as `experiments/mia.py` does. Two speed-ups = sequential / train_k per K:
`speedup` on wall time including compilation (what a user waits for; sequential
training compiles one step for all K, train_k one per chunk shape, unrolled
chunks compile slowly), and `speedup_after_compile` without it (the rate that
decides long runs). Prints one JSON object.
"""

import os
import platform
import sys
import time

from absl import app, flags

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # PYTHONPATH wins

flags.DEFINE_string("arch", "cnn_tiny", "Architecture of every shadow model.")
flags.DEFINE_list("ks", ["8", "32", "64"], "Numbers of shadow models.")
flags.DEFINE_integer("num_examples", 2000, "Universe size N; each model keeps N/2.")
flags.DEFINE_integer("num_epochs", 4, "Epochs per model.")
flags.DEFINE_integer("batch_size", 64, "Batch size per model.")
flags.DEFINE_enum("model_axis", "auto", ["auto", "unroll", "vmap"], "train_k's strategy ('auto': unroll on CPU).")
flags.DEFINE_integer("chunk_size", None, "train_k's models per compiled chunk (default: train_k's).")
flags.DEFINE_string("out", None, "Also write the JSON here.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import jax
  import numpy as np

  from mlpriv_jax import data, models, train
  from mlpriv_jax.utils import print_json, write_json

  ds = data.load_dataset("shapes10")
  x, y = ds.x_train[: FLAGS.num_examples], ds.y_train[: FLAGS.num_examples]
  model = models.get_model(FLAGS.arch, 10)
  config = train.TrainConfig(num_epochs=FLAGS.num_epochs, batch_size=FLAGS.batch_size, learning_rate=0.05,
                             schedule="cosine", augment=True).validate()
  key = jax.random.key(0)
  out = dict(arch=FLAGS.arch, num_examples=FLAGS.num_examples, num_epochs=FLAGS.num_epochs,
             batch_size=FLAGS.batch_size, chunk_size=FLAGS.chunk_size, model_axis=train.resolve_model_axis(FLAGS.model_axis),
             backend=jax.default_backend(), device=str(jax.devices()[0].device_kind), cpu=platform.processor(),
             num_cpus=os.cpu_count(), jax=jax.__version__, results={})
  for k in (int(s) for s in FLAGS.ks):
    keep = np.asarray(train.balanced_keep(jax.random.fold_in(key, k), k, len(x)))
    steps = int(np.ceil(keep.sum(1).max() / config.batch_size))
    t = time.perf_counter()
    res = train.train_k(model, config, x, y, keep, key, model_axis=FLAGS.model_axis, chunk_size=FLAGS.chunk_size)
    jax.block_until_ready(res.state.params)
    t_k = time.perf_counter() - t
    t = time.perf_counter()
    compile_seq = 0.0
    for i in range(k):
      r = train.train(model, config, x, y, key, keep=keep[i], model_index=i, steps_per_epoch=steps)
      compile_seq += r.compile_seconds
    jax.block_until_ready(r.state.params)
    t_seq = time.perf_counter() - t
    images = k * steps * config.batch_size * config.num_epochs
    run_k, run_seq = t_k - res.compile_seconds, t_seq - compile_seq
    out["results"][str(k)] = dict(train_k_seconds=t_k, train_k_compile_seconds=res.compile_seconds,
                                  sequential_seconds=t_seq, sequential_compile_seconds=compile_seq,
                                  speedup=t_seq / t_k, speedup_after_compile=run_seq / run_k,
                                  train_k_images_per_sec=images / run_k, sequential_images_per_sec=images / run_seq)
    print(f"K={k}: train_k {t_k:.1f} s ({res.compile_seconds:.1f} compiling), sequential {t_seq:.1f} s "
          f"({compile_seq:.1f}); speed-up {t_seq / t_k:.2f}x, {run_seq / run_k:.2f}x after compilation",
          file=sys.stderr, flush=True)
  print_json(out)
  if FLAGS.out:
    write_json(FLAGS.out, out)


if __name__ == "__main__":
  app.run(main)
