"""Data-free model extraction: the attacker has no query pool; a generator synthesises its queries.

DFME (Truong, Maini, Walls, Papernot, CVPR 2021; the authors' `dfme/train.py`, `approximate_gradients.py`): a
generator G is trained to maximise the disagreement between the student S and the victim V, L(x) = ||S(x) - V^(x)||_1
(mean over classes), where V^ = log p - mean(log p) recovers the victim's logits from its probabilities (`no_logits`,
`logit_correction='mean'`). The victim gives no gradient, so dL/dx at G's pre-tanh output x is estimated by forward
differences along m random unit directions u_i (eps = 1e-3):

  g(x) = dim / m * sum_i [(-L(x + eps u_i)) - (-L(x))] / eps * u_i,   divided by (C * B) as the original,

and pushed back through G (`jax.vjp`: the original's `fake.backward(approx_grad)`) for an Adam step that lowers -L.
Then the student takes `d_iter` SGD steps on fresh generated batches, minimising L. Every victim forward is a query:
B * (g_iter * (m + 1) + d_iter) per iteration.

An iteration is four compiled functions, one per shape: the generator step's query points; its update from the
answers (the estimate and the pull-back through G); the student's batches; its d_iter steps (a `scan`). The oracle
(in process, served, any endpoint) is called from Python between them, twice an iteration, on whole batches: never a
Python loop per query. (Reaching it from inside one compiled loop through `io_callback` deadlocks when the oracle is a
JAX model itself, as JAX's documentation of host callbacks warns; an in-process victim is one.)

Deviations: G's tanh output is mapped to the oracle's images, (tanh(x) + 1) / 2 in [0, 1] (the original feeds it to
the victim's normalised input space); the generator's BatchNorm always uses the batch's statistics (the original's
generator never leaves train mode, so its running statistics are never read); the learning-rate milestones (x0.3 at
10%, 30% and 50%) are fractions of the iterations, not of 50-iteration epochs; a probability of 0 (a top-k or rounded
answer) is floored before its log (`logit_floor`), which is where such defences break the logit recovery.
"""

import math
import time
from typing import Callable, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mlpriv_jax import streams, train
from mlpriv_jax.errors import UserError
from mlpriv_jax.models import Model
from mlpriv_jax.oracle import Oracle


class _BatchStatsNorm(nn.Module):
  """BatchNorm with the batch's statistics (PyTorch's BatchNorm2d in train mode, eps 1e-5), optionally affine."""
  affine: bool = True

  @nn.compact
  def __call__(self, x):
    mean, var = x.mean((0, 1, 2), keepdims=True), x.var((0, 1, 2), keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + 1e-5)
    if self.affine:
      channel = (1, 1, 1, x.shape[-1])
      y = y * self.param("scale", nn.initializers.ones, channel) + self.param("bias", nn.initializers.zeros, channel)
    return y


def _upsample2(x):
  """Nearest-neighbour x2 (PyTorch's interpolate(scale_factor=2))."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class Generator(nn.Module):
  """DFME's GeneratorA (`network/gan.py`): Linear -> BN -> up x2 -> conv-BN-LReLU(0.2) -> up x2 -> conv-BN-LReLU ->
  conv -> BN(affine=False); returns the pre-tanh image f32[B, H, W, C] (`pre_x=True`)."""
  nz: int = 256
  ngf: int = 64
  image_shape: Sequence[int] = (32, 32, 3)

  @nn.compact
  def __call__(self, z):
    h, w, c = self.image_shape
    x = nn.Dense(self.ngf * 2 * (h // 4) * (w // 4))(z).reshape(-1, h // 4, w // 4, self.ngf * 2)
    x = _upsample2(_BatchStatsNorm()(x))
    x = nn.leaky_relu(_BatchStatsNorm()(nn.Conv(self.ngf * 2, (3, 3))(x)), 0.2)
    x = _upsample2(x)
    x = nn.leaky_relu(_BatchStatsNorm()(nn.Conv(self.ngf, (3, 3))(x)), 0.2)
    return _BatchStatsNorm(affine=False)(nn.Conv(c, (3, 3))(x))


def to_images(x_pre):
  """The oracle's images from pre-tanh values: (tanh(x) + 1) / 2, in [0, 1]."""
  return (jnp.tanh(x_pre) + 1.0) / 2.0


