"""Every program's presets: typed, frozen configs whose docstrings carry their evidence (big_vision's configs).

A preset is a function of no arguments returning its program's config (`lab.*Run`, `arena.run.ArenaConfig`); the
program's flags override its fields. Its docstring ends with an evidence block:

  Evidence:
    command: python experiments/arena.py --preset=smoke --workdir=runs/arena
    result: benchmarks/results/presets/arena_smoke.json

The JSON (written by `benchmarks/presets.py` when it runs the command) holds the machine, the commit, the date, the
wall time and the headline figures; `docs/results.md` and README's table of expected results are rendered from it,
and a test holds each block to its JSON, so the figures a user reads cannot drift from what was measured. A preset
that was never run where it is meant to run says so: `Evidence: unmeasured (why)`.
"""

import importlib
import inspect
import json
import os
import re
from typing import Callable, Dict, Optional

from mlpriv_jax.errors import UserError

PROGRAMS = ("train", "defend", "extract", "mia", "arena", "survey_tables", "verify")
NAMES = ("smoke", "cpu", "paper", "gpu")   # every preset name; a program has smoke, cpu, paper and maybe more
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def presets(program: str) -> Dict[str, Callable]:
  """{name: preset function} of a program, in their order of definition (smoke, cpu, ...)."""
  if program not in PROGRAMS:
    raise UserError(f"unknown program {program!r}; known: {', '.join(PROGRAMS)}")
  module = importlib.import_module(f"mlpriv_jax.presets.{program}")
  return {name: getattr(module, name) for name in module.PRESETS}


def get(program: str, name: str):
  """The config of preset `name` of `program`."""
  found = presets(program)
  if name not in found:
    raise UserError(f"unknown preset {name!r} of {program}; known: {', '.join(found)}")
  return found[name]()


def evidence(fn: Callable) -> Dict[str, str]:
  """The evidence block of a preset's docstring as {key: value} ({"unmeasured": why} for an unmeasured one)."""
  doc = inspect.getdoc(fn) or ""
  m = re.search(r"^Evidence: unmeasured \((.*)\)\s*$", doc, re.M | re.S)
  if m:
    return dict(unmeasured=" ".join(m.group(1).split()))
  m = re.search(r"^Evidence:\n((?:  .*\S.*\n?)+)", doc, re.M)
  if not m:
    raise UserError(f"preset {fn.__module__}.{fn.__name__} has no evidence block")
  out, key = {}, None
  for line in m.group(1).splitlines():
    if line.startswith("    ") and key:   # a long value goes on over indented lines
      out[key] += " " + line.strip()
      continue
    key, _, value = line.strip().partition(": ")
    out[key] = value
  return out


def measured(fn: Callable) -> Optional[dict]:
  """The JSON a preset's evidence names (None for an unmeasured preset)."""
  ev = evidence(fn)
  if "result" not in ev:
    return None
  with open(os.path.join(REPO, ev["result"].split(" ")[0])) as f:   # "<path> (commit, date)"
    return json.load(f)
