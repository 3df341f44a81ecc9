r"""Training and inference throughput per architecture, and train_k against K sequential trainings.

  python benchmarks/train_throughput.py                       # CPU defaults, a few minutes on 2 cores
  python benchmarks/train_throughput.py --archs=wrn16_8,wrn22_8,resnet32,resnet18,vgg16 \
      --ks= --dtype=bfloat16 --peak_tflops=989                # GPU: adds achieved TFLOP/s and MFU

Prints one JSON object; with --out it is rewritten after every measurement, so a killed run keeps what it
measured. Images/s are medians over --steps steps after the first
(compiling) call; compile seconds are reported apart. With PyTorch importable
(`pip install torch==2.13.0`, never a dependency) the same cnn_small and
wrn16_4 train steps are timed in PyTorch for the ratio.
"""

import os
import platform
import sys
import time

from absl import app, flags

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # PYTHONPATH wins

flags.DEFINE_list("archs", ["cnn_small", "wrn16_4", "resnet20", "resnet32"], "Architectures to time.")
flags.DEFINE_list("ks", ["1", "8", "32"], "Model counts for the train_k comparison (empty: skip).")
flags.DEFINE_list("k_archs", ["cnn_small"], "Architectures of the train_k comparison.")
flags.DEFINE_list("model_axes", ["unroll", "vmap"], "train_k strategies to time.")
flags.DEFINE_integer("batch_size", 128, "Images per step (per model).")
flags.DEFINE_integer("steps", 5, "Timed steps per measurement (after one compiling step).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
flags.DEFINE_float("peak_tflops", 0.0, "Device peak for MFU (e.g. 989 for H100/H200 dense bf16); 0: no MFU.")
flags.DEFINE_boolean("torch", True, "Also time PyTorch (if importable) on cnn_small and wrn16_4.")
flags.DEFINE_string("out", None, "Also write the JSON here.")
FLAGS = flags.FLAGS


def _median_time(fn, steps):
  import numpy as np
  ts = []
  for i in range(steps):
    t = time.perf_counter()
    fn(i + 1)
    ts.append(time.perf_counter() - t)
  return float(np.median(ts))


def time_train_step(arch, num_models=None, model_axis="auto"):
  import jax
  import jax.numpy as jnp
  import numpy as np

  from mlpriv_jax import models, train

  b = FLAGS.batch_size
  dtype = jnp.bfloat16 if FLAGS.dtype == "bfloat16" else jnp.float32
  model = models.get_model(arch, 10, dtype=dtype)
  if num_models and train.resolve_model_axis(model_axis) == "vmap" and jax.default_backend() == "cpu":
    model = models.with_conv_impl(model, "im2col")  # what train_k does
  tx = train.make_optimizer(train.TrainConfig(num_epochs=1))
  rng = np.random.default_rng(0)
  shape = (num_models, b) if num_models else (b,)
  batches = [{"x": jnp.asarray(rng.integers(0, 256, (*shape, 32, 32, 3), dtype=np.uint8)),
              "y": jnp.asarray(rng.integers(0, 10, shape))} for _ in range(4)]
  init = lambda k: train.init_train_state(model, tx, k, (32, 32, 3))
  if num_models:
    state = jax.jit(jax.vmap(init))(jax.random.split(jax.random.key(0), num_models))
    keys = jax.random.split(jax.random.key(1), num_models)
  else:
    state = init(jax.random.key(0))
    keys = jax.random.key(1)
  step = train.make_train_step_fn(model, tx, num_models=num_models, model_axis=model_axis)
  lr = np.float32(0.1)
  t0 = time.perf_counter()
  lowered = step.lower(state, batches[0], keys, lr)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  flops = None
  try:  # counted on the program lowered for CPU, before XLA's passes: on GPU the compiled program's count leaves
    # out the convolutions (cuDNN custom calls; 250x too few for wrn16_8) and the GPU lowering's has no "flops"
    cost = step.trace(state, batches[0], keys, lr).lower(lowering_platforms=("cpu",)).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", 0.0)) or None
  except Exception:  # cost analysis is best effort
    pass
  holder = [state]

  def run(i):
    holder[0], m = compiled(holder[0], batches[i % len(batches)], keys, lr)
    jax.block_until_ready((holder[0], m))  # the update, not only the loss, is inside the timed step

  run(0)
  dt = _median_time(run, FLAGS.steps)
  out = dict(images_per_sec=b * (num_models or 1) / dt, step_seconds=dt, compile_seconds=compile_s)
  if flops:
    out["tflops_per_sec"] = flops / dt / 1e12
    if FLAGS.peak_tflops:
      out["mfu"] = out["tflops_per_sec"] / FLAGS.peak_tflops
  return out


def time_inference(arch):
  import jax
  import jax.numpy as jnp
  import numpy as np

  from mlpriv_jax import models, train
  dtype = jnp.bfloat16 if FLAGS.dtype == "bfloat16" else jnp.float32
  model = models.get_model(arch, 10, dtype=dtype)
  v = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  fn = train.make_predict_fn(model)
  x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (FLAGS.batch_size, 32, 32, 3), dtype=np.uint8))
  t0 = time.perf_counter()
  jax.block_until_ready(fn(v, x))
  compile_s = time.perf_counter() - t0
  dt = _median_time(lambda i: jax.block_until_ready(fn(v, x)), FLAGS.steps)
  return dict(images_per_sec=FLAGS.batch_size / dt, compile_seconds=compile_s)


