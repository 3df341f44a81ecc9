"""`RemoteVictim`: the `Oracle` of a victim served over HTTP (ours, or any Open Inference Protocol v2 endpoint).

Attacks take it unchanged: `query(x)` sends x as one v2 inference request per chunk (UINT8 for uint8 images,
exact FP32 otherwise), and the server's answers become the same exceptions as the in-process victim's:
429 -> `BudgetExceeded`, 403 -> `QueryRefused`, 400 / 413 -> `QueryError`. `queries_used` and `budget_left` are
the key's own counts, from the server's quota headers.
"""

import json
from typing import Optional

import numpy as np

from mlpriv_jax.errors import UserError
from mlpriv_jax.oracle import BudgetExceeded, QueryError, QueryRefused
from mlpriv_jax.serve import protocol

ERRORS = {400: QueryError, 413: QueryError, 403: QueryRefused, 429: BudgetExceeded}


class RemoteVictim:
  """The victim at `url` (e.g. http://127.0.0.1:8000) named `model_name`, queried with `api_key`.

  Args:
    max_rows: most images per request (default: as many as fit the server's advertised body limit, at most its
      largest batch bucket). A query larger than that is sent as several requests (for a randomised defence,
      each with its own randomness, as separate calls of the in-process victim); it is refused before the first
      when the key's budget cannot cover all of it.
    timeout: seconds per request.
  """

  def __init__(self, url: str, api_key: str, model_name: str = "victim", *, max_rows: Optional[int] = None,
               timeout: float = 120.0):
    import httpx
    if not api_key:
      raise UserError("an API key is required to query a served victim (--api_key)")
    self.url, self.model_name = url.rstrip("/"), model_name
    self._http = httpx.Client(base_url=self.url, timeout=timeout,
                              headers={"Authorization": f"Bearer {api_key}"})
    self._used, self._left = 0, None
    try:
      meta = self._request("GET", f"/v2/models/{model_name}")
    except BaseException:
      self._http.close()
      raise
    try:
      inp, out = meta["inputs"][0], meta["outputs"][0]
      self.input_shape = tuple(int(d) for d in inp["shape"][1:])
      self.num_classes = int(out["shape"][-1])
      params = meta.get("parameters") or {}
    except (KeyError, IndexError, TypeError, ValueError):
      raise UserError(f"{self.url}: the model metadata is not the Open Inference Protocol's") from None
    self._limit = int(params.get("max_body_bytes", protocol.MAX_BODY_BYTES))
    self._max_rows = max_rows or int((params.get("buckets") or [512])[-1])

  def close(self) -> None:
    self._http.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  @property
  def queries_used(self) -> int:
    return self._used

  @property
  def budget_left(self) -> Optional[int]:
    return self._left

  def _request(self, method: str, path: str, content: Optional[bytes] = None) -> dict:
    import httpx
    try:
      r = self._http.request(method, path, content=content,
                             headers={"Content-Type": "application/json"} if content is not None else None)
    except httpx.HTTPError as e:
      raise UserError(f"cannot reach the victim at {self.url}: {type(e).__name__}: {e}") from None
    if "X-RateLimit-Used" in r.headers:
      self._used = int(r.headers["X-RateLimit-Used"])
      left = r.headers.get("X-RateLimit-Remaining")
      self._left = None if left is None else int(left)
    try:
      doc = r.json()
    except ValueError:
      doc = {}
    if r.status_code != 200:
      message = doc.get("error") if isinstance(doc, dict) else None
      message = f"{self.url}: {r.status_code}: {message or r.text[:200]}"
      raise ERRORS.get(r.status_code, UserError)(message)
    return doc

  def _rows_per_request(self, x: np.ndarray) -> int:
    per_row = len(self._encode(x[:1])) + 8
    return max(1, min(self._max_rows, int(0.9 * self._limit) // per_row))

  @staticmethod
  def _encode(x: np.ndarray) -> bytes:
    """One v2 request body; FP32 values as 9 significant digits (float32's round-trip precision: exact)."""
    if x.dtype == np.uint8:
      datatype, data = "UINT8", ",".join(map(str, x.ravel().tolist()))
    else:
      datatype, data = "FP32", ",".join(np.char.mod("%.9g", x.astype(np.float32).ravel()).tolist())
    head = json.dumps({"name": protocol.INPUT_NAME, "shape": list(x.shape), "datatype": datatype})
    return ('{"inputs":[' + head[:-1] + ',"data":[' + data + ']}]}').encode()

  def query(self, x) -> np.ndarray:
    """The released f32[B, C] for images x (u8[B, H, W, C], or floats in [0, 1])."""
    x = np.asarray(x)
    if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
      raise QueryError(f"queries must have shape [B, {', '.join(map(str, self.input_shape))}], got {list(x.shape)}")
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
      raise QueryError(f"queries must be float in [0, 1] or uint8, got {x.dtype}")
    if len(x) == 0:
      raise QueryError("empty query batch")
    if x.dtype != np.uint8 and not np.all(np.isfinite(x)):   # JSON has no NaN: say so here, not as a parse error
      raise QueryError(f"queries hold {int((~np.isfinite(x)).sum())} NaN or inf values")
    rows = self._rows_per_request(x)
    if len(x) > rows and self._left is not None and len(x) > self._left:
      raise BudgetExceeded(f"a query of {len(x)} examples would pass the budget: {self._used} used, "
                           f"{self._left} left")
    outs = []
    for s in range(0, len(x), rows):
      doc = self._request("POST", f"/v2/models/{self.model_name}/infer", self._encode(x[s:s + rows]))
      try:
        t = doc["outputs"][0]
        outs.append(np.asarray(t["data"], np.float32).reshape(t["shape"]))
      except (KeyError, IndexError, TypeError, ValueError):
        raise UserError(f"{self.url}: the answer is not an Open Inference Protocol v2 response") from None
    return np.concatenate(outs)



def connect(url: str, api_key: Optional[str], model_name: str = "victim", *, expect=None) -> RemoteVictim:
  """A client of the victim served at `url`, reached with `api_key` now (before anything is written).

  expect: (input_shape, num_classes) of the model the caller holds the truth of (the artifact that evaluates the
  surrogate, the membership game's target); a server answering for another model is refused with one line.
  """
  if not api_key:
    raise UserError("--victim_url needs an API key (--api_key, or $MLPRIV_API_KEY)")
  client = RemoteVictim(url, api_key, model_name)
  if expect is not None:
    shape, classes = tuple(expect[0]), int(expect[1])
    if (client.input_shape, client.num_classes) != (shape, classes):
      client.close()
      raise UserError(f"{url} serves {client.num_classes} classes of {client.input_shape}; the model here has "
                      f"{classes} of {shape}")
  return client
