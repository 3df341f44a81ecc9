"""benchmarks/gpu_check.sh: its --dry_run on CPU runs every step of the GPU run at tiny sizes."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = os.path.join(REPO, "benchmarks", "gpu_check.sh")


def _run(*args, timeout=300):
  env = dict(os.environ, PYTHON=sys.executable)
  return subprocess.run(["bash", SCRIPT, *args], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=timeout)


def test_gpu_check_without_its_data_says_what_is_missing(tmp_path):
  r = _run(f"--out={tmp_path / 'o'}", f"--data_dir={tmp_path}", "--dry_run")
  assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
  assert "cifar10_jpeg.npz" in r.stderr and "cifar100_jpeg.npz" in r.stderr
  assert not (tmp_path / "o").exists()
  r = _run(f"--data_dir={tmp_path}")
  assert r.returncode == 2 and "--out" in r.stderr


@pytest.mark.slow
def test_gpu_check_dry_run_measures_every_step(tmp_path, data_dir):
  out = tmp_path / "out"
  r = _run(f"--out={out}", f"--data_dir={data_dir}", "--dry_run")
  assert r.returncode == 0, r.stderr
  steps = json.loads((out / "steps.json").read_text())
  assert set(steps) == {"throughput_b8", "train_k", "paper_tables"}, steps   # the GPU run: two batches, datafree
  assert all(s["exit_status"] == 0 for s in steps.values()), steps
  rows = json.loads((out / "throughput_b8.json").read_text())
  assert "cnn_tiny" in rows["archs"] and rows["archs"]["cnn_tiny"]["train"]["images_per_sec"] > 0
  assert rows["archs"]["cnn_tiny"]["train"]["tflops_per_sec"] > 0       # the FLOPs are counted
  assert "vmap" in (out / "train_k.json").read_text()
  assert sorted(os.listdir(out)) == sorted(["steps.json", "steps.log", "throughput_b8.json", "train_k.json",
                                             "paper_tables.json", "paper_tables.md"])
  tables = json.loads((out / "paper_tables.json").read_text())
  victim = tables["tables"]["table1"]["victim"]
  assert victim["epochs_run"] == 1 and victim["seconds_per_epoch"] > 0
  assert set(tables["tables"]["table1"]["rows"]) == {"wres16"}
