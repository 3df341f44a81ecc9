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
(unknown model). Every answer to a known key carries `X-RateLimit-Limit`, `-Remaining` and `-Used` (examples).
Errors are `{"error": "<one line>"}`.

Every query of every client runs on one thread (JAX owns the device; the ledger needs no lock): a client's budget
check, answer and count are one step, so counts are exact under any concurrency. Requests are parsed on the
event loop's worker threads. Run it with one uvicorn worker: several would each keep their own ledgers.
"""

import asyncio
import concurrent.futures
import contextlib
import json
import zlib
from typing import Callable, Optional

import anyio
import jax
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlpriv_jax import streams
from mlpriv_jax.errors import UserError, integer
from mlpriv_jax.oracle import Account, BudgetExceeded, QueryError, QueryRefused, Service, answer_for
from mlpriv_jax.serve import protocol
from mlpriv_jax.serve.keys import Client, KeyRing

MAX_BODY_BYTES = protocol.MAX_BODY_BYTES
STATUS = {QueryError: 400, BudgetExceeded: 429, QueryRefused: 403}
REALM = 'Bearer realm="mlpriv_jax"'


def client_key(seed: int, name: str):
  """The reproducible PRNG key of client `name`: an in-process `Victim` with this key answers as the server."""
  return streams.account(jax.random.key(seed), zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF)


class HTTPError(Exception):
  def __init__(self, status: int, message: str, headers: Optional[dict] = None):
    super().__init__(message)
    self.status, self.message, self.headers = status, message, headers or {}


def quota_headers(account: Account) -> dict:
  h = {"X-RateLimit-Used": str(account.queries_used)}
  if account.budget is not None:
    h.update({"X-RateLimit-Limit": str(account.budget), "X-RateLimit-Remaining": str(account.budget_left)})
  return h


class Served:
  """The server's state: the service, the key ring, one account per client, the inference thread."""

  def __init__(self, service: Service, keyring: KeyRing, *, model_name: str = "victim", seed: int = 0,
               monitor_factory: Optional[Callable] = None, on_detect: str = "refuse",
               disclose_defence: bool = False, defence_strength: Optional[float] = None,
               max_body_bytes: int = MAX_BODY_BYTES):
    if len(service.input_shape) != 3 or min(service.input_shape) < 1:
      raise UserError(f"the protocol describes images [B, H, W, C]; this model takes {list(service.input_shape)}")
    integer(max_body_bytes, "the body size limit (bytes)", at_least=1024)
    self.service, self.keyring, self.model_name = service, keyring, model_name
    self.disclose_defence, self.defence_strength = disclose_defence, defence_strength
    self.max_body_bytes = int(max_body_bytes)
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

  def check_model(self, name: str, headers: Optional[dict] = None) -> None:
    if name != self.model_name:
      raise HTTPError(404, f"unknown model {name!r}; this server serves {self.model_name!r}", headers)

  async def body(self, request: Request, headers: dict):
    """The JSON body, read up to the size limit (413 beyond it, before reading it all when it says its length)."""
    length = request.headers.get("content-length")
    if length is not None and not length.isdigit():
      raise HTTPError(400, f"Content-Length must be a number of bytes, got {length[:40]!r}", headers)
    if length is not None and int(length) > self.max_body_bytes:
      raise HTTPError(413, f"request body of {length} bytes; the limit is {self.max_body_bytes} bytes (send "
                      f"fewer images per request)", headers)
    chunks, size = [], 0
    async for chunk in request.stream():
      size += len(chunk)
      if size > self.max_body_bytes:
        raise HTTPError(413, f"request body above the limit of {self.max_body_bytes} bytes", headers)
      chunks.append(chunk)
    return b"".join(chunks)

  def _answer(self, name: str, x):
    """On the inference thread: (released, error, quota headers) of client `name`'s query x."""
    account = self.accounts[name]
    try:
      out, err = answer_for(self.service, account, x), None
    except UserError as e:
      out, err = None, e
    return out, err, quota_headers(account)

  async def infer(self, request: Request, name: str, parse: Callable, render: Callable) -> JSONResponse:
    client = self.client(request)
    headers = quota_headers(self.accounts[client.name])
    self.check_model(name, headers)
    if self.executor is None:
      raise HTTPError(503, "the server is not started", headers)
    body = await self.body(request, headers)

    def decode():
      try:
        return parse(json.loads(body))
      except (ValueError, RecursionError) as e:   # JSONDecodeError, UnicodeDecodeError
        if isinstance(e, QueryError):
          raise
        raise QueryError(f"the body is not JSON: {str(e).splitlines()[0][:200]}") from None
    try:
      x, rid = await anyio.to_thread.run_sync(decode)
    except QueryError as e:
      raise HTTPError(400, str(e), headers) from None
    out, err, headers = await asyncio.get_running_loop().run_in_executor(self.executor, self._answer, client.name, x)
    if err is not None:
      raise HTTPError(next((s for t, s in STATUS.items() if isinstance(err, t)), 400), str(err), headers)
    return JSONResponse(render(out, rid), headers=headers)

  def metadata(self) -> dict:
    h, w, c = self.service.input_shape
    params = {"input_datatypes": list(protocol.DATATYPES), "max_body_bytes": self.max_body_bytes,
              "buckets": list(self.service.buckets)}
    if self.disclose_defence:
      params.update(defence=self.service.defence_name, strength=self.defence_strength)
    return {"name": self.model_name, "versions": ["1"], "platform": "mlpriv_jax",
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
    return {"name": "mlpriv_jax", "version": __version__, "extensions": []}

  @app.get("/v2/models/{name}/ready")
  async def model_ready(name: str):
    served.check_model(name)
    return ready_response()

  @app.get("/v2/models/{name}")
  async def model_metadata(name: str, request: Request):
    client = served.client(request)
    headers = quota_headers(served.accounts[client.name])
    served.check_model(name, headers)
    return JSONResponse(served.metadata(), headers=headers)

  @app.post("/v2/models/{name}/infer")
  async def infer(name: str, request: Request):
    return await served.infer(request, name, lambda b: protocol.parse_v2(b, served.service.input_shape),
                              lambda out, rid: protocol.answer_v2(out, served.model_name, rid))

  @app.get("/v1/models/{name}")
  async def v1_status(name: str, request: Request):
    client = served.client(request)
    headers = quota_headers(served.accounts[client.name])
    served.check_model(name, headers)
    state = "AVAILABLE" if served.ready else "LOADING"
    return JSONResponse({"model_version_status": [{"version": "1", "state": state,
                                                   "status": {"error_code": "OK", "error_message": ""}}]},
                        headers=headers)

  @app.post("/v1/models/{name}:predict")
  async def predict(name: str, request: Request):
    return await served.infer(request, name, lambda b: (protocol.parse_v1(b, served.service.input_shape), None),
                              lambda out, rid: protocol.answer_v1(out))

  return app
