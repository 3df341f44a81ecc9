"""Small I/O helpers shared by the library and the programs: atomic writes, JSON lines."""

import json
import os
import tempfile
from typing import Any, Callable


def atomic_write(path: str, write: Callable[[Any], None], mode: str = "wb") -> None:
  """Writes `path` through a temporary file in the same folder, then renames it.

  A reader (or a killed run) sees the old file or the new one, never a part.
  """
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
  try:
    with os.fdopen(fd, mode) as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: str, obj: Any) -> None:
  atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=True, default=jsonable), mode="w")


def print_json(obj: Any, path: str | None = None) -> None:
  """Prints obj as indented JSON (the benchmarks' output) and, with a path, writes it there too."""
  text = json.dumps(obj, indent=2, sort_keys=True, default=jsonable)
  print(text)
  if path:
    atomic_write(path, lambda f: f.write(text), mode="w")


def append_jsonl(path: str, obj: Any) -> None:
  """Appends one JSON line (a line is short, so one write call is all-or-nothing in practice)."""
  with open(path, "a") as f:
    f.write(json.dumps(obj, sort_keys=True, default=jsonable) + "\n")


def jsonable(x):
  """The `default=` of json.dump for numpy and JAX values."""
  if hasattr(x, "tolist"):
    return x.tolist()
  raise TypeError(f"not JSON serialisable: {type(x).__name__}")