def time_torch(arch):
  """The same architecture and step (SGD-momentum, BN, cross-entropy) in PyTorch."""
  import torch
  from torch import nn

  def cnn_small():
    layers, c = [], 3
    for w in (32, 64, 128):
      layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2)]
      c = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))

  class Block(nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.short = nn.Conv2d(cin, cout, 1, stride, bias=False) if (cin != cout or stride != 1) else None

    def forward(self, x):
      o = torch.relu(self.bn1(x))
      s = self.short(o) if self.short is not None else x
      return s + self.conv2(torch.relu(self.bn2(self.conv1(o))))

  def wrn(depth, k):
    n = (depth - 4) // 6
    layers, c = [nn.Conv2d(3, 16, 3, 1, 1, bias=False)], 16
    for g, w in enumerate((16 * k, 32 * k, 64 * k)):
      for b in range(n):
        layers.append(Block(c, w, 2 if (g > 0 and b == 0) else 1))
        c = w
    return nn.Sequential(*layers, nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(c, 10))

  torch.manual_seed(0)
  net = {"cnn_small": cnn_small, "wrn16_4": lambda: wrn(16, 4)}[arch]()
  net = net.to(memory_format=torch.channels_last)
  opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
  x = torch.randn(FLAGS.batch_size, 3, 32, 32).to(memory_format=torch.channels_last)
  y = torch.randint(0, 10, (FLAGS.batch_size,))

  def run(i):
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(net(x), y).backward()
    opt.step()

  run(0)
  dt = _median_time(run, FLAGS.steps)
  return dict(images_per_sec=FLAGS.batch_size / dt, torch_version=torch.__version__,
              torch_threads=torch.get_num_threads())


def main(argv):
  del argv
  import jax

  from mlpriv_jax.utils import atomic_write, jsonable
  import json
  report = dict(backend=jax.default_backend(), device=jax.devices()[0].device_kind, jax=jax.__version__,
                cpu_count=os.cpu_count(), machine=platform.machine(), batch_size=FLAGS.batch_size,
                dtype=FLAGS.dtype, archs={}, train_k={})

  def save():
    if FLAGS.out:
      text = json.dumps(report, indent=2, sort_keys=True, default=jsonable)
      atomic_write(FLAGS.out, lambda f: f.write(text), mode="w")

  for arch in [a for a in FLAGS.archs if a]:
    r = dict(train=time_train_step(arch), inference=time_inference(arch))
    print(f"{arch}: {r['train']['images_per_sec']:.1f} train img/s", file=sys.stderr, flush=True)
    report["archs"][arch] = r
    save()
  if FLAGS.torch:
    try:
      import torch  # noqa: F401  (only whether it is installed)
    except ImportError:
      report["torch"] = "not installed"
    else:
      report["torch"] = {}
      for arch in ("cnn_small", "wrn16_4"):
        t = time_torch(arch)
        report["torch"][arch] = t
        if arch in report["archs"]:
          t["jax_over_torch"] = report["archs"][arch]["train"]["images_per_sec"] / t["images_per_sec"]
        print(f"torch {arch}: {t['images_per_sec']:.1f} train img/s", file=sys.stderr, flush=True)
        save()
  ks = [int(k) for k in FLAGS.ks if k]
  for arch in [a for a in FLAGS.k_archs if a] if ks else []:
    single = time_train_step(arch)
    entry = report["train_k"].setdefault(arch, {"sequential_step_seconds_per_model": single["step_seconds"]})
    for axis in FLAGS.model_axes:
      for k in ks:
        r = time_train_step(arch, num_models=k, model_axis=axis)
        # K sequential trainings take K single steps for what one train_k step does.
        r["speedup_vs_sequential"] = k * single["step_seconds"] / r["step_seconds"]
        entry[f"{axis}_K{k}"] = r
        print(f"train_k {arch} {axis} K={k}: {r['speedup_vs_sequential']:.2f}x sequential", file=sys.stderr,
              flush=True)
        save()
  print(json.dumps(report, indent=2, sort_keys=True, default=jsonable))
  save()


if __name__ == "__main__":
  app.run(main)
