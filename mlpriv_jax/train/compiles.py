"""Counting XLA compilations: what the compile-once engine is tested and benchmarked by."""

import contextlib
import dataclasses

import jax

_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


@dataclasses.dataclass
class Compiles:
  count: int = 0
  seconds: float = 0.0
  names: list = dataclasses.field(default_factory=list)


@contextlib.contextmanager
def count_compiles():
  """Counts the XLA compilations (and their seconds) of the code inside the `with` block."""
  c = Compiles()

  def listen(event, duration, **kwargs):
    if event == _BACKEND_COMPILE:
      c.count += 1
      c.seconds += duration
      c.names.append(kwargs.get("fun_name", "?"))

  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    yield c
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
