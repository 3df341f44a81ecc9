"""The served victim as an operator leaves it running: no body makes it answer 500, refusals decided by the headers
come before the body and still reach ordinary clients, slow and vanishing clients are timed out or let go quietly,
and every key's usage lives in an SQLite ledger that restarts and a second server process share exactly."""

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conftest import REPO  # noqa: E402
from mlpriv_jax import models, serve  # noqa: E402
from mlpriv_jax.errors import UserError  # noqa: E402
from mlpriv_jax.oracle import QueryError, Service  # noqa: E402
from mlpriv_jax.serve import protocol  # noqa: E402

ALICE, BOB = "sk-alice-0123456789abcdef", "sk-bob-0123456789abcdef00"
SHAPE = (32, 32, 3)


@pytest.fixture(scope="module")
def service():
  m = models.get_model("cnn_tiny", 10)
  v = m.init(jax.random.key(0), jnp.zeros((1, *SHAPE)))
  return Service.from_model(m, v, buckets=(1, 8), max_traces=2)


def _ring(alice=100, bob=100):
  return serve.KeyRing([(ALICE, serve.Client("alice", alice)), (BOB, serve.Client("bob", bob))])


def _v2(n, seed=0, **change):
  x = np.asarray(jax.random.uniform(jax.random.key(seed), (n, *SHAPE)), np.float32)
  t = dict({"name": "images", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}, **change)
  return {"inputs": [t]}


# -- the protocol parser: every JSON value is an array or a QueryError, never another exception

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=4),
                     max_leaves=20)
_field = st.one_of(_json, st.sampled_from(["images", "FP32", "UINT8", [1, 32, 32, 3], [[0.5]]]))
_tensor = st.fixed_dictionaries({}, optional={"name": _field, "shape": _field, "datatype": _field, "data": _field,
                                              "parameters": _json})
_v2_body = st.one_of(_json, st.fixed_dictionaries({"inputs": st.one_of(_json, st.lists(_tensor, max_size=2))},
                                                  optional={"id": _field, "outputs": _json}))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_v2_body)
def test_the_v2_parser_answers_every_json_with_an_array_or_a_query_error(body):
  try:
    req = protocol.parse_v2(body, SHAPE)
  except QueryError as e:
    assert "\n" not in str(e) and len(str(e)) < 400
  else:
    assert req.x.shape[1:] == SHAPE and req.x.dtype in (np.float32, np.uint8)
    assert (req.id is None or isinstance(req.id, str)) and isinstance(req.binary_output, bool)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_json, st.fixed_dictionaries({"instances": _json})))
def test_the_v1_parser_answers_every_json_with_an_array_or_a_query_error(body):
  try:
    x = protocol.parse_v1(body, SHAPE)
  except QueryError:
    pass
  else:
    assert x.shape[1:] == SHAPE


def test_a_datatype_of_the_wrong_json_type_is_a_400_and_the_connection_lives_on(service):
  served = serve.Served(service, _ring())
  with serve.BackgroundServer(serve.create_app(served)) as s, \
      httpx.Client(base_url=s.url, headers={"X-API-Key": ALICE}, timeout=30) as h:
    for datatype in (["FP32"], {"a": 1}, 3, None, True):
      r = h.post("/v2/models/victim/infer", json=_v2(1, datatype=datatype))
      assert r.status_code == 400 and r.json()["error"].startswith("datatype must be one of FP32, UINT8"), r.text
    r = h.post("/v2/models/victim/infer", json=_v2(2))   # the same keep-alive connection
    assert r.status_code == 200 and r.headers["x-ratelimit-used"] == "2"


# -- refusals the headers decide

