"""The victim served over HTTP: one compiled `Service`, one `Account` per API key, one inference thread.

Endpoints (Open Inference Protocol v2, as KServe, Triton and Seldon speak it, and TF Serving's v1 REST):

  GET  /v2/health/live, /v2/health/ready      no key; ready once every batch bucket is compiled
  GET  /v2                                     server metadata
  GET  /v2/models/{name}/ready                 no key
  GET  /v2/models/{name}                       model metadata (shapes, datatypes; the defence only if disclosed)
  POST /v2/models/{name}/infer                 FP32 or UINT8 images -> released probabilities
  GET  /v1/models/{name}                       TF Serving model status
  POST /v1/models/{name}:predict               {"instances": [...]} (nested floats or {"b64": PNG})

Model endpoints need `Authorization: Bearer <key>` or `X-API-Key: <key>`. Status codes: 401 (missing or unknown
key, with `WWW-Authenticate`), 403 (flagged by PRADA in refuse mode), 429 (the query would pass the key's budget:
refused whole), 400 (malformed request, the library's one-line message), 413 (body above the limit), 404
(unknown model; an unauthenticated 404 names no model), 408 (the body did not arrive within the body timeout).
Every answer to a known key carries `X-RateLimit-Limit`, `-Remaining` and `-Used` (examples). Errors are
`{"error": "<one line>"}`.

A request is refused on its headers when they suffice (no or an unknown key, an unknown model, a spent budget, a
declared length above the limit): the body is then not parsed, only drained when it is within the limit, so that
an ordinary client, which sends its whole body before reading, still reads the refusal.

Usage is kept in a `Ledger` (SQLite): a query is charged before it is answered, in one transaction that also
checks the key's budget, so counts are exact under any concurrency, across restarts, and across server processes
sharing the ledger file. Every query runs on one inference thread (JAX owns the device). The defence's state and
PRADA's monitor are per process.
"""

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import zlib
from typing import Callable, Optional

import anyio
import jax
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from mlpriv_jax import streams
from mlpriv_jax.defences import dawn
from mlpriv_jax.errors import UserError, integer
from mlpriv_jax.errors import number
from mlpriv_jax.oracle import Account, BudgetExceeded, QueryError, QueryRefused, Service, answer_for, validate_queries
from mlpriv_jax.serve import protocol
from mlpriv_jax.serve.keys import Client, KeyRing
from mlpriv_jax.serve.ledger import Ledger

log = logging.getLogger("mlpriv_jax.serve")

MAX_BODY_BYTES = protocol.MAX_BODY_BYTES
STATUS = {QueryError: 400, BudgetExceeded: 429, QueryRefused: 403}
BODY_TIMEOUT = 30.0   # seconds for a request's whole body, once its headers are in
VERSION = "1"         # the model's one version (the protocol's /versions/{v} paths)
EXTENSIONS = ["binary_tensor_data"]
REALM = 'Bearer realm="mlpriv_jax"'


def client_key(seed: int, name: str):
  """The reproducible PRNG key of client `name`: an in-process `Victim` with this key answers as the server."""
  return streams.account(jax.random.key(seed), zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF)


class HTTPError(Exception):
  def __init__(self, status: int, message: str, headers: Optional[dict] = None):
    super().__init__(message)
    self.status, self.message, self.headers = status, message, headers or {}


class _Disconnected(Exception):
  """The client went away before its body was in."""