def recover_logits(probs, floor: float = 1e-6):
  """DFME's logit recovery from released probabilities: log p minus its mean over classes (invariant to a constant
  added to the victim's logits; a probability below `floor`, a top-k's or a rounding's 0, is read as `floor`)."""
  logp = jnp.log(jnp.maximum(probs, floor))
  return logp - logp.mean(-1, keepdims=True)


def unit_directions(key, batch: int, m: int, shape: Sequence[int]):
  """m directions per sample, uniform on the unit sphere of R^dim: f32[batch, m, *shape]."""
  u = jax.random.normal(key, (batch, m, math.prod(shape)))
  return (u / jnp.linalg.norm(u, axis=-1, keepdims=True)).reshape(batch, m, *shape)


def evaluation_points(x, u, eps: float):
  """x + eps u_i for each direction, then x itself: f32[B, m + 1, ...] (the original's order)."""
  return jnp.concatenate([x[:, None] + eps * u, x[:, None]], axis=1)


def forward_difference_gradient(values, u, eps: float):
  """The forward-difference estimate of d(value)/dx at each sample: dim / m * sum_i (v(x + eps u_i) - v(x)) / eps u_i,
  from values f32[B, m + 1] at `evaluation_points` and the directions u f32[B, m, ...]."""
  m, dim = u.shape[1], math.prod(u.shape[2:])
  diff = (values[:, :m] - values[:, m:]) / eps
  return dim * jnp.einsum("bm,bm...->b...", diff, u) / m


def multistep(base: float, n: int, milestones: Sequence[float], scale: float) -> np.ndarray:
  """f32[n]: `base` times `scale` for every milestone (a fraction of n) already passed (PyTorch's MultiStepLR)."""
  at = np.array(sorted(int(f * n) for f in milestones))
  return (base * scale ** np.searchsorted(at, np.arange(n), side="right")).astype(np.float32)


class NeedsProbabilities(UserError):
  """A soft-label data-free attack against a victim that releases labels only."""


def l1_loss(logits, targets):
  """F.l1_loss: the mean absolute difference over the batch and the classes."""
  return jnp.abs(logits - targets).mean()


class DataFreeResult(NamedTuple):
  state: train.TrainState      # the student
  snapshots: list              # [(queries used, student state)] at each checkpoint
  images: np.ndarray           # f32[n, H, W, C]: the first queries sent (at most `keep` of them)
  answers: np.ndarray          # f32[n, C]: their answers
  iterations: int              # iterations run
  stopped: Optional[str]       # why the run stopped early (None: it spent its budget)
  history: list                # [{'iterations', 'queries', 'generator_loss', 'student_loss', 'seconds', ...}]


