"""A program's output folder: claimed by one program and one config, resumed by the same, refused to any other, and
held by one process at a time.

`claim` records `config.json` = {"program": <name>, ...config} the first time and checks it on every rerun: another
program's workdir, or this program's with another config (on the keys that decide what the folder holds), is refused
with one line naming whose it is and what differs, before anything is written. A model artifact's folder is never
another program's workdir. The claim also takes an OS lock on `<workdir>/.lock` (released when the run ends or the
process dies, kill -9 included), so two processes never run in one workdir at once.
"""

import fcntl
import functools
import json
import os
from typing import Any, Dict, Optional, Sequence

import numpy as np

from mlpriv_jax.errors import UserError
from mlpriv_jax.utils import atomic_write, jsonable, write_json

_HELD: Dict[str, Any] = {}   # realpath -> the open lock file, for the workdirs this process holds


def require(workdir: Optional[str]) -> str:
  """The workdir, or a one-line error before any work is done (none given, or a path that is not a folder)."""
  if not workdir:
    raise UserError("--workdir is required")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f"--workdir {workdir} is a file, not a folder")
  return workdir


def _artifact_here(workdir: str) -> bool:
  """Whether `workdir` is a model artifact's folder, or holds one (a folder one level down)."""
  if os.path.exists(os.path.join(workdir, "model.msgpack")):
    return True
  return any(os.path.exists(os.path.join(workdir, d, "model.msgpack")) for d in os.listdir(workdir)
             if os.path.isdir(os.path.join(workdir, d)))


def flatten(d: Any, prefix: str = "") -> Dict[str, Any]:
  """{dotted field: value} of a nested dict (an empty dict is a value)."""
  if isinstance(d, dict) and d:
    out = {}
    for k, v in d.items():
      out.update(flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: d}


def differences(old: dict, new: dict, keys: Optional[Sequence[str]] = None) -> Dict[str, tuple]:
  """{dotted field: (old value, new value)} where the two configs differ (on `keys`, or on every key)."""
  keys = sorted(set(old) | set(new)) if keys is None else keys
  a = flatten({k: old.get(k) for k in keys})
  b = flatten({k: new.get(k) for k in keys})
  return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _check(workdir: str, program: str, config: dict, identity: Optional[Sequence[str]]) -> None:
  """Refuses (one line, nothing written) a workdir that is not this program's for this config."""
  path = os.path.join(workdir, "config.json")
  nothing = "use another --workdir (nothing was overwritten)"
  if not os.path.exists(path):
    if os.path.isdir(workdir) and _artifact_here(workdir):
      raise UserError(f"{workdir} holds a model artifact of no program's run (pass it as --victim); {nothing}")
    return
  try:
    old = load_json(path)
  except UserError:
    raise UserError(f"{path} is damaged (not a JSON object); {nothing}") from None
  if not isinstance(old, dict):
    raise UserError(f"{path} is damaged (not a JSON object); {nothing}")
  owner = old.get("program")
  if owner != program:
    whose = (f"{owner}.py's workdir" if isinstance(owner, str)
             else "a workdir of no mlpriv_jax program (or of an older version)")
    extra = ", holding a model artifact (pass it as --victim)" if _artifact_here(workdir) else ""
    raise UserError(f"{workdir} is {whose}{extra}, not {program}.py's; {nothing}")
  diff = differences(old, config, identity)
  if diff:
    short = lambda v: repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
    shown = "; ".join(f"{k}={short(a)} there, {short(b)} here" for k, (a, b) in list(diff.items())[:3])
    more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
    raise UserError(f"{workdir} holds another {program}.py run ({shown}{more}); {nothing}")


def claim(workdir: str, program: str, config: dict, *, identity: Optional[Sequence[str]] = None) -> None:
  """Claims `workdir` for `program` running `config` (a JSON-able dict), or checks a previous claim.

  identity: the top-level keys of config that decide what the folder holds (default: all of them); a rerun that
  differs on one of them is refused, one that differs elsewhere (e.g. mia.py's attacks against the same trained
  game) resumes and records its config. The lock taken here is released by `releases` (or the process's end).
  """
  require(workdir)
  config = dict(json.loads(json.dumps(config, default=jsonable)), program=program)
  identity = None if identity is None else ("program", *identity)
  _check(workdir, program, config, identity)   # before anything is written, even the lock
  os.makedirs(workdir, exist_ok=True)
  _lock(workdir)
  try:
    _check(workdir, program, config, identity)   # again under the lock: another process may have claimed it since
  except UserError:
    release(workdir)
    raise
  write_json(os.path.join(workdir, "config.json"), config)


def _lock(workdir: str) -> None:
  real = os.path.realpath(workdir)
  if real in _HELD:
    return
  f = open(os.path.join(workdir, ".lock"), "a+")
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.seek(0)
    holder = f.read().strip() or "another process"
    f.close()
    raise UserError(f"{workdir} is in use by {holder}; wait for it to finish, or use another --workdir") from None
  f.seek(0)
  f.truncate()
  f.write(f"process {os.getpid()}")
  f.flush()
  _HELD[real] = f


def release(workdir: str) -> None:
  """Releases this process's lock on `workdir` (if it holds one)."""
  f = _HELD.pop(os.path.realpath(workdir), None) if workdir else None
  if f is not None:
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()


def releases(fn):
  """Decorates a program's `run(..., workdir=...)`: the lock its claim took is released when it returns or raises."""
  @functools.wraps(fn)
  def run(*args, workdir: str, **kwargs):
    try:
      return fn(*args, workdir=workdir, **kwargs)
    finally:
      release(workdir)
  return run


def load_json(path: str) -> Optional[Any]:
  """The JSON at path, or None if there is none (partial results of a killed run resume from it); a damaged file is
  one line naming it."""
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserError(f"{path} is damaged ({type(e).__name__}: {e}); move it aside to recompute it") from None


def save_npy(path: str, array) -> None:
  atomic_write(path, lambda f: np.save(f, np.asarray(array)))


def save_text(path: str, text: str) -> None:
  atomic_write(path, lambda f: f.write(text), mode="w")
