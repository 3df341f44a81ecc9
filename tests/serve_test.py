"""The served victim: RemoteVictim against a real uvicorn on 127.0.0.1 equals the in-process Victim bitwise; every
status code with its condition; exact budgets under 32 concurrent clients; hostile traffic; the program."""

import base64
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402

from conftest import REPO  # noqa: E402
from mlpriv_jax import defences, models, serve  # noqa: E402
from mlpriv_jax.errors import UserError  # noqa: E402
from mlpriv_jax.oracle import BudgetExceeded, QueryError, QueryRefused, Service, Victim  # noqa: E402

with warnings.catch_warnings():
  warnings.simplefilter("ignore")
  from fastapi.testclient import TestClient  # noqa: E402

ALICE, BOB = "sk-alice-0123456789abcdef", "sk-bob-0123456789abcdef00"
SEED, BUCKETS = 3, (1, 8, 64)


@pytest.fixture(scope="module")
def tiny():
  m = models.get_model("cnn_tiny", 10)
  return m, m.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def _service(tiny, defence="none", strength=None):
  model, v = tiny
  kit = defences.assemble([defence], model, jax.random.key(0))
  return Service.from_model(model, v, defence=defences.build(defence, strength, **kit._asdict()), buckets=BUCKETS,
                            max_traces=len(BUCKETS))


def _ring(alice=100, bob=100):
  return serve.KeyRing([(ALICE, serve.Client("alice", alice)), (BOB, serve.Client("bob", bob))])


def _x(n, seed=0, dtype=np.float32):
  x = np.asarray(jax.random.uniform(jax.random.key(seed), (n, 32, 32, 3)))
  return (x * 255).astype(np.uint8) if dtype == np.uint8 else x.astype(dtype)


def _v2(x, datatype=None, **extra):
  datatype = datatype or ("UINT8" if x.dtype == np.uint8 else "FP32")
  return dict({"inputs": [{"name": "images", "shape": list(x.shape), "datatype": datatype,
                           "data": x.ravel().tolist()}]}, **extra)


def _png(img):
  from PIL import Image
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format="PNG")
  return base64.b64encode(buf.getvalue()).decode()


class FlagAfter:
  """A stream monitor that flags its client once it has seen more than n queries (PRADA's interface)."""

  def __init__(self, n):
    self.n, self.seen, self.first_flag_at = n, 0, None

  def observe(self, x, top1):
    self.seen += len(x)
    if self.seen > self.n and self.first_flag_at is None:
      self.first_flag_at = self.seen
    return self.first_flag_at is not None


@pytest.fixture
def client_of(tiny):
  """client_of(defence, strength, **Served kwargs): a TestClient (lifespan run, warmed up) of that server."""
  opened = []

  def make(defence="none", strength=None, ring=None, **kw):
    served = serve.Served(_service(tiny, defence, strength), ring or _ring(), seed=SEED, defence=defence, **kw)
    c = TestClient(serve.create_app(served))
    c.__enter__()
    opened.append(c)
    deadline = time.monotonic() + 120
    while c.get("/v2/health/ready").status_code != 200:
      assert time.monotonic() < deadline, "not ready"
      time.sleep(0.02)
    return c, served
  yield make
  for c in opened:
    c.__exit__(None, None, None)


@pytest.mark.parametrize("defence,strength", [("gaussian", 0.5), ("label", None)])
def test_remote_victim_over_uvicorn_is_bitwise_the_in_process_victim(tiny, defence, strength):
  service = _service(tiny, defence, strength)
  served = serve.Served(service, _ring(alice=1000), seed=SEED)
  local = Victim.of(_service(tiny, defence, strength), budget=1000, key=serve.client_key(SEED, "alice"))
  with serve.BackgroundServer(serve.create_app(served)) as s:
    remote = serve.RemoteVictim(s.url, ALICE)
    assert (remote.num_classes, remote.input_shape, remote.budget_left) == (10, (32, 32, 3), 1000)
    for x in (_x(5), _x(7, 1, np.uint8), _x(64, 2), _x(1, 3, np.uint8)):   # FP32 and UINT8, several buckets
      got, want = remote.query(x), local.query(x)
      chex.assert_shape(got, (len(x), 10))
      assert got.dtype == np.float32 and np.array_equal(got, want), defence
    assert remote.queries_used == local.queries_used == 77 and remote.budget_left == 1000 - 77
    # TF Serving's :predict (nested floats, and PNG images) answers as the in-process victim too
    x = _x(3, 4)
    r = httpx.post(f"{s.url}/v1/models/victim:predict", json={"instances": x.tolist()},
                   headers={"X-API-Key": ALICE})
    assert r.status_code == 200 and np.array_equal(np.asarray(r.json()["predictions"], np.float32), local.query(x))
    u = _x(2, 5, np.uint8)
    r = httpx.post(f"{s.url}/v1/models/victim:predict", json={"instances": [{"b64": _png(i)} for i in u]},
                   headers={"X-API-Key": ALICE})
    assert r.status_code == 200 and np.array_equal(np.asarray(r.json()["predictions"], np.float32), local.query(u))
    assert service.num_traces == len(BUCKETS)   # compiled at warm-up, never again
    with pytest.raises(BudgetExceeded):
      remote.query(_x(1000))                    # refused by the client, before its first request
    r = httpx.get(f"{s.url}/v2/models/victim", headers={"X-API-Key": ALICE})
    assert r.headers["x-ratelimit-used"] == "82"