class _Progress:
  """What both data-free loops keep of a run: the first `keep` queries and answers, the history, the snapshots at
  the checkpoints (query counts, down to whole iterations) and at the end, and the caller's reports every
  `report_every` queries. Each record also says which classes the victim's top-1 answers covered since the record
  before (`answered_classes`, `top_class_share`): a generator stuck in a few of the victim's classes teaches the
  student nothing of the others, whatever the budget."""

  def __init__(self, oracle: Oracle, n: int, cost: int, checkpoints: Sequence[int], report_every: int, keep: int,
               progress: Optional[Callable]):
    self.oracle, self.n, self.keep, self.progress = oracle, n, keep, progress
    self.snap_at = {min(n, c // cost) for c in checkpoints if c >= cost} | {n}
    self.every = max(1, report_every // cost)
    self.used0, self.t0 = oracle.queries_used, time.time()
    self.snapshots, self.history, self.images, self.answers = [], [], [], []
    self.top1 = np.zeros(oracle.num_classes, np.int64)   # the victim's top-1 answers since the last record

  @property
  def queries(self) -> int:
    return self.oracle.queries_used - self.used0

  def answered(self, images, answers) -> None:
    """Every batch the victim answered: its top-1 counted, the batch kept while fewer than `keep` are held."""
    self.top1 += np.bincount(np.asarray(answers).argmax(-1), minlength=len(self.top1))
    held = sum(map(len, self.images))
    if held < self.keep:
      self.images.append(images[:self.keep - held])
      self.answers.append(answers[:len(self.images[-1])])

  def after(self, done: int, stopped: Optional[str], state, generator_loss, student_loss) -> None:
    """After an iteration: a record, a snapshot and a report where due."""
    last = stopped is not None or done == self.n
    if not (done in self.snap_at or last or done % self.every == 0):
      return
    seconds = time.time() - self.t0
    record = dict(iterations=done, queries=self.queries, generator_loss=float(generator_loss),
                  student_loss=float(student_loss), seconds=seconds,
                  seconds_left=seconds / max(done, 1) * (self.n - done),
                  answered_classes=int((self.top1 > 0).sum()),
                  top_class_share=float(self.top1.max() / max(self.top1.sum(), 1)))
    self.top1[:] = 0
    self.history.append(record)
    if (done in self.snap_at or last) and (not self.snapshots or self.snapshots[-1][0] != self.queries):
      self.snapshots.append((self.queries, state))
    if self.progress is not None:
      self.progress(self.queries, state, record)

  def result(self, state, done: int, stopped: Optional[str], shape, num_classes: int) -> "DataFreeResult":
    images = np.concatenate(self.images) if self.images else np.zeros((0, *shape), np.float32)
    answers = np.concatenate(self.answers) if self.answers else np.zeros((0, num_classes), np.float32)
    return DataFreeResult(state, self.snapshots, images, answers, done, stopped, self.history)


def cost_per_iteration(options) -> int:
  """DFME's victim queries per iteration: B (g_iter (m + 1) + d_iter)."""
  return options.batch_size * (options.g_iter * (options.grad_m + 1) + options.d_iter)


class _DfmeFunctions(NamedTuple):
  points: Callable           # (g_params, key) -> the generator step's queries f32[B (m + 1), H, W, C]
  generator_update: Callable  # (g_params, g_opt, s_vars, key, answers, lr) -> (g_params, g_opt, disagreement)
  fakes: Callable            # (g_params, key) -> the student's batches f32[d_iter, B, H, W, C]
  student_update: Callable   # (s_state, fakes, answers, key, lr) -> (s_state, mean loss)
  tx_student: optax.GradientTransformation
  tx_generator: optax.GradientTransformation


def _dfme_functions(student: Model, gen: Generator, options, num_classes: int, image_shape) -> _DfmeFunctions:
  o = options
  b, m, eps, shape = o.batch_size, o.grad_m, o.grad_epsilon, tuple(image_shape)
  tx_s = train.make_optimizer(train.TrainConfig(learning_rate=o.lr_student, momentum=0.9, nesterov=False,
                                                weight_decay=o.weight_decay))
  tx_g = optax.inject_hyperparams(optax.adam)(learning_rate=o.lr_generator)
  s_grad = train.make_grad_fn(student, l1_loss, augment=False)

  def draw(g_params, key):   # the generator's pre-tanh batch and its directions, the same for both halves
    kz, ku = jax.random.split(key)
    x, pullback = jax.vjp(lambda p: gen.apply({"params": p}, jax.random.normal(kz, (b, o.nz))), g_params)
    return x, pullback, unit_directions(ku, b, m, shape)

  def points(g_params, key):
    x, _, u = draw(g_params, key)
    return to_images(evaluation_points(x, u, eps)).reshape(-1, *shape)

  def generator_update(g_params, g_opt, s_vars, key, answers, lr):
    x, pullback, u = draw(g_params, key)
    s_logits = student.apply(s_vars, to_images(evaluation_points(x, u, eps)).reshape(-1, *shape), train=False)[0]
    values = -jnp.abs(s_logits - recover_logits(answers, o.logit_floor)).mean(-1).reshape(b, m + 1)
    grad = forward_difference_gradient(values, u, eps) / (num_classes * b)
    g_opt = g_opt._replace(hyperparams=dict(g_opt.hyperparams, learning_rate=lr))
    updates, g_opt = tx_g.update(pullback(grad)[0], g_opt, g_params)
    return optax.apply_updates(g_params, updates), g_opt, -values[:, m].mean()

  def fakes(g_params, key):
    z = jax.random.normal(key, (o.d_iter, b, o.nz))
    return jax.vmap(lambda zz: to_images(gen.apply({"params": g_params}, zz)))(z)

  def student_update(s_state, images, answers, key, lr):
    targets = recover_logits(answers, o.logit_floor).reshape(o.d_iter, b, num_classes)

    losses = []
    for j in range(o.d_iter):   # unrolled: XLA:CPU runs convolutions inside a scan's loop ~50x slower
      s_state, measured = train.update(tx_s, s_grad, s_state, {"x": images[j], "y": targets[j]}, key, lr)
      losses.append(measured["loss"])
    return s_state, jnp.stack(losses).mean()
  return _DfmeFunctions(jax.jit(points), jax.jit(generator_update), jax.jit(fakes),
                        jax.jit(student_update), tx_s, tx_g)


def dfme(oracle: Oracle, budget: int, key, student: Model, *, options, checkpoints: Sequence[int] = (),
         progress: Optional[Callable] = None, keep: int = 1000) -> DataFreeResult:
  """DFME within `budget` queries (checked by the caller: `extraction.run`): floor(budget / cost) iterations.

  checkpoints: query counts at which the student is also kept (each rounded down to a whole iteration);
  progress(queries_used, student state, record): called every `options.report_every` queries and at the end;
  keep: how many of the first queries (images and answers) the result holds (the PRADA monitor reads them).
  A victim that answers labels only is refused at the first answer (NeedsProbabilities); a generator or student
  that diverges (a NaN) stops the run, the student of the iteration before kept and the reason in `stopped`."""
  o = options
  shape, num_classes = tuple(oracle.input_shape), oracle.num_classes
  n = budget // cost_per_iteration(o)
  gen = Generator(o.nz, o.ngf, shape)
  f = train.FUNCTIONS.get(("dfme", student.module, o, num_classes, shape),
                          lambda: _dfme_functions(student, gen, o, num_classes, shape))
  s_state = train.init_train_state(student, f.tx_student, streams.derive(key, streams.DATAFREE_STUDENT), shape)
  g_params = gen.init(streams.derive(key, streams.DATAFREE_GENERATOR), jnp.zeros((2, o.nz)))["params"]
  g_opt = f.tx_generator.init(g_params)
  lr_s, lr_g = multistep(o.lr_student, n, o.milestones, o.scale), multistep(o.lr_generator, n, o.milestones, o.scale)
  k_it = streams.derive(key, streams.DATAFREE_ITERATIONS)
  run = _Progress(oracle, n, cost_per_iteration(o), checkpoints, o.report_every, keep, progress)
  stopped = None

  def ask(images):
    images = np.asarray(images, np.float32)
    if not np.all(np.isfinite(images)):
      return None
    a = np.asarray(oracle.query(images), np.float32)
    if run.queries == len(images) and np.all((a == 0) | (a == 1)):
      raise NeedsProbabilities("dfme needs the victim's probabilities (it recovers logits from them); this victim "
                               "answers labels only (one-hot): use a hard-label attack")
    run.answered(images, a)
    return a

  done = 0
  for i in range(n):
    k_g, k_s = jax.random.split(streams.derive(k_it, i))
    new_g, new_opt, g_loss, s_loss = g_params, g_opt, float("nan"), float("nan")
    for j in range(o.g_iter):
      k = jax.random.fold_in(k_g, j)
      answers = ask(f.points(new_g, k))
      if answers is None:
        break
      new_g, new_opt, g_loss = f.generator_update(new_g, new_opt, train.variables_of(s_state), k, answers, lr_g[i])
    fakes = f.fakes(new_g, k_s) if answers is not None else None
    answers = None if fakes is None else ask(np.asarray(fakes).reshape(-1, *shape))
    if answers is not None:
      previous = s_state
      s_state, s_loss = f.student_update(s_state, fakes, answers, k_s, lr_s[i])
      if not np.isfinite(float(s_loss)):
        s_state, answers = previous, None
    if answers is None:
      stopped = (f"the generator or the student diverged (a NaN) at iteration {i} of {n}, after {run.queries} "
                 f"queries; the student of iteration {i - 1} is kept")
      s_loss = float("nan")
    else:
      g_params, g_opt, done = new_g, new_opt, i + 1
    run.after(done, stopped, s_state, g_loss, s_loss)
    if stopped is not None:
      break
  return run.result(s_state, done, stopped, shape, num_classes)


# --- DisGUIDE: hard labels, two students --------------------------------------------------------------------------

def grayscale_rows(key, images, every: int):
  """DisGUIDE's `grayscale`: every `every`-th row gets one channel, drawn once per batch, copied onto all channels
  (0: none)."""
  if not every:
    return images
  c = jax.random.randint(key, (), 0, images.shape[-1])
  gray = jnp.broadcast_to(jnp.take(images, c, axis=-1)[..., None], images.shape)
  rows = (jnp.arange(images.shape[0]) % every == 0).reshape(-1, 1, 1, 1)
  return jnp.where(rows, gray, images)


def disagreement_loss(probs, lambda_div: float):
  """DisGUIDE's generator loss over the students' probabilities f32[K, B, C]: minus their mean (unbiased) standard
  deviation, plus lambda_div times the negative entropy of the batch's mean vote (a diversity term)."""
  mean_vote = probs.mean((0, 1)) + 1e-6
  return -probs.std(0, ddof=1).mean() + lambda_div * (mean_vote * jnp.log(mean_vote)).sum()


class _DisguideFunctions(NamedTuple):
  generator_step: Callable   # (g_params, g_opt, s_vars [K], key, lr) -> (g_params, g_opt, loss): no queries
  fakes: Callable            # (g_params, key) -> f32[B, H, W, C]
  student_update: Callable   # (s_states [K], images [1 + R, B, ...], labels [1 + R, B], key, lr) -> (states, loss)
  tx_student: optax.GradientTransformation
  tx_generator: optax.GradientTransformation


def _disguide_functions(student: Model, gen: Generator, options, num_students: int) -> _DisguideFunctions:
  o = options
  tx_s = train.make_optimizer(train.TrainConfig(learning_rate=o.lr_student, momentum=0.9, nesterov=False,
                                                weight_decay=o.weight_decay))
  tx_g = optax.inject_hyperparams(optax.adam)(learning_rate=o.lr_generator)
  s_grad = train.make_grad_fn(student, augment=False)   # cross-entropy on the victim's labels
  member = lambda tree, k: jax.tree.map(lambda a: a[k], tree)

  def images_of(g_params, key):
    kz, kg = jax.random.split(key)
    x = to_images(gen.apply({"params": g_params}, jax.random.normal(kz, (o.batch_size, o.nz))))
    return grayscale_rows(kg, x, o.grayscale)

  def generator_step(g_params, g_opt, s_vars, key, lr):
    def loss(p):   # the students in train mode, as the original's; their batch statistics not kept
      x = images_of(p, key)
      probs = jnp.stack([jax.nn.softmax(student.apply(member(s_vars, k), x, train=True)[0])
                         for k in range(num_students)])
      return disagreement_loss(probs, o.lambda_div)
    value, grads = jax.value_and_grad(loss)(g_params)
    g_opt = g_opt._replace(hyperparams=dict(g_opt.hyperparams, learning_rate=lr))
    updates, g_opt = tx_g.update(grads, g_opt, g_params)
    return optax.apply_updates(g_params, updates), g_opt, value

  def student_update(s_states, images, labels, key, lr):
    out, losses = [], []
    for k in range(num_students):   # unrolled (a scan's convolutions run ~50x slower on XLA:CPU)
      state = member(s_states, k)
      for j in range(images.shape[0]):   # the new batch, then the replayed ones
        state, measured = train.update(tx_s, s_grad, state, {"x": images[j], "y": labels[j]}, key, lr)
        losses.append(measured["loss"])
      out.append(state)
    return jax.tree.map(lambda *xs: jnp.stack(xs), *out), jnp.stack(losses).mean()
  return _DisguideFunctions(jax.jit(generator_step), jax.jit(images_of), jax.jit(student_update), tx_s, tx_g)


def disguide(oracle: Oracle, budget: int, key, student: Model, *, options, checkpoints: Sequence[int] = (),
             progress: Optional[Callable] = None, keep: int = 1000) -> DataFreeResult:
  """DisGUIDE (Rosenthal, Enouen, Pham, Tan, AAAI 2023; `lin-tan/disguide`), hard-label: two students; the
  generator maximises their disagreement (no victim query); each iteration queries the victim on one generated batch
  (B queries), stores it with the victim's top-1 in a replay buffer, and trains both students on it and on
  `replay_steps` batches drawn from the buffer. The result's state holds the K = 2 students stacked (a leading
  model axis): it is judged by their soft vote, the mean of their softmax, as the paper reports."""
  o = options
  shape, num_classes, k_students = tuple(oracle.input_shape), oracle.num_classes, 2
  n = budget // o.batch_size
  gen = Generator(o.nz, o.ngf, shape)
  f = train.FUNCTIONS.get(("disguide", student.module, o, shape),
                          lambda: _disguide_functions(student, gen, o, k_students))
  k_student = streams.derive(key, streams.DATAFREE_STUDENT)
  states = [train.init_train_state(student, f.tx_student, jax.random.fold_in(k_student, k), shape)
            for k in range(k_students)]
  s_states = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
  g_params = gen.init(streams.derive(key, streams.DATAFREE_GENERATOR), jnp.zeros((2, o.nz)))["params"]
  g_opt = f.tx_generator.init(g_params)
  lr_s, lr_g = multistep(o.lr_student, n, o.milestones, o.scale), multistep(o.lr_generator, n, o.milestones, o.scale)
  k_it = streams.derive(key, streams.DATAFREE_ITERATIONS)
  capacity = min(o.replay_size, n * o.batch_size)
  buffer_x = np.zeros((capacity, *shape), np.float16)   # the replay buffer, a ring (float16: half the memory)
  buffer_y = np.zeros((capacity,), np.int32)
  filled, head = 0, 0
  run = _Progress(oracle, n, o.batch_size, checkpoints, o.report_every, keep, progress)
  stopped, done = None, 0
  for i in range(n):
    k_g, k_f, k_r, k_s = jax.random.split(streams.derive(k_it, i), 4)
    new_g, new_opt, g_loss = f.generator_step(g_params, g_opt, train.variables_of(s_states), k_g, lr_g[i])
    images = np.asarray(f.fakes(new_g, k_f), np.float32)
    s_loss = float("nan")
    if not np.all(np.isfinite(images)):
      stopped = (f"the generator diverged (a NaN) at iteration {i} of {n}, after {run.queries} queries; the "
                 f"students of iteration {i - 1} are kept")
    else:
      answers = np.asarray(oracle.query(images), np.float32)
      run.answered(images, answers)
      take = np.arange(head, head + len(images)) % capacity
      buffer_x[take], buffer_y[take] = images, answers.argmax(-1)
      head, filled = (head + len(images)) % capacity, min(capacity, filled + len(images))
      # the replayed batches: drawn from what the buffer holds (with replacement; the original draws without)
      rows = np.asarray(jax.random.randint(k_r, (o.replay_steps, o.batch_size), 0, filled))
      batch_x = np.concatenate([images[None], buffer_x[rows].astype(np.float32)])
      batch_y = np.concatenate([answers.argmax(-1)[None], buffer_y[rows]]).astype(np.int32)
      new_s, s_loss = f.student_update(s_states, batch_x, batch_y, k_s, lr_s[i])
      if np.isfinite(float(s_loss)):
        s_states, g_params, g_opt, done = new_s, new_g, new_opt, i + 1
      else:
        stopped = (f"the students diverged (a NaN) at iteration {i} of {n}, after {run.queries} queries; the "
                   f"students of iteration {i - 1} are kept")
        s_loss = float("nan")
    run.after(done, stopped, s_states, g_loss, s_loss)
    if stopped is not None:
      break
  return run.result(s_states, done, stopped, shape, num_classes)
