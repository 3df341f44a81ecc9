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


def test_gpu_check_refuses_a_damaged_data_file_before_training(tmp_path):
  for name in ("cifar10_jpeg.npz", "cifar100_jpeg.npz"):
    (tmp_path / name).write_bytes(b"PK\x03\x04 not a whole zip")
  r = _run(f"--out={tmp_path / 'o'}", f"--data_dir={tmp_path}", f"--workdir={tmp_path / 'w'}", "--dry_run")
  assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
  assert "cifar10_jpeg.npz is damaged" in r.stderr
  assert not (tmp_path / "o").exists() and not (tmp_path / "w").exists()


@pytest.mark.slow
def test_gpu_check_dry_run_runs_both_commands_and_the_second_resumes_the_first(tmp_path, data_dir):
  """The lent machine's two commands at tiny sizes: the first writes table1 (victim and five rows) into the
  workdir and runs every benchmark step; the second, after the first lost its last row (killed), reuses the rest
  unchanged, trains that row again (the same figures), adds table2, and runs no benchmark the first finished."""
  work = tmp_path / "work"
  first = _run(f"--out={tmp_path / 'o1'}", f"--data_dir={data_dir}", f"--workdir={work}", "--dry_run")
  assert first.returncode == 0, first.stderr
  assert "starting from scratch with table1" in first.stderr
  steps = json.loads((tmp_path / "o1" / "steps.json").read_text())
  assert set(steps) == {"tables_table1", "loop_overhead", "throughput_b8", "train_k"}, steps
  assert all(s["exit_status"] == 0 for s in steps.values()), steps
  t1 = json.loads((tmp_path / "o1" / "tables.json").read_text())
  assert set(t1["tables"]) == {"table1"} and len(t1["tables"]["table1"]["rows"]) == 5
  assert t1["tables"]["table1"]["victim"]["epochs_run"] == 1
  loop = json.loads((tmp_path / "o1" / "loop_overhead.json").read_text())
  assert loop["figures"]["loop"]["images_per_sec"] > 0 and loop["setup"]["dtype"] == "bfloat16"
  assert len(os.listdir(tmp_path / "o1")) <= 8

  # the first command killed before its last row: the workdir's tables.json without it
  kept = json.loads((work / "tables" / "tables.json").read_text())
  del kept["tables"]["table1"]["rows"]["vgg16"]
  (work / "tables" / "tables.json").write_text(json.dumps(kept))
  second = _run(f"--out={tmp_path / 'o2'}", f"--data_dir={data_dir}", f"--workdir={work}", "--dry_run")
  assert second.returncode == 0, second.stderr
  assert "second command: 4 of table1's 5 rows are in" in second.stderr
  steps = json.loads((tmp_path / "o2" / "steps.json").read_text())
  assert set(steps) == {"tables_table1_table2"} and steps["tables_table1_table2"]["exit_status"] == 0, steps
  assert "loop_overhead: measured by the first command" in second.stderr   # the window is not spent twice
  t2 = json.loads((tmp_path / "o2" / "tables.json").read_text())
  untimed = lambda rows: {k: {m: v for m, v in r.items() if m != "seconds"} for k, r in rows.items()}
  assert t2["tables"]["table1"]["victim"] == t1["tables"]["table1"]["victim"]   # reused, not trained again
  assert {k: r for k, r in t2["tables"]["table1"]["rows"].items() if k != "vgg16"} == {
      k: r for k, r in t1["tables"]["table1"]["rows"].items() if k != "vgg16"}
  assert untimed(t2["tables"]["table1"]["rows"]) == untimed(t1["tables"]["table1"]["rows"])   # the lost row, again
  assert len(t2["tables"]["table2"]["rows"]) == 5 and t2["tables"]["table2"]["victim"]["epochs_run"] == 1
  md = (tmp_path / "o2" / "tables.md").read_text()
  assert "## table1" in md and "## table2" in md
  assert os.listdir(work / "jax_cache"), "the compiled programs are cached for the second command"
