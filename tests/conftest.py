"""Shared test set-up: strict rank promotion, and the real CIFAR files when present."""

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# Silent broadcasting bugs fail loudly (STYLE.md, after equinox).
jax.config.update("jax_numpy_rank_promotion", "raise")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OIP = os.path.join(REPO, ".venv-oip", "bin")   # third-party Open Inference Protocol software (`make test` builds it)


@pytest.fixture(scope="session", autouse=True)
def compile_cache_for_subprocesses(tmp_path_factory):
  """Every program a test starts (experiments/*.py, the benchmark scripts, servers) shares one JAX persistent
  compilation cache for the session (both xdist workers): a program run again compiles nothing. The test process
  itself keeps none (it read its config when it imported JAX above), so its compile-counting tests count."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent
  os.environ["JAX_COMPILATION_CACHE_DIR"] = str(root / "jax_compilation_cache")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"


def program(name, *args, timeout=600):
  """Runs experiments/<name>.py as a subprocess on the CPU; returns the CompletedProcess (text output)."""
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, os.path.join(REPO, "experiments", f"{name}.py"), *args],
                        capture_output=True, text=True, timeout=timeout, env=env)


def shared_workdir(tmp_path_factory, name, build):
  """A folder built once per test session, also under pytest-xdist: the first worker to take the lock runs
  `build(path)`; the others wait and reuse it (its `done` marker is written only after a build that returned)."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent   # shared by every worker of this session
  path = os.path.join(str(root), name)
  with open(path + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not os.path.exists(path + ".done"):
      build(path)
      open(path + ".done", "w").close()
  return path


def shared_data_dir():
  """$MLPRIV_DATA_DIR, else ../shared/data beside the checkout, else None."""
  for d in (os.environ.get("MLPRIV_DATA_DIR"), os.path.join(REPO, "..", "shared", "data")):
    if d and os.path.exists(os.path.join(d, "cifar10.npz")):
      return os.path.abspath(d)
  return None


@pytest.fixture
def data_dir():
  d = shared_data_dir()
  if d is None:
    pytest.skip("no CIFAR data dir (set MLPRIV_DATA_DIR or put ../shared/data beside the checkout)")
  return d


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def mlserver(root: str, models: dict):
  """MLServer (from .venv-oip) on loopback serving `models` ({name: model-settings.json's fields}, each under
  `root/<name>`, implemented in tests/oip/runtime.py); yields its URL once every model is ready."""
  import httpx
  for name, settings in models.items():
    os.makedirs(os.path.join(root, name), exist_ok=True)
    with open(os.path.join(root, name, "model-settings.json"), "w") as f:
      json.dump(dict(settings, name=name), f)
  port = free_port()
  with open(os.path.join(root, "settings.json"), "w") as f:
    json.dump({"http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), "parallel_workers": 0,
               "debug": False}, f)
  env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "tests", "oip"), JAX_PLATFORMS="cpu")
  log_path = os.path.join(root, "mlserver.log")
  with open(log_path, "w") as log:
    proc = subprocess.Popen([os.path.join(OIP, "mlserver"), "start", root], stdout=log, stderr=subprocess.STDOUT,
                            env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
      deadline = time.monotonic() + 180
      while True:
        try:
          if all(httpx.get(f"{url}/v2/models/{m}/ready", timeout=5).status_code == 200 for m in models):
            break
        except httpx.HTTPError:
          pass
        assert proc.poll() is None and time.monotonic() < deadline, open(log_path).read()[-3000:]
        time.sleep(0.5)
      yield url
    finally:
      proc.terminate()
      proc.wait(30)


class StubOracle:
  """The Oracle protocol and nothing else: any other attribute is an error an attack cannot swallow."""

  def __init__(self, model, variables, budget):
    self._answer = jax.jit(lambda x: jax.nn.softmax(model.apply(variables, x, train=False)[0]))
    self._budget, self._used = budget, 0
    self.num_classes, self.input_shape = model.num_classes, (32, 32, 3)

  def query(self, x):
    x = np.asarray(x)
    x = x.astype(np.float32) / 255 if x.dtype == np.uint8 else x
    assert self._used + len(x) <= self._budget, "the attack passed its budget"
    self._used += len(x)
    return np.asarray(self._answer(jnp.asarray(x)))

  @property
  def queries_used(self):
    return self._used

  @property
  def budget_left(self):
    return self._budget - self._used

  def __getattr__(self, name):
    raise AssertionError(f"the attack used {name!r}, which is outside the Oracle protocol")
