import json
import os
import subprocess
import sys

import pytest


from conftest import REPO

TINY = ["--arch=cnn_tiny", "--num_train=256", "--num_epochs=1", "--batch_size=32"]


def _program(name, *args, timeout=600):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, os.path.join(REPO, "experiments", f"{name}.py"), *args],
                        capture_output=True, text=True, timeout=timeout, env=env)


def _run(*args):
  return _program("train", *args)


def test_train_program_writes_results_and_resumes(tmp_path):
  wd = str(tmp_path / "run")
  p = _run("--preset=smoke", f"--workdir={wd}", *TINY)
  assert p.returncode == 0, p.stderr[-2000:]
  res = json.load(open(os.path.join(wd, "results.json")))
  for k in ("test_accuracy", "num_params", "train_images_per_sec", "compile_seconds", "wall_seconds"):
    assert k in res, k
  assert res["num_params"] == 6418 and 0 <= res["test_accuracy"] <= 1
  assert len(open(os.path.join(wd, "metrics.jsonl")).readlines()) == 1
  # A rerun finds the finished checkpoint and trains nothing more.
  p = _run("--preset=smoke", f"--workdir={wd}", *TINY)
  assert p.returncode == 0 and "epoch" not in p.stdout.replace("epochs", "")
  assert len(open(os.path.join(wd, "metrics.jsonl")).readlines()) == 1


def test_train_program_k_models_saves_keep(tmp_path):
  wd = str(tmp_path / "k")
  p = _run("--preset=smoke", f"--workdir={wd}", *TINY, "--num_models=2", "--keep_fraction=0.5")
  assert p.returncode == 0, p.stderr[-2000:]
  res = json.load(open(os.path.join(wd, "results.json")))
  assert len(res["test_accuracy"]) == 2
  import numpy as np
  keep = np.load(os.path.join(wd, "keep.npy"))
  assert keep.shape == (2, 256) and (keep.sum(0) == 1).all()


