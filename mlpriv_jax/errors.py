"""The one error type for bad input.

Every check of what a user passed (a shape, a name, a range, a file) raises a
`UserError` with a one-line message; the programs print that line and exit 2.
Anything else (a JAX shape error inside a jitted function, a Flax error) is a
bug and keeps its traceback.
"""


class UserError(ValueError):
  """Bad input, described in one line (what is wrong, and what was expected)."""
