"""Shared test set-up: strict rank promotion, and the real CIFAR files when present."""

import fcntl
import os
import subprocess
import sys

import jax
import pytest

# Silent broadcasting bugs fail loudly (STYLE.md, after equinox).
jax.config.update("jax_numpy_rank_promotion", "raise")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
