"""The victim's query door: the `Oracle` protocol every attack takes, and the in-process `Victim`.

An attack sees an `Oracle` and nothing else of the victim: `query(x) -> f32[B, C]` (the released, possibly
defended, probability vectors), `num_classes`, `input_shape`, `queries_used` and `budget_left` (None: no
limit). Every example queried counts against the budget; a query that would pass it is refused whole.

The in-process victim is two parts, so that a server with many clients reuses one compiled model:

* a `Service`: model + defence as one jitted function of (variables, x, defence state, key), the weights an
  argument rather than a constant baked into the program; batches are padded to a few bucket sizes (the last
  row repeated), so a new batch size compiles nothing once its bucket has been compiled, and only the real rows
  are returned;
* an `Account` per client: its budget, counter, key, stream monitor (PRADA) and defence state.

A `Victim` is one account of one service. Randomness per call is `fold_in(key, queries_used)`, so a rerun
reproduces every answer.
"""

from typing import Callable, Optional, Protocol, Sequence, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from mlpriv_jax.defences import Defence, client_state, identity
from mlpriv_jax.errors import UserError, integer

# Padded batch sizes; a batch larger than the last is answered in chunks of that size.
BUCKETS = (1, 8, 64, 512)


@runtime_checkable
class Oracle(Protocol):
  """What an attack may use of a victim (in-process, served over HTTP, or a user's own endpoint)."""

  num_classes: int
  input_shape: tuple

  def query(self, x) -> np.ndarray:
    """f32[B, C] released for images x (u8[B, H, W, C], or floats in [0, 1])."""

  @property
  def queries_used(self) -> int:
    """Examples answered so far."""

  @property
  def budget_left(self) -> Optional[int]:
    """Examples this client may still ask for (None: unlimited)."""


class BudgetExceeded(UserError):
  """A query would pass the victim's budget; nothing was answered."""


class QueryError(UserError):
  """A query has the wrong shape, dtype or values; nothing was answered or counted."""


class QueryRefused(UserError):
  """The victim's monitor (PRADA) flagged this client and the victim refuses to answer."""


def validate_queries(x, input_shape) -> np.ndarray:
  """f32[B, H, W, C] in [0, 1] from uint8 or float images, or QueryError naming what is wrong."""
  x = np.asarray(x)
  if x.ndim != 4 or tuple(x.shape[1:]) != tuple(input_shape):
    raise QueryError(f"queries must have shape [B, {', '.join(map(str, input_shape))}], got {list(x.shape)}")
  if x.shape[0] == 0:
    raise QueryError("empty query batch")
  if x.dtype == np.uint8:
    return x.astype(np.float32) / 255.0
  if not np.issubdtype(x.dtype, np.floating):
    raise QueryError(f"queries must be float in [0, 1] or uint8, got {x.dtype}")
  if not np.all(np.isfinite(x)):
    raise QueryError(f"queries hold {int((~np.isfinite(x)).sum())} NaN or inf values")
  if x.min() < 0 or x.max() > 1:
    raise QueryError(f"query values must lie in [0, 1], got [{x.min():.3g}, {x.max():.3g}]")
  return x.astype(np.float32)


