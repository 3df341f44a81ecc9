"""DAWN, dynamic adversarial watermarking at the API (Szyller, Atli, Marchal & Asokan, ACM MM 2021).

The provider changes a small keyed fraction of its answers, deterministically per query, and remembers which: a
model trained on the answers of one client agrees with that client's altered answers far above chance, which
independent models do not. Per client: the client's secret k_c = HMAC-SHA256(master, client), where the
client is its account's key; a query x is a trigger iff the first 64 bits of HMAC-SHA256(k_c, bytes of x as uint8
HWC) fall below rate * 2^64 (the original uses 16 bits of one secret for every client); its answer then swaps the
top-1 probability with that of class (argmax + 1 + (h2 mod (C - 1))) mod C, h2 the hash's next 64 bits, so the
released top-1 is never the victim's (the original relabels a trigger uniformly among the other classes). Queries are
canonicalised to uint8 so that a float query and its 8-bit image are one trigger.

The defence's state is the client's secret, made from the account's key when the account opens
(`Defence.for_client`); `triggers(secret, x)` finds the triggers among a client's queries, what the provider logs
for the verification (`ownership.dawn`).
"""

import functools
import hashlib
import hmac
import json
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mlpriv_jax.defences.base import Defence
from mlpriv_jax.errors import UserError

SECRET_BYTES = 32
MIN_MASTER_BYTES = 16
KEY_FILE_FORM = '{"secret": "<hex, at least 16 bytes>"}'


class DawnState(NamedTuple):
  secret: jax.Array   # u8[32]: the client's secret k_c (zeros before an account is bound)


def client_secret(master: bytes, client: bytes) -> np.ndarray:
  """u8[32]: k_c = HMAC-SHA256(master, client)."""
  return np.frombuffer(hmac.new(master, client, hashlib.sha256).digest(), np.uint8).copy()


def account_bytes(key) -> bytes:
  """The bytes that name a client: its account's PRNG key data."""
  return np.asarray(jax.random.key_data(key)).tobytes()


def canonical(x) -> np.ndarray:
  """u8[B, H, W, C]: queries as the 8-bit images they encode (floats in [0, 1] rounded)."""
  x = np.asarray(x)
  return x if x.dtype == np.uint8 else np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def hashes(secret, x) -> tuple:
  """(h1 u64[B], h2 u64[B]): the first two 64-bit words of HMAC-SHA256(secret, x_i) for each query."""
  key = np.asarray(secret, np.uint8).tobytes()
  x = canonical(x)
  words = [np.frombuffer(hmac.new(key, row.tobytes(), hashlib.sha256).digest()[:16], ">u8") for row in x]
  w = np.stack(words) if words else np.zeros((0, 2), np.uint64)
  return w[:, 0].astype(np.uint64), w[:, 1].astype(np.uint64)


def _threshold(rate: float):
  return np.uint64(min(int(rate * 2.0 ** 64), 2 ** 64 - 1))


def triggers(secret, x, rate: float) -> np.ndarray:
  """bool[B]: which queries the watermark alters for the client with `secret`."""
  return hashes(secret, x)[0] < _threshold(rate)


def _altered(h2, top1, num_classes: int) -> np.ndarray:
  return ((np.asarray(top1) + 1 + (h2 % np.uint64(num_classes - 1)).astype(np.int64)) % num_classes).astype(np.int32)


def altered_class(secret, x, top1, num_classes: int) -> np.ndarray:
  """int[B]: the class a trigger's answer is moved to, never its top-1."""
  return _altered(hashes(secret, x)[1], top1, num_classes)


def _mark(secret, x, top1, *, rate: float, num_classes: int):
  """(trigger bool[..., B], altered class int[..., B]) on the host; leading axes come from a vmapped call."""
  s = np.asarray(secret).reshape(-1, SECRET_BYTES)
  xs = np.asarray(x).reshape(len(s), -1, *np.shape(x)[-3:])
  t = np.asarray(top1).reshape(len(s), -1)
  mask, cls = np.zeros(t.shape, bool), np.zeros(t.shape, np.int32)
  for i, sec in enumerate(s):
    if sec.any():   # an unbound state (a warm-up's) alters nothing
      h1, h2 = hashes(sec, xs[i])
      mask[i], cls[i] = h1 < _threshold(rate), _altered(h2, t[i], num_classes)
  return mask.reshape(np.shape(top1)), cls.reshape(np.shape(top1))


def read_master(path: str) -> bytes:
  """The provider's master secret from a DAWN key file, JSON {"secret": "<hex>"} of at least 16 bytes (make one with
  `python -c "import json, secrets; print(json.dumps({'secret': secrets.token_hex(32)}))"`). Whoever holds it can
  tell which of a client's answers are watermarked, so it is the provider's alone, never derived from a seed."""
  try:
    with open(path) as f:
      doc = json.load(f)
  except FileNotFoundError:
    raise UserError(f"DAWN key file {path}: no such file (it holds {KEY_FILE_FORM})") from None
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserError(f"DAWN key file {path} is not JSON {KEY_FILE_FORM}: {e}") from None
  secret = doc.get("secret") if isinstance(doc, dict) else None
  if not isinstance(secret, str) or not secret:
    raise UserError(f"DAWN key file {path} holds no secret: it must be {KEY_FILE_FORM}")
  try:
    master = bytes.fromhex(secret)
  except ValueError:
    raise UserError(f"DAWN key file {path}: the secret is not hexadecimal ({KEY_FILE_FORM})") from None
  if len(master) < MIN_MASTER_BYTES:
    raise UserError(f"DAWN key file {path}: the secret is {len(master)} bytes; DAWN needs at least "
                    f"{MIN_MASTER_BYTES} (e.g. secrets.token_hex(32))")
  return master


def dawn(rate: float, master: bytes) -> Defence:
  """The watermark at `rate` (the fraction of each client's queries altered), keyed by `master`."""
  if not 0 < rate < 1:
    raise UserError(f"dawn's rate must lie in (0, 1), got {rate}")
  if not isinstance(master, (bytes, bytearray)) or len(master) < MIN_MASTER_BYTES:
    raise UserError(f"dawn needs a master secret of at least {MIN_MASTER_BYTES} bytes")
  master = bytes(master)

  def apply(x, probs, state, key):
    del key
    b, c = probs.shape
    top1 = probs.argmax(-1).astype(jnp.int32)
    mask, cls = jax.pure_callback(
        functools.partial(_mark, rate=rate, num_classes=c),
        (jax.ShapeDtypeStruct((b,), jnp.bool_), jax.ShapeDtypeStruct((b,), jnp.int32)), state.secret, x, top1,
        vmap_method="broadcast_all")
    rows = jnp.arange(b)
    swapped = probs.at[rows, cls].set(probs[rows, top1]).at[rows, top1].set(probs[rows, cls])
    return jnp.where(mask[:, None], swapped, probs), state

  init = lambda: DawnState(jnp.zeros(SECRET_BYTES, jnp.uint8))
  for_client = lambda key: DawnState(jnp.asarray(client_secret(master, account_bytes(key))))
  return Defence(init, apply, "dawn", for_client)