def test_a_spent_budget_is_refused_before_its_body_is_parsed(service):
  served = serve.Served(service, _ring(alice=3))
  with serve.BackgroundServer(serve.create_app(served)) as s, \
      httpx.Client(base_url=s.url, headers={"X-API-Key": ALICE}, timeout=30) as h:
    assert h.post("/v2/models/victim/infer", json=_v2(3)).status_code == 200
    # a body that is not even JSON: a 429 (not a 400) says it was never parsed
    r = h.post("/v2/models/victim/infer", content=b"{" * (1 << 20))
    assert r.status_code == 429 and r.json()["error"] == "the budget of 3 examples is spent"
    assert r.headers["x-ratelimit-remaining"] == "0"
    meta = h.get("/v2/models/victim").json()["parameters"]
    assert (meta["budget"], meta["used"]) == (3, 3)


def test_a_refusal_reaches_a_client_that_sends_its_whole_body_first(service):
  """urllib sends the whole body before it reads: a wrong key on a 300 KB body is a readable 401, as is a spent
  budget's 429, not a broken pipe."""
  served = serve.Served(service, _ring(alice=0))
  body = json.dumps(_v2(12)).encode()
  assert 250_000 < len(body) < served.max_body_bytes
  with serve.BackgroundServer(serve.create_app(served)) as s:
    for key, status in (("sk-nobody-0123456789abcdef", 401), (ALICE, 429)):
      req = urllib.request.Request(s.url + "/v2/models/victim/infer", data=body, method="POST",
                                   headers={"X-API-Key": key, "Content-Type": "application/json"})
      with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
      assert e.value.code == status and "error" in json.loads(e.value.read())


def test_an_unauthenticated_404_names_no_model(service):
  served = serve.Served(service, _ring(), model_name="secret-model")
  with serve.BackgroundServer(serve.create_app(served)) as s:
    r = httpx.get(s.url + "/v2/models/guess/ready")
    assert r.status_code == 404 and "secret-model" not in r.text
    r = httpx.get(s.url + "/v2/models/guess", headers={"X-API-Key": ALICE})   # a key holder may learn it
    assert r.status_code == 404 and "secret-model" in r.text


# -- slow and vanishing clients

def _raw(url):
  host, port = url.split("//")[1].split(":")
  return socket.create_connection((host, int(port)), timeout=10)


def test_slow_headers_are_cut_and_a_slow_body_is_a_408(service):
  served = serve.Served(service, _ring(), body_timeout=0.5)
  with serve.BackgroundServer(serve.create_app(served), header_timeout=0.5) as s:
    idle, partial = _raw(s.url), _raw(s.url)
    partial.sendall(b"POST /v2/models/victim/infer HTTP/1.1\r\nHost: x\r\n")   # headers never finished
    t0 = time.monotonic()
    assert idle.recv(100) == b"" and partial.recv(100) == b""   # both closed by the server
    assert time.monotonic() - t0 < 5
    slow = _raw(s.url)
    slow.sendall(f"POST /v2/models/victim/infer HTTP/1.1\r\nHost: x\r\nX-API-Key: {ALICE}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{".encode())
    answer = slow.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 408") and "did not arrive within 0.5 s" in answer
    for c in (idle, partial, slow):
      c.close()
    assert httpx.get(s.url + "/v2/health/ready").status_code == 200


class _Records(logging.Handler):
  def __init__(self):
    super().__init__(logging.DEBUG)
    self.records = []

  def emit(self, record):
    if all(r is not record for r in self.records):   # a record seen through two loggers counts once
      self.records.append(record)


def test_a_client_that_drops_mid_body_is_one_info_line(service):
  served = serve.Served(service, _ring())
  seen = _Records()
  loggers = [logging.getLogger(n) for n in ("", "uvicorn", "uvicorn.error", "mlpriv_jax.serve")]
  levels = [lg.level for lg in loggers]
  for lg in loggers:
    lg.addHandler(seen)
  logging.getLogger("mlpriv_jax.serve").setLevel(logging.INFO)
  try:
    with serve.BackgroundServer(serve.create_app(served), log_level="info") as s:
      c = _raw(s.url)
      c.sendall(f"POST /v2/models/victim/infer HTTP/1.1\r\nHost: x\r\nX-API-Key: {ALICE}\r\n"
                f"Content-Length: 100000\r\n\r\n{{\"inputs\"".encode())
      time.sleep(0.3)
      c.close()
      deadline = time.monotonic() + 10
      while not any("went away" in r.getMessage() for r in seen.records) and time.monotonic() < deadline:
        time.sleep(0.05)
      assert httpx.get(s.url + "/v2/health/ready").status_code == 200
  finally:
    for lg, level in zip(loggers, levels):
      lg.removeHandler(seen)
      lg.setLevel(level)
  gone = [r for r in seen.records if "went away" in r.getMessage()]
  assert len(gone) == 1 and gone[0].levelno == logging.INFO
  assert not [r for r in seen.records if r.levelno >= logging.WARNING], [r.getMessage() for r in seen.records]


