"""The one error type for bad input, and the checks that raise it where a value enters.

Every check of what a user passed (a shape, a name, a range, a file) raises a `UserError` with a one-line message;
the programs print that line and exit 2. Anything else (a JAX shape error inside a jitted function, a Flax error)
is a bug and keeps its traceback. A value is checked once, where it enters (a config's `validate()`, a program's
flags, an oracle's account), and trusted after.
"""

import math
import numbers
from typing import Optional


class UserError(ValueError):
  """Bad input, described in one line (what is wrong, and what was expected)."""


def integer(value, name: str, *, at_least: int = 1, at_most: Optional[int] = None) -> int:
  """`value` as an int, or a UserError naming `name` when it is not a whole number in [at_least, at_most]."""
  ok = _real(value) and int(value) == value
  if not ok or value < at_least or (at_most is not None and value > at_most):
    span = f">= {at_least}" if at_most is None else f"in [{at_least}, {at_most}]"
    raise UserError(f"{name} must be an integer {span}, got {value!r}")
  return int(value)


def number(value, name: str, *, above: Optional[float] = None, at_least: Optional[float] = None,
           at_most: Optional[float] = None) -> float:
  """`value` as a finite float within the bounds given, or a UserError naming `name`."""
  ok = _real(value)
  if ok and ((above is not None and not value > above) or (at_least is not None and not value >= at_least)
             or (at_most is not None and not value <= at_most)):
    ok = False
  if not ok:
    bounds = [f"{op} {b:g}" for op, b in ((">", above), (">=", at_least), ("<=", at_most)) if b is not None]
    raise UserError(f"{name} must be a finite number{' ' if bounds else ''}{' and '.join(bounds)}, got {value!r}")
  return float(value)


def _real(value) -> bool:
  """A finite real number (numpy's included), not a bool."""
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
