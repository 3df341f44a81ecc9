"""`RemoteVictim`: the `Oracle` of a model served over HTTP by any Open Inference Protocol v2 server (ours, MLServer,
Triton, KServe).

It reads the model's metadata and speaks its terms: the declared input (name, datatype, shape; the attack's images
converted to what it takes, uint8 0-255 or float 0-1), the declared output (probabilities, logits softmaxed, or
labels one-hot), the binary tensor data extension when the server lists it. It counts its queries itself: images
sent and answered, never a server's headers (ours send `X-RateLimit-*`, kept as `server_used`, a cross-check only).
A server's refusals become the in-process victim's exceptions: 429 -> `BudgetExceeded`, 403 -> `QueryRefused`,
400 / 413 -> `QueryError`; anything else (5xx, a timeout, a broken answer) is one UserError, and the queries
answered before it stay counted.
"""

import json
from typing import NamedTuple, Optional

import numpy as np

from mlpriv_jax.errors import UserError
from mlpriv_jax.oracle import BudgetExceeded, QueryError, QueryRefused, validate_queries
from mlpriv_jax.serve import protocol

ERRORS = {400: QueryError, 413: QueryError, 403: QueryRefused, 429: BudgetExceeded}


class ServerError(UserError):
  """Any other answer than 200 and the statuses of ERRORS (401, 404, 5xx, ...), with its status."""

  def __init__(self, message: str, status: int):
    super().__init__(message)
    self.status = status

SENDS = protocol.SENDS   # the input datatypes the client can send
FLOAT_OUT = ("FP32", "FP64", "FP16")
INT_OUT = ("INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8")
KINDS = ("auto", "probabilities", "logits", "labels")


class Endpoint(NamedTuple):
  """Where and how to reach a served model (the programs' --victim_url, --api_key, --model_name, --input_name,
  --output_name, --output_kind, --num_classes)."""
  url: str
  api_key: Optional[str] = None        # sent as `Authorization: Bearer` only when given
  model_name: Optional[str] = None     # None: the server's one model (its repository index)
  input_name: Optional[str] = None     # None: the model's one input
  output_name: Optional[str] = None    # None: the model's one output
  output_kind: str = "auto"            # probabilities | logits (softmax applied) | labels (one-hot); auto: from it
  num_classes: Optional[int] = None    # for a labels output, which does not declare its classes


def _one_line(e: Exception) -> str:
  return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]