@pytest.mark.parametrize("args,match", [
    (["--arch=resnet33"], "unknown architecture 'resnet33'"),
    (["--dataset=nope"], "unknown dataset 'nope'"),
    (["--num_models=0"], "--num_models must be >= 1"),
    (["--batch_size=5000"], "batch_size 5000 is larger than the data"),
    (["--num_epochs=-1"], "num_epochs must be >= 1"),
    (["--num_train=999999"], "exceeds the 10000 training images"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, match):
  p = _run("--preset=smoke", f"--workdir={tmp_path / 'bad'}", "--num_train=256", *args)
  assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
  lines = [l for l in p.stderr.strip().splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and match in lines[0], p.stderr[-2000:]


def test_workdir_of_another_run_is_refused(tmp_path):
  wd = str(tmp_path / "run")
  assert _run("--preset=smoke", f"--workdir={wd}", *TINY).returncode == 0
  before = open(os.path.join(wd, "results.json")).read()
  p = _run("--preset=smoke", f"--workdir={wd}", *TINY[1:], "--arch=cnn_small")
  assert p.returncode == 2 and "use another --workdir" in p.stderr
  assert open(os.path.join(wd, "results.json")).read() == before


@pytest.fixture(scope="module")
def tiny_victim(tmp_path_factory):
  """One tiny trained victim for the defend and extract programs."""
  victim = str(tmp_path_factory.mktemp("victim") / "run")
  assert _run("--preset=smoke", f"--workdir={victim}", *TINY).returncode == 0
  return victim


def test_defend_program(tmp_path, tiny_victim):
  victim = tiny_victim
  out = str(tmp_path / "defend")
  p = _program("defend", f"--victim_workdir={victim}", f"--workdir={out}", "--defences=none,top1,mad_argmax,memguard",
              "--epsilons=0.5", "--num_test=100", "--num_guard=100", "--guard_steps=50", "--batch_size=50")
  assert p.returncode == 0, p.stderr[-2000:]
  res = json.load(open(os.path.join(out, "results.json")))
  d = res["defences"]
  assert set(d) == {"none", "top1", "mad_argmax", "memguard"}
  assert d["none"]["0"]["label_flip_rate"] == 0 and d["none"]["0"]["l1"] < 1e-5  # batch-size round-off only
  assert d["mad_argmax"]["0.5"]["label_flip_rate"] == 0 and abs(d["mad_argmax"]["0.5"]["l1"] - 0.5) < 0.05
  assert d["memguard"]["0.5"]["label_flip_rate"] == 0 and d["memguard"]["0.5"]["l1"] <= 0.5 * 1.5
  for args, match in [(["--defences=shield"], "unknown defence 'shield'"), (["--epsilons=-1"], "epsilons must be >= 0"),
                      ([f"--victim_workdir={tmp_path / 'none'}"], "no model artifact")]:
    p = _program("defend", f"--victim_workdir={victim}", f"--workdir={out}", *args)
    assert p.returncode == 2 and match in p.stderr, (args, p.stderr[-1000:])


def test_extract_program(tmp_path, tiny_victim):
  import numpy as np
  victim = tiny_victim
  out = str(tmp_path / "extract")
  common = [f"--victim_workdir={victim}", "--surrogate_arch=cnn_tiny", "--num_epochs=1", "--batch_size=32",
            "--num_test=200"]
  p = _program("extract", *common, f"--workdir={out}", "--budget=300", "--checkpoints=100,300")
  assert p.returncode == 0, p.stderr[-2000:]
  res = json.load(open(os.path.join(out, "results.json")))
  for k in ("accuracy", "fidelity", "victim_accuracy", "accuracy_ratio", "fidelity_ratio", "queries_used", "curve"):
    assert k in res, k
  assert res["queries_used"] == 300 and [c["queries"] for c in res["curve"]] == [100, 300]
  assert os.path.getsize(os.path.join(out, "curve.png")) > 1000
  small = tmp_path / "data"
  small.mkdir()
  x = np.zeros((64, 16, 16, 3), np.uint8)
  np.savez(small / "tiny16.npz", x_train=x, y_train=np.zeros(64, np.int64), x_test=x, y_test=np.zeros(64, np.int64))
  for args, match in [(["--budget=0"], "--budget must be a positive integer"),
                      (["--budget=30000"], "budget 30000 is larger than the query pool (20000 images)"),
                      ([f"--victim_workdir={tmp_path / 'nothing'}"], "no model artifact"),
                      (["--query_set=tiny16", f"--data_dir={small}"], "has images of shape (16, 16, 3), the victim takes"),
                      (["--surrogate_arch=resnet7"], "unknown architecture 'resnet7'"),
                      (["--defence=shield"], "unknown defence")]:
    p = _program("extract", *common, f"--workdir={tmp_path / 'bad'}", *args)
    assert p.returncode == 2 and match in p.stderr, (args, p.stderr[-1500:])


def test_survey_tables_program_one_row(tmp_path):
  out = str(tmp_path / "tables")
  p = _program("survey_tables", "--preset=smoke", f"--workdir={out}", "--tables=table1", "--surrogates=wres16",
               "--num_train=1000", "--budget=300", "--victim_epochs=1", "--surrogate_epochs=1")
  assert p.returncode == 0, p.stderr[-2000:]
  res = json.load(open(os.path.join(out, "tables.json")))["tables"]["table1"]
  assert res["victim"]["arch"] == "wres16" and set(res["rows"]) == {"wres16"}
  row = res["rows"]["wres16"]
  assert 0 <= row["fidelity"] <= 1 and abs(row["accuracy_ratio"] - row["accuracy"] / res["victim"]["accuracy"]) < 1e-9
  md = open(os.path.join(out, "tables.md")).read()
  assert "| wres16 (wrn16_1) |" in md and "85.63 (0.90x)" in md   # the survey's own cell beside ours
  bad = _program("survey_tables", f"--workdir={out}", "--surrogates=res50")
  assert bad.returncode == 2 and "unknown rows ['res50']" in bad.stderr
  bad = _program("survey_tables", f"--workdir={out}", "--budget=0")
  assert bad.returncode == 2 and "--budget must be >= 1, got 0" in bad.stderr
  bad = _program("survey_tables", f"--workdir={out}", "--tables=table1", "--surrogates=wres16")
  assert bad.returncode == 2 and "use another --workdir" in bad.stderr   # other scale than the saved tables
