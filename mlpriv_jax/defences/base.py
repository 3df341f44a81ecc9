"""The defence interface, in the optax style: a pair of pure functions.

  init() -> state
  apply(x, probs, state, key) -> (released_probs, state)

x: f32[B, H, W, C] queries in [0, 1]; probs: f32[B, C], the victim's softmax;
key: one PRNG key for the batch. A defence never sees the victim's parameters.
"""

from typing import Any, Callable, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp


class Defence(NamedTuple):
  """An output defence, as optax's `GradientTransformation`: a pair of pure functions and a name.

  Attributes:
    init: `init() -> state`, the defence's state before the first query of an account (an `EmptyState` for
      stateless defences; a client's account keeps its own).
    apply: `apply(x, probs, state, key) -> (released, state)`, jit-compatible. x: f32[B, H, W, C] the queries in
      [0, 1]; probs: f32[B, C] the victim's softmax for them; state: what `init` (or the previous call) returned;
      key: one PRNG key for the whole batch (the account's `fold_in(key, queries_used)`). released: f32[B, C], what
      the client receives (a probability vector per row, or a one-hot label). A defence never sees the victim's
      parameters.
    name: the registry name it was built under (`none` for the identity), shown in results and headers.
    for_client: `for_client(account_key) -> state`, the state of a new client's account, for a defence whose
      answers depend on who asks (DAWN's per-client watermark); None: `init()` for every client.
  """
  init: Callable[[], Any]
  apply: Callable[[Any, Any, Any, Any], Tuple[Any, Any]]
  name: str = "defence"
  for_client: Optional[Callable[[Any], Any]] = None


class EmptyState(NamedTuple):
  pass


def stateless(fn: Callable, name: str) -> Defence:
  """A Defence from `fn(x, probs, key) -> probs`."""
  return Defence(EmptyState, lambda x, probs, state, key: (fn(x, probs, key), state), name)


def identity() -> Defence:
  return stateless(lambda x, probs, key: probs, "none")


def chain(*defences: Defence) -> Defence:
  """Applies the defences in order, each with its own key (fold_in(key, i))."""
  def init():
    return tuple(d.init() for d in defences)

  def for_client(key):
    return tuple(client_state(d, key) for d in defences)

  def apply(x, probs, state, key):
    new_state = []
    for i, (d, s) in enumerate(zip(defences, state)):
      probs, s = d.apply(x, probs, s, jax.random.fold_in(key, i))
      new_state.append(s)
    return probs, tuple(new_state)
  per_client = any(d.for_client is not None for d in defences)
  return Defence(init, apply, "+".join(d.name for d in defences) or "none", for_client if per_client else None)


def client_state(defence: Defence, key):
  """The defence's state for a new client whose account has `key`."""
  return defence.init() if defence.for_client is None else defence.for_client(key)


def safe_log(probs):
  """log of probabilities that may hold exact zeros (float32 softmax underflow).

  Clipped at the smallest normal float32: the input comes from outside this
  function (a released probability vector), so log-space cannot be kept.
  """
  return jnp.log(jnp.maximum(probs, jnp.finfo(jnp.float32).tiny))