def test_dfme_runs_unchanged_over_loopback_in_float32_and_counts_exactly(tiny):
  """DFME's finite differences (1e-3) are below one 8-bit step, so the client must send FP32: the attack against the
  served victim trains bit for bit the student it trains in process, and the server counted every query."""
  from mlpriv_jax.attacks import extraction as E
  options = E.DfmeOptions(batch_size=4, nz=8, ngf=4, d_iter=2)   # 4 (1 * 2 + 2) = 16 queries an iteration
  run = lambda oracle: E.run("dfme", oracle, None, budget=70, surrogate=models.get_model("cnn_tiny", 10),
                             key=jax.random.key(5), config=None, options=options)
  served = serve.Served(_service(tiny), _ring(alice=70), seed=SEED)
  with serve.BackgroundServer(serve.create_app(served)) as s:
    remote = serve.RemoteVictim(s.url, ALICE)
    far = run(remote)
    assert far.queries_used == remote.server_used == 64 and remote.budget_left == 6
  near = run(Victim.of(_service(tiny), budget=70, key=serve.client_key(SEED, "alice")))
  chex.assert_trees_all_equal(far.state.params, near.state.params)
  assert len({np.round(x, 6).tobytes() for x in far.images}) == len(far.images)   # distinct float queries


def test_every_status_code_with_its_condition(client_of):
  c, served = client_of("round2", ring=_ring(alice=10, bob=None), monitor_factory=lambda: FlagAfter(4))
  auth = {"Authorization": f"Bearer {ALICE}"}
  x = _x(3)
  assert c.get("/v2/health/live").status_code == 200 and c.get("/v2/health/ready").json() == {"ready": True}
  r = c.post("/v2/models/victim/infer", json=_v2(x))
  assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer") and "missing" in r.json()["error"]
  r = c.post("/v2/models/victim/infer", json=_v2(x), headers={"Authorization": "Bearer " + ALICE[:-1]})
  assert r.status_code == 401 and "invalid_token" in r.headers["www-authenticate"]
  assert "x-ratelimit-used" not in r.headers
  r = c.post("/v2/models/thief/infer", json=_v2(x), headers=auth)
  assert r.status_code == 404 and "unknown model 'thief'" in r.json()["error"] and r.headers["x-ratelimit-used"] == "0"
  r = c.post("/v2/models/victim/infer", json=_v2(x[:, :16]), headers=auth)
  assert r.status_code == 400 and r.json()["error"].startswith("shape must be [B, 32, 32, 3]")
  r = c.post("/v2/models/victim/infer", content=b"x" * (served.max_body_bytes + 1), headers=auth)
  assert r.status_code == 413
  r = c.post("/v2/models/victim/infer", content=iter([b"[" * 2**20] * 5), headers=auth)   # chunked, no length
  assert r.status_code == 413
  r = c.post("/v2/models/victim/infer", json=_v2(x, id="q1"), headers=auth)
  assert r.status_code == 200 and r.json()["id"] == "q1" and r.json()["model_name"] == "victim"
  assert (r.headers["x-ratelimit-limit"], r.headers["x-ratelimit-remaining"], r.headers["x-ratelimit-used"]) == \
      ("10", "7", "3")
  # the monitor flags alice's stream after her 4th example: that query is refused (403), and so is every later one
  r = c.post("/v2/models/victim/infer", json=_v2(x[:2]), headers=auth)
  assert r.status_code == 403 and "flagged" in r.json()["error"] and r.headers["x-ratelimit-used"] == "3"
  assert c.post("/v2/models/victim/infer", json=_v2(x[:1]), headers=auth).status_code == 403
  # bob: his own budget (unlimited here), his own monitor; X-API-Key works too
  bob = {"X-API-Key": BOB}
  for _ in range(2):
    r = c.post("/v2/models/victim/infer", json=_v2(x[:2]), headers=bob)
    assert r.status_code == 200 and r.headers["x-ratelimit-used"] in ("2", "4")
    assert "x-ratelimit-limit" not in r.headers
  assert c.post("/v2/models/victim/infer", json=_v2(x[:1]), headers=bob).status_code == 403


