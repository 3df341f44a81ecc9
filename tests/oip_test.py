"""Against software nobody here wrote, on loopback, no mocks: RemoteVictim against MLServer (Seldon's Open Inference
Protocol v2 server) serving a model whose input, datatype and outputs differ from ours; Triton's reference client
(`tritonclient.http`, binary tensors by default) against our server. Both live in their own venv, `.venv-oip`
(`make test` builds it), because MLServer pins fastapi < 0.116 and tritonclient ml-dtypes <= 0.5.4."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402

import conftest  # noqa: E402
from conftest import OIP, REPO  # noqa: E402
from mlpriv_jax import models, serve, train  # noqa: E402
from mlpriv_jax.attacks import extraction as E  # noqa: E402
from mlpriv_jax.errors import UserError  # noqa: E402
from mlpriv_jax.oracle import QueryError, Service, Victim  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(OIP, "mlserver")),
                                reason="no .venv-oip (built by `make test`)")
sys.path.insert(0, os.path.join(REPO, "tests", "oip"))
ALICE = "sk-alice-0123456789abcdef"


def _model(root, name, implementation, inputs, weights):
  folder = os.path.join(root, name)
  os.makedirs(folder)
  np.savez(os.path.join(folder, "weights.npz"), **weights)
  outputs = [{"name": "label", "datatype": "INT64", "shape": [-1]},
             {"name": "proba", "datatype": "FP32", "shape": [-1, 10]}]
  return dict(implementation=f"runtime.{implementation}", inputs=inputs, outputs=outputs,
              parameters={"uri": os.path.join(folder, "weights.npz")})


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory):
  """MLServer on loopback with four models: linear (ours in other terms), short, broken, two_inputs."""
  root = str(tmp_path_factory.mktemp("mlserver"))
  rng = np.random.default_rng(0)
  weights = dict(w=rng.normal(0, 0.05, (32 * 32 * 3, 10)), b=rng.normal(0, 0.1, 10))
  pixels = [{"name": "pixels", "datatype": "UINT8", "shape": [-1, 32, 32, 3]}]
  settings = {name: _model(root, name, impl, inputs, weights) for name, impl, inputs in (
      ("linear", "Linear", pixels), ("short", "Short", pixels), ("broken", "Broken", pixels),
      ("two_inputs", "Linear", pixels + [{"name": "mask", "datatype": "UINT8", "shape": [-1, 32, 32, 1]}]))}
  with conftest.mlserver(root, settings) as url:
    yield url, {name: os.path.join(root, name) for name in settings}, weights


def _answered(folder) -> int:
  path = os.path.join(folder, "answered.txt")
  return sum(int(line) for line in open(path)) if os.path.exists(path) else 0


def _pool(n, seed=0):
  return np.asarray(jax.random.randint(jax.random.key(seed), (n, 32, 32, 3), 0, 256), np.uint8)


def test_remote_victim_speaks_mlservers_terms_and_counts_itself(mlserver):
  """Input `pixels` (UINT8), outputs `label` then `proba`, no API key, no quota headers: the answers equal the
  model's own, and the count is the client's: exactly the images MLServer answered."""
  from linear import probabilities
  url, folders, weights = mlserver
  with pytest.raises(UserError, match=r"declares 2 outputs \(label, proba\); choose one with --output_name"):
    serve.RemoteVictim(serve.Endpoint(url, model_name="linear"))
  with pytest.raises(UserError, match=r"serves 4 models \(broken, linear, short, two_inputs\); pass --model_name"):
    serve.RemoteVictim(serve.Endpoint(url))
  with pytest.raises(UserError, match=r"declares 2 inputs \(pixels, mask\); choose one with --input_name"):
    serve.RemoteVictim(serve.Endpoint(url, model_name="two_inputs", output_name="proba"))
  with pytest.raises(UserError, match="holds labels, which do not declare how many classes there are: pass "
                                      "--num_classes"):
    serve.RemoteVictim(serve.Endpoint(url, model_name="linear", output_name="label"))
  remote = serve.RemoteVictim(serve.Endpoint(url, model_name="linear", output_name="proba"), max_rows=7)
  assert (remote.input_name, remote.input_datatype, remote.output_kind, remote.binary) == \
      ("pixels", "UINT8", "probabilities", False)   # MLServer 1.7 lists no binary tensor extension
  x = _pool(20)
  before = _answered(folders["linear"])
  got = remote.query(x)   # three requests of at most 7 rows
  np.testing.assert_allclose(got, probabilities(x, weights["w"], weights["b"]), rtol=0, atol=1e-7)
  assert remote.queries_used == 20 == _answered(folders["linear"]) - before and remote.budget_left is None
  np.testing.assert_allclose(remote.query(x[:3].astype(np.float32) / 255), got[:3], atol=1e-7)  # floats -> pixels
  labels = serve.RemoteVictim(serve.Endpoint(url, model_name="linear", output_name="label", num_classes=10))
  np.testing.assert_array_equal(labels.query(x), np.eye(10, dtype=np.float32)[got.argmax(-1)])


def test_knockoff_through_mlserver_counts_exactly_what_the_server_answered(mlserver):
  url, folders, _ = mlserver
  remote = serve.RemoteVictim(serve.Endpoint(url, model_name="linear", output_name="proba"))
  before = _answered(folders["linear"])
  surrogate = models.get_model("cnn_tiny", 10)
  res = E.run("knockoff_random", remote, _pool(600, seed=1), budget=300, surrogate=surrogate,
              key=jax.random.key(0), config=train.TrainConfig(num_epochs=1, batch_size=32, augment=False))
  assert res.queries_used == remote.queries_used == 300 == _answered(folders["linear"]) - before


def test_a_foreign_servers_wrong_rows_and_errors_are_one_line_and_counted_once(mlserver):
  url, folders, _ = mlserver
  short = serve.RemoteVictim(serve.Endpoint(url, model_name="short", output_name="proba"))
  with pytest.raises(UserError, match=r"answered shape \[4, 10\] for 5 images; expected \[5, 10\]"):
    short.query(_pool(5))
  assert short.queries_used == 5 == _answered(folders["short"])   # answered (and charged) once, refused
  broken = serve.RemoteVictim(serve.Endpoint(url, model_name="broken", output_name="proba"), max_rows=4)
  assert broken.query(_pool(4)).shape == (4, 10)
  broken._max_rows = 8
  with pytest.raises(UserError, match=r"^http://127.0.0.1:\d+: [45]\d\d: ") as e:
    broken.query(_pool(6))
  assert "\n" not in str(e.value) and broken.queries_used == 4   # the answered queries kept, the failed not counted


@pytest.fixture(scope="module")
def ours():
  m = models.get_model("cnn_tiny", 10)
  v = m.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  service = Service.from_model(m, v, buckets=(1, 8), max_traces=2)
  ring = serve.KeyRing([(ALICE, serve.Client("alice", 1000))])
  served = serve.Served(service, ring)
  with serve.BackgroundServer(serve.create_app(served)) as s:
    yield s.url, Victim.of(service, key=serve.client_key(0, "alice")), served


_TRITON = """
import json, sys
import numpy as np
import tritonclient.http as httpclient
url, x_path, out_path, key = sys.argv[1:]
c = httpclient.InferenceServerClient(url=url)
x = np.load(x_path)
inp = httpclient.InferInput("images", list(x.shape), "FP32")
inp.set_data_from_numpy(x)   # binary_data=True: the client's default
r = c.infer("victim", [inp], headers={"Authorization": "Bearer " + key})
np.save(out_path, r.as_numpy("probabilities"))
print(json.dumps({"ready": c.is_model_ready("victim", "1"), "ready_other": c.is_model_ready("victim", "2"),
                  "extensions": c.get_server_metadata()["extensions"], "binary": r.get_response() is not None}))