class Service:
  """A model and its output defence as one compiled function, shared by every client.

  Args:
    apply_fn: (variables, x f32[B, H, W, C] in [0, 1]) -> logits f32[B, C].
    variables: the pytree passed to apply_fn (an argument of the compiled function, not a constant in it).
    num_classes, input_shape: what the model answers and accepts.
    defence: applied to the softmax before release (default: none).
    buckets: padded batch sizes, ascending.
    max_traces: if given, compiling more than this many times is an error (a guard, like
      `chex.assert_max_traces` but per service): a server sets it to the number of buckets it warms up.
  """

  def __init__(self, apply_fn: Callable, variables, num_classes: int, input_shape, *,
               defence: Optional[Defence] = None, buckets: Sequence[int] = BUCKETS,
               max_traces: Optional[int] = None):
    buckets = tuple(int(b) for b in buckets)
    if not buckets or min(buckets) < 1 or list(buckets) != sorted(set(buckets)):
      raise UserError(f"buckets must be distinct positive sizes in ascending order, got {buckets}")
    self.defence = defence or identity()
    self.num_classes, self.input_shape, self.buckets = int(num_classes), tuple(input_shape), buckets
    self._variables = variables
    out = jax.eval_shape(apply_fn, variables, jax.ShapeDtypeStruct((2, *self.input_shape), jnp.float32))
    if tuple(out.shape) != (2, self.num_classes):
      raise UserError(f"the model answers shape {list(out.shape)} for 2 queries; expected [2, {self.num_classes}]")
    self._traces = traces = [0]
    defence = self.defence

    def answer(variables, x, state, key):
      traces[0] += 1   # runs when jit traces (compiles), not when it runs
      if max_traces is not None and traces[0] > max_traces:
        raise AssertionError(f"the service compiled {traces[0]} times, more than max_traces={max_traces} "
                             f"(batch of {x.shape[0]} rows)")
      probs = jax.nn.softmax(apply_fn(variables, x).astype(jnp.float32))
      released, state = defence.apply(x, probs, state, key)
      return released, state, probs.argmax(-1)    # the top-1 stays with the defender (monitor)

    self._answer = jax.jit(answer)

  def with_variables(self, variables) -> "Service":
    """The same compiled service with other weights of the same shapes (e.g. each of K shadow models)."""
    other = object.__new__(Service)
    other.__dict__.update(self.__dict__)
    other._variables = variables
    return other

  @classmethod
  def from_model(cls, model, variables, *, input_shape=(32, 32, 3), **kwargs) -> "Service":
    """A zoo Model (eval mode) with its {'params', 'batch_stats'}."""
    return cls(lambda v, x: model.apply(v, x, train=False)[0], variables, model.num_classes, input_shape, **kwargs)

  @property
  def defence_name(self) -> str:
    return self.defence.name

  @property
  def num_traces(self) -> int:
    """How many times the compiled function was traced (compiled), over this service and its copies."""
    return self._traces[0]

  def bucket(self, b: int) -> int:
    """The padded size of a batch of b <= max(buckets) rows."""
    return next(s for s in self.buckets if s >= b)

  def warm_up(self, state=None) -> None:
    """Compiles every bucket (a server is ready only after this)."""
    state = self.defence.init() if state is None else state
    for b in self.buckets:
      jax.block_until_ready(self._answer(self._variables, jnp.zeros((b, *self.input_shape), jnp.float32), state,
                                         jax.random.key(0)))

  def answer(self, x: np.ndarray, state, key):
    """(released f32[B, C], new state, top-1 int[B]) for validated queries x of at most max(buckets) rows."""
    b = x.shape[0]
    size = self.bucket(b)
    if size > b:   # repeat the last row: a real query's cost, never a slow outlier (MemGuard's search)
      x = np.concatenate([x, np.repeat(x[-1:], size - b, axis=0)])
    out, state, top1 = self._answer(self._variables, jnp.asarray(x), state, key)
    return np.asarray(out)[:b], state, np.asarray(top1)[:b]


class Account:
  """One client's ledger: budget, counter, key, stream monitor, and defence state."""
  __slots__ = ("budget", "queries_used", "key", "monitor", "on_detect", "defence_state")

  def __init__(self, service: Service, *, budget: Optional[int] = None, key=None, monitor=None,
               on_detect: str = "refuse"):
    if budget is not None:
      integer(budget, "the victim's budget", at_least=0)
    if on_detect not in ("refuse", "degrade"):
      raise UserError(f"on_detect must be 'refuse' or 'degrade', got {on_detect!r}")
    self.budget = None if budget is None else int(budget)
    self.queries_used = 0
    self.key = jax.random.key(0) if key is None else key
    self.monitor, self.on_detect = monitor, on_detect
    self.defence_state = client_state(service.defence, self.key)

  @property
  def budget_left(self):
    return None if self.budget is None else self.budget - self.queries_used


def answer_for(service: Service, account: Account, x) -> np.ndarray:
  """Answers x for one client: validates, checks the budget, runs the service, updates the ledger.

  A refused query (bad input, budget, PRADA in refuse mode) changes nothing in the ledger.
  """
  x = validate_queries(x, service.input_shape)
  b = x.shape[0]
  if account.budget is not None and account.queries_used + b > account.budget:
    raise BudgetExceeded(f"a query of {b} examples would pass the budget: {account.queries_used} of "
                         f"{account.budget} used")
  state, outs, tops, step = account.defence_state, [], [], service.buckets[-1]
  for s in range(0, b, step):
    key = jax.random.fold_in(account.key, account.queries_used + s)
    out, state, top1 = service.answer(x[s:s + step], state, key)
    outs.append(out)
    tops.append(top1)
  out, top1 = np.concatenate(outs), np.concatenate(tops)
  if account.monitor is not None and account.monitor.observe(x, top1):
    if account.on_detect == "refuse":
      raise QueryRefused(f"query refused: the stream was flagged as an extraction attack after "
                         f"{account.monitor.first_flag_at} queries")
    key = jax.random.fold_in(account.key, account.queries_used)
    out = _shuffle_top3(out, np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel()))
  account.defence_state = state
  account.queries_used += b
  return out