def test_budget_refuses_a_query_whole_and_keys_are_independent(client_of):
  c, _ = client_of("none", ring=_ring(alice=10, bob=5))
  a, b = {"Authorization": f"Bearer {ALICE}"}, {"Authorization": f"Bearer {BOB}"}
  assert c.post("/v2/models/victim/infer", json=_v2(_x(8)), headers=a).status_code == 200
  r = c.post("/v2/models/victim/infer", json=_v2(_x(3)), headers=a)          # 8 + 3 > 10: nothing answered
  assert r.status_code == 429 and "would pass the budget" in r.json()["error"]
  assert (r.headers["x-ratelimit-remaining"], r.headers["x-ratelimit-used"]) == ("2", "8")
  assert c.post("/v2/models/victim/infer", json=_v2(_x(2)), headers=a).status_code == 200
  r = c.post("/v2/models/victim/infer", json=_v2(_x(5)), headers=b)          # bob's 5 are untouched by alice
  assert r.status_code == 200 and r.headers["x-ratelimit-remaining"] == "0"
  assert c.post("/v2/models/victim/infer", json=_v2(_x(1)), headers=b).status_code == 429
  r = c.get("/v2/models/victim", headers=a)
  assert r.status_code == 200 and r.headers["x-ratelimit-remaining"] == "0"


