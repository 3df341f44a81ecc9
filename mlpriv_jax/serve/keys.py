"""API keys: the keys file, read once, and a constant-time lookup.

The file is JSON:

  {"clients": [{"name": "alice", "key": "sk-alice-...", "budget": 5000},
               {"name": "bob", "key": "sk-bob-..."}]}

`budget` (examples) is optional and defaults to the server's budget per key. Only SHA-256 digests of the keys are
kept; a presented key is compared with every digest by `hmac.compare_digest` (no early exit), and no key is ever
logged or echoed.
"""

import hashlib
import hmac
import json
import os
import re
from typing import NamedTuple, Optional, Sequence

from mlpriv_jax.errors import UserError

MIN_KEY_LENGTH = 16
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class Client(NamedTuple):
  name: str
  budget: Optional[int]   # examples; None: unlimited


def _digest(key: str) -> bytes:
  return hashlib.sha256(key.encode("utf-8")).digest()


class KeyRing:
  """API key -> Client, looked up in constant time over the ring."""

  def __init__(self, entries: Sequence[tuple]):
    """entries: (key, Client) pairs with distinct keys and names."""
    self._entries = [(_digest(k), c) for k, c in entries]
    names = [c.name for _, c in self._entries]
    if len(set(names)) != len(names) or len({d for d, _ in self._entries}) != len(self._entries):
      raise UserError("keys: every client needs its own name and its own key")
    self.clients = tuple(c for _, c in self._entries)

  def lookup(self, key: Optional[str]) -> Optional[Client]:
    """The client holding `key`, else None. Every digest is compared, so the time does not depend on which."""
    if not key:
      return None
    d, found = _digest(key), None
    for digest, client in self._entries:
      if hmac.compare_digest(d, digest):
        found = client
    return found


def load_keys(path: str, default_budget: Optional[int]) -> KeyRing:
  """The KeyRing of the keys file at `path`; a UserError naming the problem for a missing or malformed file."""
  if not os.path.isfile(path):
    raise UserError(f"keys file {path} does not exist")
  try:
    with open(path, encoding="utf-8") as f:
      doc = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserError(f"keys file {path} is not readable JSON: {e}") from None
  clients = doc.get("clients") if isinstance(doc, dict) else None
  if not isinstance(clients, list) or not clients:
    raise UserError(f'keys file {path} must hold {{"clients": [{{"name": ..., "key": ..., "budget"?: ...}}, ...]}}')
  entries = []
  for i, c in enumerate(clients):
    if not isinstance(c, dict) or set(c) - {"name", "key", "budget"}:
      raise UserError(f"keys file {path}: client {i} must be an object with name, key and optionally budget")
    name, key, budget = c.get("name"), c.get("key"), c.get("budget", default_budget)
    if not isinstance(name, str) or not _NAME.match(name):
      raise UserError(f"keys file {path}: client {i} needs a name of 1-64 letters, digits or _.@- , got {name!r}")
    if not isinstance(key, str) or len(key) < MIN_KEY_LENGTH or not key.isprintable() or " " in key:
      raise UserError(f"keys file {path}: client {name!r} needs a key of at least {MIN_KEY_LENGTH} printable "
                      f"characters without spaces")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
      raise UserError(f"keys file {path}: client {name!r} has budget {budget!r}; it must be an integer >= 0")
    entries.append((key, Client(name, budget)))
  return KeyRing(entries)
