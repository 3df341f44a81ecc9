"""Each API key's usage, kept in SQLite: a restart, or a second server process on the same file, never resets or
double-spends a budget.

The keys file holds each key's limit (its budget); the ledger holds what it has used. One table,
`usage(client, used)`, in WAL mode (readers never wait for the writer) with `synchronous=FULL` (a committed charge
survives a power cut, not only a killed process). A query is charged before it is answered, in one `BEGIN
IMMEDIATE` transaction that reads the client's usage, refuses a query that would pass the limit and adds the rest:
SQLite's write lock makes check and charge one step across every thread and process on the file. A query refused
after its charge (PRADA in refuse mode) is refunded; a server killed between charge and answer has charged a query
it never answered, which errs on the provider's side and never lets a client past its budget.
"""

import os
import sqlite3
import threading
from typing import Optional

from mlpriv_jax.errors import UserError
from mlpriv_jax.oracle import BudgetExceeded

SCHEMA = "CREATE TABLE IF NOT EXISTS usage (client TEXT PRIMARY KEY, used INTEGER NOT NULL CHECK (used >= 0))"


class Ledger:
  """The usage of every client, in the SQLite file at `path` (None: in memory, for one process's tests)."""

  def __init__(self, path: Optional[str] = None):
    self.path = path
    if path is not None and os.path.isdir(path):
      raise UserError(f"--ledger {path} is a folder; it must name a file (created if missing)")
    if path is not None and os.path.dirname(os.path.abspath(path)) and not os.path.isdir(
        os.path.dirname(os.path.abspath(path))):
      raise UserError(f"--ledger {path}: its folder does not exist")
    self._lock = threading.Lock()   # one connection shared by the event loop's readers and the inference thread
    try:
      self._db = sqlite3.connect(path or ":memory:", timeout=60, isolation_level=None, check_same_thread=False)
      if path is not None:
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
          raise UserError(f"ledger {path}: SQLite refused WAL mode ({mode}); put it on a local disk")
      self._db.execute("PRAGMA synchronous=FULL")
      self._db.execute(SCHEMA)
      self._db.execute("SELECT client, used FROM usage LIMIT 1").fetchall()
    except sqlite3.DatabaseError as e:
      raise UserError(f"ledger {path}: not a usable SQLite ledger ({e}); move it aside to start a new one "
                      f"(every key's usage would restart at 0)") from None

  def used(self, client: str) -> int:
    with self._lock:
      row = self._db.execute("SELECT used FROM usage WHERE client = ?", (client,)).fetchone()
    return row[0] if row else 0

  def charge(self, client: str, n: int, budget: Optional[int]) -> int:
    """Charges `n` examples to `client` if its usage stays within `budget` (None: no limit); returns the usage
    before the charge. Raises BudgetExceeded (nothing charged) otherwise."""
    with self._lock:
      self._db.execute("BEGIN IMMEDIATE")   # the write lock: no other process charges between read and write
      try:
        row = self._db.execute("SELECT used FROM usage WHERE client = ?", (client,)).fetchone()
        used = row[0] if row else 0
        if budget is not None and used + n > budget:
          raise BudgetExceeded(f"a query of {n} examples would pass the budget: {used} of {budget} used")
        self._db.execute("INSERT INTO usage (client, used) VALUES (?, ?) ON CONFLICT (client) DO UPDATE SET "
                         "used = used + excluded.used", (client, n))
        self._db.execute("COMMIT")
      except BaseException:
        self._db.execute("ROLLBACK")
        raise
    return used

  def refund(self, client: str, n: int) -> None:
    """Gives back `n` examples charged to a query that was then refused."""
    with self._lock:
      self._db.execute("UPDATE usage SET used = MAX(used - ?, 0) WHERE client = ?", (n, client))

  def close(self) -> None:
    with self._lock:
      self._db.close()