class Victim:
  """A model behind an API: one client of a `Service`. `query(x) -> f32[B, C]`, counted against `budget`.

  Args:
    model: a zoo Model; variables: its {'params', 'batch_stats'}.
    defence: applied to the softmax before release (default: none).
    budget: the most examples this victim answers (None: unlimited).
    key: PRNG key for the defence's randomness.
    input_shape: (H, W, C) the victim accepts.
    monitor: a stream detector with `observe(x, top1) -> flagged` (e.g. `defences.Prada`).
    on_detect: once the monitor flags the client, 'refuse' (raise QueryRefused) or
      'degrade' (shuffle the top-3 released probabilities, as PRADA's demo server).
  """
  __slots__ = ("_service", "_account")

  def __init__(self, model, variables, *, defence: Optional[Defence] = None, budget: Optional[int] = None,
               key=None, input_shape=(32, 32, 3), monitor=None, on_detect: str = "refuse", buckets=BUCKETS):
    service = Service.from_model(model, variables, input_shape=input_shape, defence=defence, buckets=buckets)
    self._service = service
    self._account = Account(service, budget=budget, key=key, monitor=monitor, on_detect=on_detect)

  @classmethod
  def of(cls, service: Service, *, budget: Optional[int] = None, key=None, monitor=None,
         on_detect: str = "refuse") -> "Victim":
    """A new client of an existing service (shares its compiled function)."""
    victim = cls.__new__(cls)
    victim._service = service
    victim._account = Account(service, budget=budget, key=key, monitor=monitor, on_detect=on_detect)
    return victim

  @classmethod
  def from_apply(cls, apply_fn: Callable, num_classes: int, input_shape, *, defence: Optional[Defence] = None,
                 budget: Optional[int] = None, key=None, monitor=None, on_detect: str = "refuse",
                 buckets=BUCKETS) -> "Victim":
    """Any JAX function from images (f32[B, H, W, C] in [0, 1]) to logits f32[B, C] as a victim.

    This is how a user audits a model of their own: the attacks see only `query`.
    """
    service = Service(lambda _, x: apply_fn(x), {}, num_classes, input_shape, defence=defence, buckets=buckets)
    return cls.of(service, budget=budget, key=key, monitor=monitor, on_detect=on_detect)

  @property
  def num_classes(self) -> int:
    return self._service.num_classes

  @property
  def input_shape(self) -> tuple:
    return self._service.input_shape

  @property
  def defence_name(self) -> str:
    return self._service.defence_name

  @property
  def budget(self) -> Optional[int]:
    return self._account.budget

  @property
  def queries_used(self) -> int:
    return self._account.queries_used

  @property
  def budget_left(self) -> Optional[int]:
    return self._account.budget_left

  def query(self, x) -> np.ndarray:
    """Answers f32[B, C] for images x f32[B, H, W, C] in [0, 1] (or uint8)."""
    return answer_for(self._service, self._account, x)


def query_all(oracle: Oracle, x, batch_size: int = 256) -> np.ndarray:
  """The oracle's answers f32[N, C] for all of x, `batch_size` examples per call."""
  batch_size = integer(batch_size, "batch_size")
  if len(x) == 0:
    raise UserError("nothing to query: an empty set of images")
  return np.concatenate([oracle.query(x[s:s + batch_size]) for s in range(0, len(x), batch_size)])


def check_budget(oracle: Oracle, needed: int, what: str) -> None:
  """Raises BudgetExceeded before an attack starts if it needs more queries than the oracle has left."""
  left = oracle.budget_left
  if left is not None and needed > left:
    raise BudgetExceeded(f"{what} needs {needed} queries; the oracle has {left} left")


def _shuffle_top3(out, rng):
  out = out.copy()
  for row in out:
    top = np.argsort(-row)[:3]
    row[top] = row[rng.permutation(top)]
  return out