class Served:
  """The server's state: the service, the key ring, one account per client, the inference thread."""

  def __init__(self, service: Service, keyring: KeyRing, *, model_name: str = "victim", seed: int = 0,
               monitor_factory: Optional[Callable] = None, on_detect: str = "refuse",
               disclose_defence: bool = False, defence: Optional[str] = None,
               defence_strength: Optional[float] = None, max_body_bytes: int = MAX_BODY_BYTES,
               ledger: Optional[Ledger] = None, body_timeout: float = BODY_TIMEOUT):
    if len(service.input_shape) != 3 or min(service.input_shape) < 1:
      raise UserError(f"the protocol describes images [B, H, W, C]; this model takes {list(service.input_shape)}")
    integer(max_body_bytes, "the body size limit (bytes)", at_least=1024)
    self.body_timeout = number(body_timeout, "the body timeout (seconds)", above=0)
    self.service, self.keyring, self.model_name = service, keyring, model_name
    # what --disclose_defence tells: the registry's name of the defence (else the service's) and its strength
    self.disclose_defence, self.defence, self.defence_strength = disclose_defence, defence, defence_strength
    self.max_body_bytes = int(max_body_bytes)
    self.ledger = ledger if ledger is not None else Ledger(None)
    self.accounts = {c.name: Account(service, budget=c.budget, key=client_key(seed, c.name),
                                     monitor=monitor_factory() if monitor_factory else None, on_detect=on_detect)
                     for c in keyring.clients}
    self.executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
    self.warm: Optional[concurrent.futures.Future] = None

  # -- lifecycle
  @contextlib.asynccontextmanager
  async def lifespan(self, app):
    self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mlpriv-inference")
    self.warm = self.executor.submit(self.service.warm_up)   # compiles every bucket before the first query
    try:
      yield
    finally:
      self.executor.shutdown(wait=True, cancel_futures=True)

  @property
  def ready(self) -> bool:
    return self.warm is not None and self.warm.done() and self.warm.exception() is None

  # -- requests
  def client(self, request: Request) -> Client:
    key = None
    scheme, _, cred = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and cred.strip():
      key = cred.strip()
    key = key or request.headers.get("x-api-key")
    if not key:
      raise HTTPError(401, "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                      {"WWW-Authenticate": REALM})
    client = self.keyring.lookup(key)
    if client is None:
      raise HTTPError(401, "unknown API key", {"WWW-Authenticate": REALM + ', error="invalid_token"'})
    return client

  def check_model(self, name: str, headers: Optional[dict] = None, *, reveal: bool = True,
                  version: Optional[str] = None) -> None:
    """404 for another model's name, or a version other than "1"; only a known key learns the name served."""
    if name != self.model_name:
      raise HTTPError(404, f"unknown model {name!r}" + (f"; this server serves {self.model_name!r}" if reveal
                                                         else ""), headers)
    if version is not None and version != VERSION:
      raise HTTPError(404, f"unknown version {version!r} of model {name!r}; its one version is {VERSION!r}",
                      headers)

  def quota(self, client: Client) -> dict:
    """The X-RateLimit headers of `client`: its limit (the keys file), its usage and what is left (the ledger)."""
    used = self.ledger.used(client.name)
    h = {"X-RateLimit-Used": str(used)}
    if client.budget is not None:
      h.update({"X-RateLimit-Limit": str(client.budget), "X-RateLimit-Remaining": str(max(client.budget - used, 0))})
    return h

  def _length(self, request: Request, headers: Optional[dict] = None) -> Optional[int]:
    length = request.headers.get("content-length")
    if length is not None and not length.isdigit():
      raise HTTPError(400, f"Content-Length must be a number of bytes, got {length[:40]!r}", headers)
    return None if length is None else int(length)

  async def body(self, request: Request, headers: dict, *, keep: bool = True) -> bytes:
    """The body, read up to the size limit within the body timeout (413 beyond the limit, before reading it when
    it says its length; 408 past the timeout). keep=False drains it (a refusal the client must still read)."""
    length = self._length(request, headers)
    if length is not None and length > self.max_body_bytes:
      raise HTTPError(413, f"request body of {length} bytes; the limit is {self.max_body_bytes} bytes (send "
                      f"fewer images per request)", dict(headers, Connection="close"))
    chunks, size = [], 0
    try:
      with anyio.fail_after(self.body_timeout):
        async for chunk in request.stream():
          size += len(chunk)
          if size > self.max_body_bytes:
            raise HTTPError(413, f"request body above the limit of {self.max_body_bytes} bytes",
                            dict(headers, Connection="close"))
          if keep:
            chunks.append(chunk)
    except TimeoutError:
      raise HTTPError(408, f"the request body did not arrive within {self.body_timeout:g} s",
                      dict(headers, Connection="close")) from None
    except ClientDisconnect:
      raise _Disconnected() from None
    return b"".join(chunks)

  async def refuse_early(self, request: Request, e: HTTPError):
    """Raises e after draining a body within the limit (unread, unparsed): a client that sends its whole body
    before reading, as urllib and requests do, then reads the refusal instead of a broken pipe."""
    length = self._length(request, e.headers)
    if length is not None and length > self.max_body_bytes:
      e.headers = dict(e.headers, Connection="close")
    elif request.method == "POST":
      await self.body(request, e.headers, keep=False)
    raise e

  def _answer(self, client: Client, x):
    """On the inference thread: (released, error) of `client`'s query x, charged to the ledger before the answer
    (refunded when the answer is refused)."""
    account = self.accounts[client.name]
    try:
      x = validate_queries(x, self.service.input_shape)
      account.queries_used = self.ledger.charge(client.name, len(x), client.budget)
      try:
        out = answer_for(self.service, account, x)
      except BaseException:
        self.ledger.refund(client.name, len(x))
        raise
      if self.defence == "dawn":   # the provider's log of the key's watermarked answers (its proof, later)
        hit = dawn.triggers(account.defence_state.secret, x, self.defence_strength)
        self.ledger.log_triggers(client.name, dawn.canonical(x[hit]), out[hit].argmax(-1))
      return out, None
    except UserError as e:
      return None, e

  async def infer(self, request: Request, name: str, parse: Callable, render: Callable,
                  version: Optional[str] = None) -> Response:
    """parse(json_doc, binary_part) -> protocol.Request; render(released, request) -> (json_doc, binary_part)."""
    try:   # everything the headers decide, before the body is read
      client = self.client(request)
      headers = self.quota(client)
      self.check_model(name, headers, version=version)
      if self.executor is None:
        raise HTTPError(503, "the server is not started", headers)
      if client.budget is not None and self.ledger.used(client.name) >= client.budget:
        raise HTTPError(429, f"the budget of {client.budget} examples is spent", headers)
    except HTTPError as e:
      await self.refuse_early(request, e)
    body = await self.body(request, headers)

    def decode():
      return parse(*protocol.split_binary(body, request.headers.get("inference-header-content-length")))
    try:
      req = await anyio.to_thread.run_sync(decode)
    except QueryError as e:
      raise HTTPError(400, str(e), headers) from None
    out, err = await asyncio.get_running_loop().run_in_executor(self.executor, self._answer, client, req.x)
    headers = self.quota(client)
    if err is not None:
      raise HTTPError(next((s for t, s in STATUS.items() if isinstance(err, t)), 400), str(err), headers)
    doc, raw = render(out, req)
    if not raw:
      return JSONResponse(doc, headers=headers)
    head = json.dumps(doc).encode()
    return Response(head + raw, media_type="application/octet-stream",
                    headers=dict(headers, **{"Inference-Header-Content-Length": str(len(head))}))

  def metadata(self, client: Client) -> dict:
    """The model's metadata; its parameters also tell the caller its own budget (the limit) and usage."""
    h, w, c = self.service.input_shape
    params = {"input_datatypes": list(protocol.DATATYPES), "max_body_bytes": self.max_body_bytes,
              "buckets": list(self.service.buckets), "budget": client.budget,
              "used": self.ledger.used(client.name)}
    if self.disclose_defence:
      params.update(defence=self.defence or self.service.defence_name, strength=self.defence_strength)
    return {"name": self.model_name, "versions": [VERSION], "platform": "mlpriv_jax",
            "inputs": [{"name": protocol.INPUT_NAME, "datatype": "FP32", "shape": [-1, h, w, c]}],
            "outputs": [{"name": protocol.OUTPUT_NAME, "datatype": "FP32", "shape": [-1, self.service.num_classes]}],
            "parameters": params}


def create_app(served: Served) -> FastAPI:
  """The FastAPI app of `served` (run it with one uvicorn worker)."""
  app = FastAPI(title="mlpriv_jax victim", lifespan=served.lifespan, openapi_url=None, docs_url=None,
                redoc_url=None)

  @app.exception_handler(HTTPError)
  async def _http_error(request, e: HTTPError):
    return JSONResponse({"error": e.message}, status_code=e.status, headers=e.headers)

  @app.exception_handler(_Disconnected)
  async def _gone(request, e):
    log.info("client %s went away before its request body was in", request.client.host if request.client else "?")
    return JSONResponse({"error": "client disconnected"}, status_code=400, headers={"Connection": "close"})

  @app.exception_handler(StarletteHTTPException)
  async def _starlette_error(request, e):
    return JSONResponse({"error": str(e.detail)}, status_code=e.status_code, headers=getattr(e, "headers", None))

  def ready_response():
    ok = served.ready
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

  @app.get("/v2/health/live")
  async def live():
    return {"live": True}

  @app.get("/v2/health/ready")
  async def ready():
    return ready_response()

  @app.get("/v2")
  async def server_metadata():
    from mlpriv_jax import __version__
    return {"name": "mlpriv_jax", "version": __version__, "extensions": EXTENSIONS}

  def parse_v2(doc, raw):
    return protocol.parse_v2(doc, served.service.input_shape, raw)

  def render_v2(out, req):
    return protocol.answer_v2(out, served.model_name, req.id, req.binary_output)

  # The protocol's paths with and without /versions/{version}: the one version is "1".
  for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
    @app.get(prefix + "/ready")
    async def model_ready(name: str, version: Optional[str] = None):
      served.check_model(name, reveal=False, version=version)
      return ready_response()

    @app.get(prefix)
    async def model_metadata(name: str, request: Request, version: Optional[str] = None):
      client = served.client(request)
      headers = served.quota(client)
      served.check_model(name, headers, version=version)
      return JSONResponse(served.metadata(client), headers=headers)

    @app.post(prefix + "/infer")
    async def infer(name: str, request: Request, version: Optional[str] = None):
      return await served.infer(request, name, parse_v2, render_v2, version=version)

  @app.post("/v2/repository/index")
  async def repository_index(request: Request):
    """The models served (Triton's and MLServer's model repository extension): lets a client find the one model."""
    client = served.client(request)
    await served.body(request, served.quota(client), keep=False)
    return JSONResponse([{"name": served.model_name, "version": VERSION, "state": "READY" if served.ready
                          else "UNAVAILABLE"}], headers=served.quota(client))

  @app.get("/v1/models/{name}")
  async def v1_status(name: str, request: Request):
    client = served.client(request)
    headers = served.quota(client)
    served.check_model(name, headers)
    state = "AVAILABLE" if served.ready else "LOADING"
    return JSONResponse({"model_version_status": [{"version": "1", "state": state,
                                                   "status": {"error_code": "OK", "error_message": ""}}]},
                        headers=headers)

  @app.post("/v1/models/{name}:predict")
  async def predict(name: str, request: Request):
    def parse(doc, raw):
      if raw:
        raise QueryError("TF Serving's :predict takes JSON only (binary tensors are a v2 extension)")
      return protocol.Request(protocol.parse_v1(doc, served.service.input_shape), None, False)
    return await served.infer(request, name, parse, lambda out, req: (protocol.answer_v1(out), b""))

  return app