# -- the ledger

def test_the_ledger_charges_within_the_budget_and_refunds(tmp_path):
  path = str(tmp_path / "usage.sqlite")
  led = serve.Ledger(path)
  assert led.charge("alice", 4, 10) == 0 and led.charge("alice", 6, 10) == 4
  with pytest.raises(Exception, match="would pass the budget: 10 of 10 used"):
    led.charge("alice", 1, 10)
  led.refund("alice", 3)
  assert led.used("alice") == 7 and led.used("bob") == 0 and led.charge("bob", 5, None) == 0
  led.close()
  again = serve.Ledger(path)   # a restart reads every count back
  assert (again.used("alice"), again.used("bob")) == (7, 5)
  again.close()
  (tmp_path / "damaged.sqlite").write_bytes(b"this is not a database, only some bytes" * 100)
  with pytest.raises(UserError, match="damaged.sqlite: not a usable SQLite ledger"):
    serve.Ledger(str(tmp_path / "damaged.sqlite"))
  with pytest.raises(UserError, match="is a folder"):
    serve.Ledger(str(tmp_path))


def _clients(port_url, n, body):
  """n threads querying one key until refused (a connection error is a restart: retried)."""
  answered, lock = [], threading.Lock()

  def client():
    with httpx.Client(headers={"X-API-Key": ALICE, "Content-Type": "application/json"}, timeout=60) as h:
      while True:
        try:
          r = h.post(port_url() + "/v2/models/victim/infer", content=body)
        except httpx.TransportError:
          time.sleep(0.05)
          continue
        if r.status_code == 429:
          return
        if r.status_code == 200:
          with lock:
            answered.append(r.json()["outputs"][0]["shape"][0])
        elif r.status_code != 503:
          raise AssertionError(r.text)
  threads = [threading.Thread(target=client) for _ in range(n)]
  return answered, threads


def test_32_clients_across_a_restart_never_pass_the_budget(service, tmp_path):
  """The server is stopped and started again on the same ledger while 32 clients query one key: the examples
  answered in all never pass the budget, and the ledger holds every one of them."""
  ledger, budget = str(tmp_path / "usage.sqlite"), 150
  body = json.dumps(_v2(2)).encode()
  url = {}
  first = serve.BackgroundServer(serve.create_app(serve.Served(service, _ring(alice=budget),
                                                               ledger=serve.Ledger(ledger))))
  first.__enter__()
  url["u"] = first.url
  port = int(first.url.rsplit(":", 1)[1])
  answered, threads = _clients(lambda: url["u"], 32, body)
  for t in threads:
    t.start()
  while sum(answered) < 40:
    time.sleep(0.01)
  first.__exit__(None, None, None)   # the restart: a new process's state, the same ledger file
  second = serve.BackgroundServer(serve.create_app(serve.Served(service, _ring(alice=budget),
                                                                ledger=serve.Ledger(ledger))), port=port)
  with second:
    for t in threads:
      t.join(120)
    used = httpx.get(second.url + "/v2/models/victim", headers={"X-API-Key": ALICE}).json()["parameters"]["used"]
  assert not any(t.is_alive() for t in threads)
  assert sum(answered) <= budget and used == budget
  assert sum(answered) >= budget - 2 * 32   # at most the queries in flight at the restart were charged, unanswered


