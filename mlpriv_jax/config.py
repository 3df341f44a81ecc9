"""Typed, frozen, nested configs (a run's every setting in one value), as jax_privacy's and big_vision's.

A config is a frozen dataclass whose fields are values, tuples or other configs, with a `validate()` that checks it
once, where it enters, and returns it; code below it trusts it. This module builds one from plain values (a JSON
file, a program's flags) refusing an unknown or misspelt field by name, overrides fields by dotted path
(`game.train.num_epochs`), and writes one as JSON.
"""

import collections.abc
import dataclasses
import typing
from typing import Any, Dict, Mapping

from mlpriv_jax.errors import UserError


class PerAttack:
  """A frozen config of one options record per attack of a registry (its fields named as the attacks)."""

  def of(self, name: str):
    """The options record of attack `name`."""
    if name not in _fields(type(self)):
      raise UserError(f"no options for attack {name!r}; known: {', '.join(_fields(type(self)))}")
    return getattr(self, name)

  def validate(self):
    for name in _fields(type(self)):
      getattr(self, name).validate()
    return self


def _fields(cls) -> Dict[str, dataclasses.Field]:
  return {f.name: f for f in dataclasses.fields(cls)}


def _config_type(tp):
  """The dataclass a field's annotation names (also inside Optional[...]), or None."""
  if dataclasses.is_dataclass(tp):
    return tp
  for arg in typing.get_args(tp):
    if dataclasses.is_dataclass(arg):
      return arg
  return None


def build(cls, values: Mapping[str, Any], where: str = ""):
  """`cls(**values)` with nested configs built from nested mappings; a field `cls` lacks is refused by name."""
  if not isinstance(values, Mapping):
    raise UserError(f"{where or cls.__name__} must be a mapping of fields, got {type(values).__name__}")
  fields, hints = _fields(cls), typing.get_type_hints(cls)
  unknown = [k for k in values if k not in fields]
  if unknown:
    raise UserError(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in "
                    f"{where or cls.__name__}; its fields: {', '.join(fields)}")
  kw = {}
  for k, v in values.items():
    sub = _config_type(hints[k])
    kw[k] = build(sub, v, f"{where}.{k}" if where else k) if sub is not None and isinstance(v, Mapping) \
        else _tuples(hints[k], v)
  try:
    return cls(**kw)
  except TypeError as e:   # a required field missing
    raise UserError(f"{where or cls.__name__}: {e}") from None


def _tuples(tp, value):
  """A JSON list as the tuple a field annotated Tuple[...] or Sequence[...] holds (nested ones too)."""
  args = [a for a in typing.get_args(tp) if a is not type(None)]
  if typing.get_origin(tp) is typing.Union and len(args) == 1:
    return _tuples(args[0], value)
  origin = typing.get_origin(tp)
  if isinstance(value, list) and origin in (tuple, collections.abc.Sequence):
    inner = args[0] if args else Any
    if origin is tuple and len(args) > 1 and args[1] is not Ellipsis:
      return tuple(_tuples(t, v) for t, v in zip(args, value))
    return tuple(_tuples(inner, v) for v in value)
  return value


def replace(cfg, overrides: Mapping[str, Any]):
  """`cfg` with each dotted path of `overrides` set (`{"game.train.num_epochs": 5}`); an unknown path is refused
  naming the first field that is not there."""
  for path, value in overrides.items():
    cfg = _replace_path(cfg, path.split("."), value, "")
  return cfg


def _replace_path(cfg, parts, value, where):
  name, rest = parts[0], parts[1:]
  here = f"{where}.{name}" if where else name
  if not dataclasses.is_dataclass(cfg) or name not in _fields(type(cfg)):
    known = ", ".join(_fields(type(cfg))) if dataclasses.is_dataclass(cfg) else "none (not a config)"
    raise UserError(f"unknown config field {here!r}; fields at {where or 'the top'}: {known}")
  if rest:
    value = _replace_path(getattr(cfg, name), rest, value, here)
  return dataclasses.replace(cfg, **{name: value})


def as_dict(cfg) -> dict:
  """A JSON-able dict of the config (tuples as lists), for config.json and the records of a run."""
  def plain(v):
    if dataclasses.is_dataclass(v):
      return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, (tuple, list)):
      return [plain(x) for x in v]
    if isinstance(v, dict):
      return {str(k): plain(x) for k, x in v.items()}
    return v
  return plain(cfg)