"""


def test_tritonclient_with_its_defaults_gets_the_in_process_answers(ours, tmp_path):
  url, local, served = ours
  x = np.asarray(jax.random.uniform(jax.random.key(5), (6, 32, 32, 3)), np.float32)
  np.save(tmp_path / "x.npy", x)
  p = subprocess.run([os.path.join(OIP, "python"), "-c", _TRITON, url.split("//")[1], str(tmp_path / "x.npy"),
                      str(tmp_path / "out.npy"), ALICE], capture_output=True, text=True, timeout=120)
  assert p.returncode == 0, p.stderr[-3000:]
  doc = json.loads(p.stdout.strip().splitlines()[-1])
  assert doc["ready"] and not doc["ready_other"] and doc["extensions"] == ["binary_tensor_data"]
  np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), local.query(x))   # bitwise, binary both ways


def test_binary_bodies_that_do_not_add_up_are_a_400_naming_both_sizes(ours):
  url, _, _ = ours
  x = np.zeros((2, 32, 32, 3), np.float32)
  head = json.dumps({"inputs": [{"name": "images", "shape": [2, 32, 32, 3], "datatype": "FP32",
                                 "parameters": {"binary_data_size": x.nbytes}}]}).encode()
  auth = {"X-API-Key": ALICE}
  r = httpx.post(f"{url}/v2/models/victim/infer", content=head + x.tobytes()[:-4],
                 headers=dict(auth, **{"Inference-Header-Content-Length": str(len(head))}))
  assert r.status_code == 400 and r.json()["error"] == (
      "binary_data_size 24576 and the 24572 bytes after the JSON must both be 24576 (shape [2, 32, 32, 3], FP32)")
  r = httpx.post(f"{url}/v2/models/victim/infer", content=head + x.tobytes(), headers=auth)   # no header
  assert r.status_code == 400 and "needs the Inference-Header-Content-Length header" in r.json()["error"]
  r = httpx.post(f"{url}/v2/models/victim/versions/1/infer", content=head + x.tobytes(),
                 headers=dict(auth, **{"Inference-Header-Content-Length": str(len(head))}))
  assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [2, 10]   # versioned path, JSON answer
  r = httpx.get(f"{url}/v2/models/victim/versions/7", headers=auth)
  assert r.status_code == 404 and "unknown version '7'" in r.json()["error"]


def test_our_client_uses_binary_tensors_with_our_server_and_needs_no_model_name(ours):
  url, local, served = ours
  remote = serve.RemoteVictim(serve.Endpoint(url, ALICE))
  assert remote.model_name == "victim" and remote.binary
  x = np.asarray(jax.random.uniform(jax.random.key(6), (3, 32, 32, 3)), np.float32)
  used = served.ledger.used("alice")
  np.testing.assert_array_equal(remote.query(x), local.query(x))
  assert remote.queries_used == 3 and remote.server_used == used + 3
  with pytest.raises(QueryError):
    remote.query(x[:, :8])
