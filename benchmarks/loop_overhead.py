r"""Where a training run's time goes: the engine's loop against its bare compiled step, at one model and batch.

  python benchmarks/loop_overhead.py --out=benchmarks/results/loop_overhead_cpu.json
  python benchmarks/loop_overhead.py --arch=wrn16_8 --batch_size=512 --dtype=bfloat16 \
      --num_images=50000 --epochs=3                       # a GPU: an epoch of CIFAR-10's size

Three figures, each in images per second over the same images:
  step: the compiled train step called back to back on batches already on the device (what the hardware does);
  loop: `train.train` over --epochs (its gather of each batch, the learning rate of each step, the epoch order, the
        loss read at each epoch's end), the first step's compile left out;
  loop + evaluation / + checkpoints: the same with a test-set evaluation (--eval_images) or a checkpoint after every
        epoch, what a recipe that evaluates and saves once at the end does not pay.
Each ratio to `step` is reported; the loop's target is >= 0.95x. The runs alternate (step, loop, step, ...) and
the medians of --repeats are taken, so a noisy machine moves both alike.
"""

import datetime
import os
import statistics
import sys
import tempfile
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks.provenance import commit, machine  # noqa: E402

flags.DEFINE_string("arch", "cnn_small", "Architecture.")
flags.DEFINE_integer("batch_size", 512, "Images per step.")
flags.DEFINE_integer("num_images", 8192, "Training images (synthetic uint8).")
flags.DEFINE_integer("epochs", 2, "Epochs per loop run.")
flags.DEFINE_integer("eval_images", 2048, "Test images of the evaluation variant.")
flags.DEFINE_integer("repeats", 3, "Alternating repeats; medians are reported.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
flags.DEFINE_string("out", None, "Also write the JSON here.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp
  import numpy as np

  from mlpriv_jax import models, train
  from mlpriv_jax.utils import write_json

  dtype = jnp.bfloat16 if FLAGS.dtype == "bfloat16" else jnp.float32
  model = models.get_model(FLAGS.arch, 10, dtype=dtype)
  b, n, epochs = FLAGS.batch_size, FLAGS.num_images, FLAGS.epochs
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  y = rng.integers(0, 10, n)
  xt, yt = x[: FLAGS.eval_images], y[: FLAGS.eval_images]
  config = train.TrainConfig(num_epochs=epochs, batch_size=b, learning_rate=0.1, schedule="cosine", augment=True)
  steps = -(-n // b)
  timed = epochs * steps - 1      # the loop's first step compiles and is left out, as train() itself does

  # The bare step: the loop's own compiled function (same cache key), on batches already on the device.
  tx = train.make_optimizer(config)
  step = train.make_train_step_fn(model, tx, augment=True)
  batches = [{"x": jnp.asarray(x[i * b:(i + 1) * b]), "y": jnp.asarray(y[i * b:(i + 1) * b])}
             for i in range(min(4, n // b))]
  holder = [train.init_train_state(model, tx, jax.random.key(0), (32, 32, 3))]
  keys, lr = jax.random.key(1), np.float32(0.1)

  def bare():
    for i in range(timed):
      holder[0], m = step(holder[0], batches[i % len(batches)], keys, lr)
    jax.block_until_ready((holder[0], m))

  def loop(**kw):
    t0 = time.perf_counter()
    r = train.train(model, config, x, y, jax.random.key(2), **kw)
    return time.perf_counter() - t0 - r.compile_seconds

  holder[0], m = step(holder[0], batches[0], keys, lr)   # compile
  jax.block_until_ready(m)
  loop()                                                 # compile the loop's gather, order and init
  tmp = tempfile.mkdtemp()
  variants = {
      "step": bare,
      "loop": loop,
      "loop_eval_every_epoch": lambda: loop(eval_data=(xt, yt)),
      "loop_checkpoint_every_epoch": lambda: loop(ckpt_path=os.path.join(tmp, f"c{time.time_ns()}.msgpack")),
  }
  loop(eval_data=(xt, yt))                               # compile the evaluation
  seconds = {k: [] for k in variants}
  for _ in range(FLAGS.repeats):
    for name, fn in variants.items():
      t0 = time.perf_counter()
      r = fn()
      seconds[name].append(r if name != "step" else time.perf_counter() - t0)
  med = {k: statistics.median(v) for k, v in seconds.items()}
  ips = {k: timed * b / s for k, s in med.items()}
  figures = {k: dict(images_per_sec=round(v, 1), seconds=round(med[k], 3), ratio_to_step=round(v / ips["step"], 3),
                     all_seconds=[round(s, 3) for s in seconds[k]]) for k, v in ips.items()}
  params = sum(a.size for a in jax.tree.leaves(holder[0].params))
  report = dict(
      what="the training loop's images/s against its bare compiled step's, the same images and steps",
      summary=(f"{FLAGS.arch} batch {b} {FLAGS.dtype}: loop {figures['loop']['ratio_to_step']:.3f}x the bare step "
               f"({ips['step']:.0f} img/s); evaluating every epoch "
               f"{figures['loop_eval_every_epoch']['ratio_to_step']:.3f}x, a checkpoint every epoch "
               f"{figures['loop_checkpoint_every_epoch']['ratio_to_step']:.3f}x"),
      setup=dict(arch=FLAGS.arch, parameters=int(params), batch_size=b, num_images=n, epochs=epochs,
                 steps_timed=timed, eval_images=FLAGS.eval_images, dtype=FLAGS.dtype, repeats=FLAGS.repeats,
                 backend=jax.default_backend(), device=jax.devices()[0].device_kind),
      figures=figures,
      target=dict(loop_ratio_at_least=0.95, met=bool(figures["loop"]["ratio_to_step"] >= 0.95)),
      provenance=dict(machine=machine() if jax.default_backend() == "cpu" else jax.devices()[0].device_kind,
                      date=datetime.date.today().isoformat(), commit=commit(),
                      command="python benchmarks/loop_overhead.py " + " ".join(sys.argv[1:])))
  print(report["summary"], file=sys.stderr)
  if FLAGS.out:
    write_json(FLAGS.out, report)
  else:
    import json
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
  app.run(main)