@pytest.mark.parametrize("batch", [1, 4])
def test_32_concurrent_clients_on_one_key_get_exactly_the_budget(tiny, batch):
  served = serve.Served(_service(tiny), _ring(alice=100), seed=SEED)
  body = json.dumps(_v2(_x(batch))).encode()
  answered, codes, start = [], [], threading.Barrier(32)

  def client(url):
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ALICE}",
                                             "Content-Type": "application/json"}, timeout=60) as h:
      start.wait()
      while True:
        r = h.post("/v2/models/victim/infer", content=body)
        codes.append(r.status_code)
        if r.status_code != 200:
          return
        answered.append(len(r.json()["outputs"][0]["data"]) // 10)

  with serve.BackgroundServer(serve.create_app(served)) as s:
    threads = [threading.Thread(target=client, args=(s.url,)) for _ in range(32)]
    for t in threads:
      t.start()
    for t in threads:
      t.join(120)
    used = httpx.get(f"{s.url}/v2/models/victim", headers={"X-API-Key": ALICE}).headers["x-ratelimit-used"]
  assert sum(answered) == 100 and len(answered) == 100 // batch and used == "100"
  assert set(codes) == {200, 429} and codes.count(429) == 32   # every client stops at its first 429


def _hostile(x):
  """Malformed and hostile request bodies (bytes), none of which may be answered, counted or crash the server."""
  good = _v2(x)
  t = good["inputs"][0]
  nan = json.dumps(_v2(x)).replace(str(t["data"][0]), "NaN", 1)
  bodies = [b"", b"{", b"null", b"[]", b'"inputs"', b"\xff\xfe\x00", b"[" * 100000 + b"]" * 100000, nan.encode(),
            json.dumps({"inputs": []}).encode(), json.dumps({"inputs": [t, t]}).encode(),
            json.dumps({"instances": x.tolist()}).encode()]
  for change in (dict(name="logits"), dict(datatype="FP64"), dict(datatype="BYTES"), dict(datatype=None),
                 dict(shape=[1, 32, 32, 3]), dict(shape=[3, 3072]), dict(shape=[-3, 32, 32, 3]),
                 dict(shape="3,32,32,3"), dict(shape=[3, 32, 32, 3.0]), dict(shape=[0, 32, 32, 3], data=[]),
                 dict(data="AAAA"), dict(data=[[1, 2], [3]]), dict(data=["0.5"] * t["shape"][0] * 3072),
                 dict(data=[None] * 3 * 3072), dict(data=[True] * 3 * 3072), dict(data=[2.0] * 3 * 3072),
                 dict(data=[-0.1] * 3 * 3072), dict(data=t["data"][:-1]), dict(data={"a": 1}),
                 dict(datatype="UINT8", data=[256] * 3 * 3072), dict(datatype="UINT8", data=[0.5] * 3 * 3072),
                 dict(data=[1e400] * 3 * 3072)):
    bad = dict(t, **change)
    bodies.append(json.dumps({"inputs": [{k: v for k, v in bad.items() if v is not None}]}).encode())
  for missing in ("name", "shape", "datatype", "data"):
    bodies.append(json.dumps({"inputs": [{k: v for k, v in t.items() if k != missing}]}).encode())
  bodies.append(json.dumps(dict(good, id=7)).encode())
  bodies.append(json.dumps(dict(good, outputs=[{"name": "logits"}])).encode())
  return bodies


def test_server_survives_1000_hostile_requests_and_answers_correctly_after(tiny):
  served = serve.Served(_service(tiny, "round2"), _ring(alice=50), seed=SEED, max_body_bytes=1 << 20)
  local = Victim.of(_service(tiny, "round2"), key=serve.client_key(SEED, "alice"))
  x = _x(3)
  bodies = _hostile(x)
  v1 = [json.dumps({"instances": [{"b64": "!!!"}]}), json.dumps({"instances": [{"b64": _png(_x(1, 0, np.uint8)[0])[:2000]}]}),
        json.dumps({"instances": [{"b64": _png(np.zeros((8, 8, 3), np.uint8))}]}), json.dumps({"instances": [[0.5]]}),
        json.dumps({"instances": []}), json.dumps({"instances": [{"b64": base64.b64encode(b"GIF89a...").decode()}]})]
  statuses = {}
  with serve.BackgroundServer(serve.create_app(served)) as s, \
      httpx.Client(base_url=s.url, headers={"X-API-Key": ALICE}, timeout=60) as h:
    for i in range(1000):
      kind = i % (len(bodies) + len(v1) + 4)
      if kind < len(bodies):
        r = h.post("/v2/models/victim/infer", content=bodies[kind], headers={"Content-Type": "application/json"})
      elif kind < len(bodies) + len(v1):
        r = h.post("/v1/models/victim:predict", content=v1[kind - len(bodies)])
      elif kind == len(bodies) + len(v1):
        r = h.post("/v2/models/victim/infer", content=b"0" * (2 << 20))                       # too large
      elif kind == len(bodies) + len(v1) + 1:
        r = h.get("/v2/models/victim/infer")                                                   # wrong method
      elif kind == len(bodies) + len(v1) + 2:
        r = h.post("/v2/models/victim/infer", content=json.dumps(_v2(x)), headers={"X-API-Key": "x" * 10**4})
      else:
        r = h.post("/v2/../../etc/passwd", content=b"{}")
      statuses.setdefault(r.status_code, 0)
      statuses[r.status_code] += 1
      assert 400 <= r.status_code < 500 and "error" in r.json(), (kind, r.status_code, r.text[:300])
    assert h.get("/v2/health/ready").status_code == 200
    r = h.post("/v2/models/victim/infer", json=_v2(x))
    assert r.status_code == 200 and r.headers["x-ratelimit-used"] == "3"   # no hostile request was counted
    got = np.asarray(r.json()["outputs"][0]["data"], np.float32).reshape(3, 10)
    assert np.array_equal(got, local.query(x))
  assert set(statuses) <= {400, 401, 404, 405, 413} and statuses.get(400, 0) > 700, statuses


def test_answers_hold_only_the_released_output(client_of):
  c, _ = client_of("label")
  auth = {"Authorization": f"Bearer {ALICE}"}
  r = c.post("/v2/models/victim/infer", json=_v2(_x(6)), headers=auth)
  doc = r.json()
  assert set(doc) == {"model_name", "model_version", "outputs"} and len(doc["outputs"]) == 1
  out = doc["outputs"][0]
  assert out["name"] == "probabilities" and out["shape"] == [6, 10] and len(out["data"]) == 60
  assert set(out["data"]) == {0.0, 1.0}                   # one-hot: neither logits nor the softmax
  meta = c.get("/v2/models/victim", headers=auth).json()
  assert "defence" not in json.dumps(meta) and len(json.dumps(meta)) < 1000   # no parameters, defence not told
  c2, _ = client_of("revsig", 0.5, disclose_defence=True, defence_strength=0.5)
  meta = c2.get("/v2/models/victim", headers=auth).json()
  assert (meta["parameters"]["defence"], meta["parameters"]["strength"]) == ("revsig", 0.5)   # the registry's terms
  assert c.get("/v2").json()["name"] == "mlpriv_jax"


def test_remote_victim_maps_errors_to_the_oracle_exceptions(tiny):
  served = serve.Served(_service(tiny), _ring(alice=10), seed=SEED, monitor_factory=lambda: FlagAfter(6))
  with serve.BackgroundServer(serve.create_app(served)) as s:
    with pytest.raises(UserError, match="401: unknown API key"):
      serve.RemoteVictim(s.url, "sk-nobody-0123456789abcdef")
    with pytest.raises(UserError, match="404: unknown model 'other'"):
      serve.RemoteVictim(s.url, ALICE, "other")
    remote = serve.RemoteVictim(s.url, ALICE, max_rows=2)
    with pytest.raises(QueryError, match=r"shape \[B, 32, 32, 3\]"):
      remote.query(_x(2)[:, :8])
    with pytest.raises(QueryError, match="NaN"):
      remote.query(np.full((1, 32, 32, 3), np.nan, np.float32))
    assert remote.query(_x(5)).shape == (5, 10) and remote.queries_used == 5   # three requests of <= 2 rows
    with pytest.raises(BudgetExceeded):
      remote.query(_x(6))
    with pytest.raises(QueryRefused):
      remote.query(_x(2))
  with pytest.raises(UserError, match="cannot reach"):
    serve.RemoteVictim(s.url, ALICE)                      # the server is gone


@pytest.mark.parametrize("doc,match", [
    (None, "does not exist"), ("{", "not readable JSON"), ({"keys": []}, 'must hold {"clients"'),
    ({"clients": [{"name": "a", "key": "short"}]}, "at least 16 printable"),
    ({"clients": [{"name": "a b", "key": ALICE}]}, "needs a name"),
    ({"clients": [{"name": "a", "key": ALICE, "budget": -1}]}, "budget -1; it must be an integer >= 0"),
    ({"clients": [{"name": "a", "key": ALICE}, {"name": "b", "key": ALICE}]}, "its own key"),
    ({"clients": [{"name": "a", "key": ALICE, "quota": 3}]}, "optionally budget")])
def test_keys_file_bad_input(tmp_path, doc, match):
  path = tmp_path / "keys.json"
  if doc is not None:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
  with pytest.raises(UserError, match=match) as e:
    serve.load_keys(str(path), 100)
  assert "\n" not in str(e.value)


def test_key_lookup():
  ring = serve.load_keys(_keys_file_path(), 7)
  assert ring.lookup(ALICE) == serve.Client("alice", 7) and ring.lookup(BOB) == serve.Client("bob", 3)
  for wrong in (None, "", ALICE[:-1], ALICE + "x", ALICE.upper()):
    assert ring.lookup(wrong) is None


def _keys_file_path(folder=None):
  import tempfile
  path = os.path.join(folder or tempfile.mkdtemp(), "keys.json")
  with open(path, "w") as f:
    json.dump({"clients": [{"name": "alice", "key": ALICE}, {"name": "bob", "key": BOB, "budget": 3}]}, f)
  return path


def _serve(*args):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  return subprocess.Popen([sys.executable, os.path.join(REPO, "experiments", "serve.py"), *args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_serve_program_answers_as_the_in_process_victim_and_refuses_bad_input(tiny, tmp_path):
  model, v = tiny
  art = models.save_model(str(tmp_path / "victim"), model, v, meta=dict(note="untrained"))
  keys = _keys_file_path(str(tmp_path))
  p = _serve(f"--victim={art}", f"--keys_file={keys}", "--port=0", "--defence=gaussian", "--strength=0.5",
             "--budget_per_key=20", "--access_log=false")
  try:
    line = ""
    deadline = time.monotonic() + 120
    while "listening on" not in line:
      assert time.monotonic() < deadline and p.poll() is None, p.stderr.read()[-2000:]
      line = p.stdout.readline()
    url = line.split("listening on ")[1].split()[0]
    while httpx.get(url + "/v2/health/ready").status_code != 200:
      assert time.monotonic() < deadline
      time.sleep(0.05)
    remote = serve.RemoteVictim(url, ALICE)
    local = Victim.of(Service.from_model(model, v, defence=defences.build("gaussian", 0.5)),
                      key=serve.client_key(0, "alice"))
    x = _x(5)
    assert np.array_equal(remote.query(x), local.query(x)) and remote.budget_left == 15
    taken = int(url.rsplit(":", 1)[1])
    q = subprocess.run([sys.executable, os.path.join(REPO, "experiments", "serve.py"), f"--victim={art}",
                        f"--keys_file={keys}", f"--port={taken}"], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu"), timeout=120)
    lines = q.stderr.strip().splitlines()
    assert q.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: cannot listen on 127.0.0.1:{taken}")
  finally:
    p.send_signal(signal.SIGINT)
    p.wait(30)
  bad = tmp_path / "bad.json"
  bad.write_text('{"clients": [}')
  for args, match in [((f"--victim={art}",), "--keys_file is required"),
                      ((f"--victim={art}", f"--keys_file={bad}"), "not readable JSON"),
                      ((f"--victim={art}", f"--keys_file={keys}", "--budget_per_key=-1"), "--budget_per_key must be")]:
    q = _serve(*args, "--port=0")
    out, err = q.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert q.returncode == 2 and len(lines) == 1 and match in lines[0], (args, err[-1000:])


@pytest.mark.parametrize("change,match", [
    (dict(keys_file="none.json"), "does not exist"), (dict(victim="nothing"), "no model artifact"),
    (dict(defence="shield"), "unknown defence 'shield'"), (dict(defence="revsig"), "needs --strength"),
    (dict(defence="revsig", strength=-1.0), "out of range"), (dict(monitor="argus"), "--monitor must be"),
    (dict(budget_per_key=-1), "--budget_per_key must be an integer >= 0"), (dict(model_name="a/b"), "--model_name")])
def test_serving_build_bad_input(tiny, tmp_path, change, match):
  model, v = tiny
  args = dict(victim=models.save_model(str(tmp_path / "victim"), model, v), keys_file=_keys_file_path(str(tmp_path)),
              log=lambda *_: None)
  for k in ("keys_file", "victim"):
    if k in change:
      change = dict(change, **{k: str(tmp_path / change[k])})
  from mlpriv_jax.lab import serving
  with pytest.raises(UserError, match=match) as e:
    serving.build(**{**args, **change})
  assert "\n" not in str(e.value)


@pytest.mark.slow
def test_knockoff_through_victim_url_trains_the_same_surrogate_as_in_process(tmp_path):
  import dataclasses
  from experiments_test import TINY_CFG, _train
  from mlpriv_jax.games.extraction import ExtractionAudit
  from mlpriv_jax.lab import extraction, serving
  _train(tmp_path / "victim")
  cfg = extraction.ExtractRun(ExtractionAudit(("knockoff_random",), budgets=(100, 300), surrogates=("cnn_tiny",),
                                              query_set="patterns20", surrogate=TINY_CFG), num_test=200)
  run = dict(victim=str(tmp_path / "victim"), log=lambda *_: None)
  here = extraction.run(cfg, workdir=str(tmp_path / "here"), **run)
  served = serving.build(victim=str(tmp_path / "victim"), keys_file=_keys_file_path(str(tmp_path)),
                         budget_per_key=300, log=lambda *_: None)
  with serve.BackgroundServer(serve.create_app(served)) as s:
    there = extraction.run(cfg, workdir=str(tmp_path / "there"), endpoint=serve.Endpoint(s.url, ALICE), **run)
    with pytest.raises(BudgetExceeded, match="needs 300 queries; the oracle has 0 left"):
      extraction.run(cfg, workdir=str(tmp_path / "again"), endpoint=serve.Endpoint(s.url, ALICE), **run)
  assert there["queries_used"] == here["queries_used"] == 300
  assert there["curve"] == here["curve"] and there["victim_url"] == s.url   # the same surrogate, checkpoint by checkpoint
  with pytest.raises(UserError, match="defends the in-process victim"):
    extraction.run(dataclasses.replace(cfg, defence="top1"), workdir=str(tmp_path / "mixed"),
                   endpoint=serve.Endpoint(s.url, ALICE), **run)