_SERVER = """
import sys, jax, jax.numpy as jnp
from mlpriv_jax import models, serve
from mlpriv_jax.oracle import Service
m = models.get_model("cnn_tiny", 10)
service = Service.from_model(m, m.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))), buckets=(1, 8), max_traces=2)
ring = serve.KeyRing([(sys.argv[2], serve.Client("alice", int(sys.argv[3])))])
with serve.BackgroundServer(serve.create_app(serve.Served(service, ring, ledger=serve.Ledger(sys.argv[1])))) as s:
  print(s.url, flush=True)
  sys.stdin.read()
"""


def test_two_server_processes_on_one_ledger_never_pass_the_budget(tmp_path):
  ledger, budget = str(tmp_path / "usage.sqlite"), 120
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen([sys.executable, "-c", _SERVER, ledger, ALICE, str(budget)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
  try:
    urls = [p.stdout.readline().strip() for p in procs]
    assert all(u.startswith("http://") for u in urls), urls
    body = json.dumps(_v2(3)).encode()
    runs = [_clients(lambda u=u: u, 16, body) for u in urls]   # 16 clients on each server
    for _, threads in runs:
      for t in threads:
        t.start()
    for _, threads in runs:
      for t in threads:
        t.join(120)
    per_server = [sum(answered) for answered, _ in runs]
    used = [httpx.get(u + "/v2/models/victim", headers={"X-API-Key": ALICE}).json()["parameters"]["used"]
            for u in urls]
  finally:
    for p in procs:
      p.stdin.close()
      p.wait(60)
  assert sum(per_server) == budget and used == [budget, budget] and min(per_server) > 0, per_server


def test_behind_dawn_the_ledger_logs_each_keys_triggers_for_the_verifier(tmp_path):
  """The served watermark: each key's triggers (its own secret's) and the altered labels it got are in the ledger,
  what DAWN's verification reads (`ownership.dawn.from_ledger`), and survive a restart."""
  from mlpriv_jax import defences
  from mlpriv_jax.defences import dawn
  from mlpriv_jax.ownership import dawn as verify
  m = models.get_model("cnn_tiny", 10)
  v = m.init(jax.random.key(0), jnp.zeros((1, *SHAPE)))
  master = bytes(range(32))
  service = Service.from_model(m, v, buckets=(1, 8, 64), defence=defences.build("dawn", 0.3, watermark_master=master))
  path = str(tmp_path / "usage.sqlite")
  served = serve.Served(service, _ring(), defence="dawn", defence_strength=0.3, ledger=serve.Ledger(path))
  x = np.asarray(jax.random.randint(jax.random.key(1), (40, *SHAPE), 0, 256), np.uint8)
  body = {"inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32",
                      "data": (x.astype(np.float32) / 255).ravel().tolist()}]}
  with serve.BackgroundServer(serve.create_app(served)) as s, httpx.Client(base_url=s.url, timeout=60) as h:
    got = {}
    for name, key in (("alice", ALICE), ("bob", BOB)):
      r = h.post("/v2/models/victim/infer", json=body, headers={"X-API-Key": key})
      assert r.status_code == 200, r.text
      got[name] = np.asarray(r.json()["outputs"][0]["data"], np.float32).reshape(40, 10)
  served.ledger.close()
  ledger = serve.Ledger(path)   # a restart reads the log back
  for name in ("alice", "bob"):
    secret = dawn.client_secret(master, dawn.account_bytes(serve.client_key(0, name)))
    want = verify.evidence(secret, x, got[name], 0.3)
    logged = verify.from_ledger(ledger, name)
    assert 3 <= len(logged.x) <= 25   # 12 expected
    np.testing.assert_array_equal(logged.x, want.x)
    np.testing.assert_array_equal(logged.labels, want.labels)
  a, b = verify.from_ledger(ledger, "alice"), verify.from_ledger(ledger, "bob")
  assert {t.tobytes() for t in a.x} != {t.tobytes() for t in b.x}   # two keys, two sets of triggers
  ledger.close()
