"""The victim as a real MLaaS: served over HTTP with API keys and per-client budgets, and its client.

  served = Served(service, load_keys("keys.json", default_budget=10000), ledger=Ledger("usage.sqlite"))
  app = create_app(served)                       # FastAPI; run with one uvicorn worker (experiments/serve.py)
  oracle = RemoteVictim("http://127.0.0.1:8000", api_key)   # an Oracle: every attack runs against it unchanged

FastAPI, uvicorn and httpx are the optional `serve` extra.
"""

from mlpriv_jax.serve.app import MAX_BODY_BYTES, Served, client_key, create_app
from mlpriv_jax.serve.client import Endpoint, RemoteVictim, connect
from mlpriv_jax.serve.keys import Client, KeyRing, load_keys
from mlpriv_jax.serve.ledger import Ledger
from mlpriv_jax.serve.server import BackgroundServer, bind, serve_forever

__all__ = ["MAX_BODY_BYTES", "BackgroundServer", "Client", "Endpoint", "KeyRing", "Ledger", "RemoteVictim", "Served",
           "bind", "client_key", "connect", "create_app", "load_keys", "serve_forever"]