class RemoteVictim:
  """The model at `endpoint` as an `Oracle` (a plain URL string is an Endpoint with the defaults).

  Args:
    max_rows: most images per request (default: what fits the body limit our server advertises, at most its
      largest batch bucket; 64 against other servers). A larger query is sent as several requests, refused
      before the first when our server's quota says it cannot cover all of it.
    timeout: seconds per request.
    binary: use the binary tensor data extension when the server lists it (False: JSON always).
  """

  def __init__(self, endpoint, api_key: Optional[str] = None, model_name: Optional[str] = None, *,
               max_rows: Optional[int] = None, timeout: float = 120.0, binary: bool = True):
    import httpx
    if isinstance(endpoint, str):
      endpoint = Endpoint(endpoint, api_key, model_name)
    if endpoint.output_kind not in KINDS:
      raise UserError(f"--output_kind must be one of {', '.join(KINDS)}, got {endpoint.output_kind!r}")
    self.endpoint, self.url = endpoint, endpoint.url.rstrip("/")
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)
    self._used, self.server_used, self._left = 0, None, None
    try:
      self._describe(max_rows, binary)
    except BaseException:
      self._http.close()
      raise

  def _describe(self, max_rows, binary) -> None:
    """Reads the server's and the model's metadata: which model, input, output, datatype and format to use."""
    e = self.endpoint
    server = self._request("GET", "/v2")
    extensions = server.get("extensions") if isinstance(server, dict) else None
    self.binary = bool(binary and isinstance(extensions, list) and "binary_tensor_data" in extensions)
    self.model_name = e.model_name or self._the_one_model()
    meta = self._request("GET", f"/v2/models/{self.model_name}")
    if not isinstance(meta, dict) or not isinstance(meta.get("inputs"), list) or not isinstance(
        meta.get("outputs"), list):
      raise UserError(f"{self.url}: the metadata of {self.model_name!r} is not the Open Inference Protocol's "
                      f"(no inputs and outputs lists)")
    inp = self._pick(meta["inputs"], e.input_name, "input", "--input_name")
    out = self._pick(meta["outputs"], e.output_name, "output", "--output_name")
    shape, self.input_name, self.input_datatype = inp.get("shape"), inp.get("name"), inp.get("datatype")
    if (not isinstance(shape, list) or len(shape) != 4 or not all(isinstance(d, int) for d in shape)
        or min(shape[1:]) < 1):
      raise UserError(f"{self.url}: input {self.input_name!r} has shape {shape!r}; images are [B, H, W, C]")
    if self.input_datatype not in SENDS:
      raise UserError(f"{self.url}: input {self.input_name!r} takes {self.input_datatype!r}; this client sends "
                      f"{', '.join(SENDS)} images")
    self.input_shape = tuple(shape[1:])
    self.sends = ("uint8 pixels 0-255" if self.input_datatype == "UINT8"
                  else f"{self.input_datatype} pixels in [0, 1]")
    self.output_name, datatype, oshape = out.get("name"), out.get("datatype"), out.get("shape")
    kind = e.output_kind
    if kind == "auto":
      kind = "labels" if datatype in INT_OUT else "probabilities" if datatype in FLOAT_OUT else None
    if kind is None or (kind == "labels") != (datatype in INT_OUT):
      raise UserError(f"{self.url}: output {self.output_name!r} is {datatype}; --output_kind={e.output_kind} does "
                      f"not read it (floats: probabilities or logits, integers: labels)")
    self.output_kind = kind
    if kind == "labels":
      if not e.num_classes:
        raise UserError(f"{self.url}: output {self.output_name!r} holds labels, which do not declare how many "
                        f"classes there are: pass --num_classes")
      self.num_classes = int(e.num_classes)
    else:
      if not isinstance(oshape, list) or len(oshape) != 2 or not isinstance(oshape[-1], int) or oshape[-1] < 2:
        raise UserError(f"{self.url}: output {self.output_name!r} has shape {oshape!r}, not [B, classes]")
      self.num_classes = oshape[-1]
    params = meta.get("parameters") if isinstance(meta.get("parameters"), dict) else {}
    strength = params.get("strength")
    # (name, strength) of the defence, where the server discloses it (ours with --disclose_defence), else None
    self.disclosed_defence = (params["defence"], float(strength) if isinstance(strength, (int, float)) else None) \
        if isinstance(params.get("defence"), str) else None
    self._limit = int(params.get("max_body_bytes", protocol.MAX_BODY_BYTES))
    self._max_rows = max_rows or int((params.get("buckets") or [64])[-1])

  def _the_one_model(self) -> str:
    try:
      index = self._request("POST", "/v2/repository/index", b"{}", {"Content-Type": "application/json"})
    except ServerError as e:
      if e.status not in (404, 405, 501):   # 401 and the like: the server's own answer, as it is
        raise
      raise UserError(f"{self.url} does not list its models (no repository index); pass --model_name") from None
    names = sorted({m.get("name") for m in index if isinstance(m, dict) and isinstance(m.get("name"), str)}) \
        if isinstance(index, list) else []
    if len(names) != 1:
      raise UserError(f"{self.url} serves {len(names)} models ({', '.join(names) or 'none listed'}); pass "
                      f"--model_name")
    return names[0]

  def _pick(self, tensors: list, name: Optional[str], what: str, flag: str) -> dict:
    named = [t for t in tensors if isinstance(t, dict) and isinstance(t.get("name"), str)]
    names = [t["name"] for t in named]
    if name is not None:
      if name not in names:
        raise UserError(f"{self.url}: model {self.model_name!r} has no {what} {name!r}; its {what}s: "
                        f"{', '.join(names) or 'none'}")
      return named[names.index(name)]
    if len(named) != 1:
      raise UserError(f"{self.url}: model {self.model_name!r} declares {len(named)} {what}s "
                      f"({', '.join(names) or 'none'}); choose one with {flag}")
    return named[0]

  def close(self) -> None:
    self._http.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  @property
  def queries_used(self) -> int:
    """Images this client sent and had answered, counted here."""
    return self._used

  @property
  def budget_left(self) -> Optional[int]:
    """What the server says is left of the key's budget (our server's X-RateLimit-Remaining), else None."""
    return self._left

  def _request(self, method: str, path: str, content: Optional[bytes] = None, headers: Optional[dict] = None):
    import httpx
    try:
      r = self._http.request(method, path, content=content, headers=headers)
    except httpx.HTTPError as e:
      raise UserError(f"cannot reach the victim at {self.url}: {_one_line(e)}") from None
    if "X-RateLimit-Used" in r.headers:   # our server's quota: a cross-check, never the count
      self.server_used = int(r.headers["X-RateLimit-Used"])
      left = r.headers.get("X-RateLimit-Remaining")
      self._left = None if left is None else int(left)
    if r.status_code != 200:
      try:
        doc = r.json()
      except ValueError:
        doc = None
      message = doc.get("error") if isinstance(doc, dict) else None
      message = f"{self.url}: {r.status_code}: {message or r.text[:200] or r.reason_phrase}"
      if r.status_code in ERRORS:
        raise ERRORS[r.status_code](message)
      raise ServerError(message, r.status_code)
    length = r.headers.get("Inference-Header-Content-Length")
    try:
      if length is None:
        return r.json()
      head = json.loads(r.content[:int(length)])
      head["_binary"] = r.content[int(length):]
      return head
    except (ValueError, TypeError) as e:
      raise UserError(f"{self.url}: the answer to {path} is not JSON ({_one_line(e)})") from None

  def _encode(self, x: np.ndarray):
    """(body, headers) of one inference request for images x, already in the input's datatype."""
    return protocol.request_v2(x, input_name=self.input_name, datatype=self.input_datatype,
                               output_name=self.output_name, binary=self.binary)

  def _decode(self, doc, rows: int) -> np.ndarray:
    """The released f32[rows, C] of one answer, from the chosen output in the model's terms."""
    try:
      outs = [o for o in doc["outputs"] if o.get("name") == self.output_name]
      o = outs[0]
      if "data" in o:
        a = np.asarray(o["data"], np.float64)
      else:
        size = int(o["parameters"]["binary_data_size"])
        dtype = protocol.WIRE[o["datatype"]]
        before = sum(int(p["parameters"]["binary_data_size"]) for p in doc["outputs"][:doc["outputs"].index(o)]
                     if "data" not in p)
        a = np.frombuffer(doc["_binary"][before:before + size], dtype).astype(np.float64)
      shape = o.get("shape")
    except (KeyError, IndexError, TypeError, ValueError) as e:
      raise UserError(f"{self.url}: the answer holds no readable output {self.output_name!r} ({_one_line(e)})") \
          from None
    if self.output_kind == "labels":
      if a.size != rows or not np.all((a == np.round(a)) & (a >= 0) & (a < self.num_classes)):
        raise UserError(f"{self.url}: output {self.output_name!r} answered {a.size} labels for {rows} images, or "
                        f"labels outside [0, {self.num_classes})")
      return np.eye(self.num_classes, dtype=np.float32)[a.astype(np.int64).ravel()]
    if a.size != rows * self.num_classes or (isinstance(shape, list) and shape and shape[0] != rows):
      raise UserError(f"{self.url}: output {self.output_name!r} answered shape {shape} for {rows} images; "
                      f"expected [{rows}, {self.num_classes}]")
    a = a.reshape(rows, self.num_classes)
    if self.output_kind == "logits":
      a = np.exp(a - a.max(-1, keepdims=True))
      a /= a.sum(-1, keepdims=True)
    elif not np.all((a >= -1e-6) & (a <= 1 + 1e-6)):   # a defence may unnormalise a row, never leave [0, 1]
      raise UserError(f"{self.url}: output {self.output_name!r} holds values in [{a.min():.3g}, {a.max():.3g}], "
                      f"not probabilities; pass --output_kind=logits if it holds logits")
    return a.astype(np.float32)

  def _rows_per_request(self, x: np.ndarray) -> int:
    per_row = len(self._encode(x[:1])[0]) + 8
    return max(1, min(self._max_rows, int(0.9 * self._limit) // per_row))

  def query(self, x) -> np.ndarray:
    """The released f32[B, C] for images x (u8[B, H, W, C], or floats in [0, 1])."""
    x = np.asarray(x)
    checked = validate_queries(x, self.input_shape)   # the in-process victim's checks (JSON has no NaN either)
    if self.input_datatype != "UINT8":
      x = checked if x.dtype == np.uint8 else x       # pixels as floats in [0, 1], as the in-process victim
    elif x.dtype != np.uint8:
      x = np.round(checked.astype(np.float64) * 255).astype(np.uint8)   # the model takes pixels: 8-bit, as an image
    rows = self._rows_per_request(x)
    if len(x) > rows and self._left is not None and len(x) > self._left:
      raise BudgetExceeded(f"a query of {len(x)} examples would pass the budget: {self.server_used} used, "
                           f"{self._left} left")
    outs = []
    for s in range(0, len(x), rows):
      chunk = x[s:s + rows]
      body, headers = self._encode(chunk)
      doc = self._request("POST", f"/v2/models/{self.model_name}/infer", body, headers)
      try:
        outs.append(self._decode(doc, len(chunk)))
      finally:   # answered: counted, even when the answer is refused as malformed (never counted twice)
        self._used += len(chunk)
    return np.concatenate(outs)


def connect(endpoint: Endpoint, *, expect=None, log=None) -> RemoteVictim:
  """A client of the model at `endpoint`, reached now (before anything is written).

  expect: (input_shape, num_classes) of the model the caller holds the truth of (the artifact that evaluates the
  surrogate, the membership game's target); a server answering for another model is refused with one line.
  log: told which model, input and output the client uses and what it sends.
  """
  client = RemoteVictim(endpoint)
  if expect is not None:
    shape, classes = tuple(expect[0]), int(expect[1])
    if (client.input_shape, client.num_classes) != (shape, classes):
      client.close()
      raise UserError(f"{endpoint.url} serves {client.num_classes} classes of {client.input_shape}; the model here "
                      f"has {classes} of {shape}")
  if log is not None:
    log(f"victim at {client.url}: model {client.model_name!r}, input {client.input_name!r} ({client.sends}), "
        f"output {client.output_name!r} as {client.output_kind}" + (", binary tensors" if client.binary else ""))
  return client
