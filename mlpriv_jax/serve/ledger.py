"""Each API key's usage, kept in SQLite: a restart, or a second server process on the same file, never resets or
double-spends a budget.

The keys file holds each key's limit (its budget); the ledger holds what it has used (and, behind DAWN's watermark,
each key's watermarked queries: `watermark`). The table `usage(client, used)`, in WAL mode (readers never wait for
the writer) with `synchronous=FULL` (a committed charge survives a power cut, not only a killed process). A query
is charged before it is answered, in one `BEGIN IMMEDIATE` transaction that reads the client's usage, refuses a
query that would pass the limit and adds the rest: SQLite's write lock makes check and charge one step across every
thread and process on the file. A query refused after its charge (PRADA in refuse mode) is refunded; a server
killed between charge and answer has charged a query it never answered, which errs on the provider's side and
never lets a client past its budget.
"""

import os
import sqlite3
import threading
from typing import Optional

import numpy as np

from mlpriv_jax.errors import UserError
from mlpriv_jax.oracle import BudgetExceeded

SCHEMA = "CREATE TABLE IF NOT EXISTS usage (client TEXT PRIMARY KEY, used INTEGER NOT NULL CHECK (used >= 0))"
# DAWN's log: each client's watermarked queries (their uint8 bytes and shape) and the altered label it was given
WATERMARK = ("CREATE TABLE IF NOT EXISTS watermark (client TEXT NOT NULL, image BLOB NOT NULL, shape TEXT NOT NULL, "
             "label INTEGER NOT NULL)")


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
      self._db.execute(WATERMARK)
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

  def log_triggers(self, client: str, images, labels) -> None:
    """Appends a client's watermarked queries (u8[n, H, W, C]) and the labels it was given (DAWN's log)."""
    rows = [(client, np.ascontiguousarray(x).tobytes(), ",".join(map(str, x.shape)), int(y))
            for x, y in zip(np.asarray(images, np.uint8), np.asarray(labels))]
    if rows:
      with self._lock:
        self._db.executemany("INSERT INTO watermark (client, image, shape, label) VALUES (?, ?, ?, ?)", rows)

  def triggers(self, client: str):
    """(u8[n, H, W, C], int[n]): what `log_triggers` kept of `client`, in order."""
    with self._lock:
      rows = self._db.execute("SELECT image, shape, label FROM watermark WHERE client = ? ORDER BY rowid",
                              (client,)).fetchall()
    if not rows:
      return np.zeros((0, 0, 0, 0), np.uint8), np.zeros(0, np.int32)
    x = np.stack([np.frombuffer(b, np.uint8).reshape([int(d) for d in shape.split(",")]) for b, shape, _ in rows])
    return x, np.array([r[2] for r in rows], np.int32)

  def close(self) -> None:
    with self._lock:
      self._db.close()
