"""Many hosts: mia.py launched as 2 processes on localhost through jax.distributed trains the same models and writes
the same results as one process; a killed process's work is resumed by a rerun on another number of processes; a
launch whose processes disagree, or whose coordinator never answers, stops with one line."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, free_port, program, shared_workdir

# A small game: 4 models (the target and 3 shadows) in 2 chunks of 2 when 2 processes share it.
GAME = ("--preset=smoke", "--arch=cnn_tiny", "--num_examples=128", "--num_shadows=3", "--num_epochs=3",
        "--batch_size=32", "--attack=loss,lira_online", "--num_bootstrap=10", "--num_test=100")


def _launch(workdir, n, extra=None):
  """The processes of one launch of mia.py on localhost (Popen, text output); extra[i]: process i's own flags."""
  port, extra = free_port(), extra or [()] * n
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  return [subprocess.Popen([sys.executable, os.path.join(REPO, "experiments", "mia.py"), *GAME, *extra[i],
                            f"--workdir={workdir}", f"--coordinator_address=127.0.0.1:{port}",
                            f"--num_processes={n}", f"--process_id={i}"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for i in range(n)]


def _finish(procs, timeout=300):
  out = [p.communicate(timeout=timeout)[0] for p in procs]
  return [p.returncode for p in procs], out


def _results(workdir):
  """results.json without its timings, and scores.npz."""
  r = json.load(open(os.path.join(workdir, "results.json")))
  r.pop("seconds")
  return r, dict(np.load(os.path.join(workdir, "scores.npz")))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
  """The reference: the game on one process (one chunk of all 4 models)."""
  def build(path):
    r = program("mia", *GAME, f"--workdir={path}")
    assert r.returncode == 0, r.stderr[-2000:]
  return shared_workdir(tmp_path_factory, "hosts_one_process", build)


def _assert_same(workdir, reference):
  got, got_scores = _results(workdir)
  want, want_scores = _results(reference)
  assert got == want
  assert set(got_scores) == set(want_scores)
  for k in want_scores:   # the shadows' and the target's signals included: bit for bit
    np.testing.assert_array_equal(got_scores[k], want_scores[k], err_msg=k)


@pytest.mark.slow
def test_two_processes_train_the_models_of_one(one_process, tmp_path):
  """Each process trains one chunk of 2 models; process 0 reads both and writes results.json and scores.npz equal,
  bit for bit, to the one-process run's (a model's keys depend on its index only, and on XLA:CPU a vmapped chunk of
  2 computes each model exactly as a chunk of 4 does); process 1 writes only its chunk's checkpoint."""
  codes, out = _finish(_launch(tmp_path / "w", 2))
  assert codes == [0, 0], out
  assert "process 0 of 2: trained models 0-1" in out[0] and "process 1 of 2: trained models 2-3" in out[1]
  assert "results in" in out[0] and "results in" not in out[1]
  assert sorted(os.listdir(tmp_path / "w" / "models")) == ["models_00000-00002.msgpack",
                                                          "models_00002-00004.msgpack"]
  _assert_same(tmp_path / "w", one_process)


@pytest.mark.slow
def test_a_killed_process_is_resumed_by_one_process(one_process, tmp_path):
  """Process 1 killed (SIGKILL) once its chunk has checkpointed an epoch, then the launch torn down (JAX stops every
  process of a job when one dies); a rerun on 1 process adopts the workdir's chunks of 2, trains only what is
  missing, and equals the uninterrupted run."""
  w = tmp_path / "w"
  procs = _launch(w, 2)
  chunk = w / "models" / "models_00002-00004.msgpack"
  deadline = time.time() + 240
  while not chunk.exists() and time.time() < deadline and procs[1].poll() is None:
    time.sleep(0.1)
  assert chunk.exists(), "process 1 never checkpointed"
  procs[1].send_signal(signal.SIGKILL)
  procs[0].send_signal(signal.SIGKILL)
  _finish(procs)
  assert not (w / "results.json").exists()
  r = program("mia", *GAME, f"--workdir={w}")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "epoch 1 models [2, 3]" not in r.stdout   # that epoch was checkpointed before the kill
  _assert_same(w, one_process)


@pytest.mark.slow
def test_a_launch_that_cannot_run_stops_every_process_with_one_line(tmp_path):
  # processes with different configs: refused on both, naming the field, before any training
  codes, out = _finish(_launch(tmp_path / "a", 2, [(), ("--num_shadows=5",)]), timeout=120)
  assert codes == [2, 2], out
  for text in out:
    assert "must run one mia config" in text and "game.num_shadows" in text, text[-1500:]
  assert not os.path.exists(tmp_path / "a" / "models")
  # a coordinator that never answers: a line within the stated timeout, not a hang
  t0 = time.time()
  r = program("mia", *GAME, f"--workdir={tmp_path / 'b'}", f"--coordinator_address=127.0.0.1:{free_port()}",
              "--num_processes=2", "--process_id=1", "--coordinator_timeout=3", timeout=120)
  assert r.returncode == 2 and "no coordinator answered at 127.0.0.1:" in r.stderr and "within 3 s" in r.stderr
  assert time.time() - t0 < 60
  # a timeout that is not a number of seconds
  r = program("mia", *GAME, f"--workdir={tmp_path / 'd'}", "--coordinator_timeout=nan", timeout=120)
  assert r.returncode == 2 and "--coordinator_timeout must be a number of seconds > 0, got nan" in r.stderr, r.stderr
  # half a launch's flags
  r = program("mia", *GAME, f"--workdir={tmp_path / 'c'}", "--num_processes=2", timeout=120)
  assert r.returncode == 2 and "missing --coordinator_address, --process_id" in r.stderr, r.stderr


@pytest.mark.slow
def test_train_program_splits_its_k_models_over_two_processes(tmp_path):
  """train.py --num_models=3 as 2 processes (chunks of 2 and 1) writes the same 3 model artifacts and accuracies as
  one process; process 1 writes no results."""
  import jax
  from mlpriv_jax import models
  tiny = ("--preset=smoke", "--arch=cnn_tiny", "--num_train=128", "--num_epochs=1", "--batch_size=32",
          "--num_models=3")
  port, env = free_port(), dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen([sys.executable, os.path.join(REPO, "experiments", "train.py"), *tiny,
                             f"--workdir={tmp_path / 'two'}", f"--coordinator_address=127.0.0.1:{port}",
                             "--num_processes=2", f"--process_id={i}"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env) for i in range(2)]
  codes, out = _finish(procs)
  assert codes == [0, 0], out
  assert "process 1 of 2: trained models 2\n" in out[1] and "results in" not in out[1]
  r = program("train", *tiny, f"--workdir={tmp_path / 'one'}")
  assert r.returncode == 0, r.stderr[-2000:]
  two, one = (json.load(open(tmp_path / w / "results.json")) for w in ("two", "one"))
  assert two["test_accuracy"] == one["test_accuracy"]
  for k in range(3):
    a, b = (models.load_model(str(tmp_path / w / f"model_{k}"))[1] for w in ("two", "one"))
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.slow
def test_arena_program_splits_its_games_models_over_two_processes(tmp_path):
  """arena.py as 2 processes: every game's K + 1 models are split (chunks of 2), process 0 alone then computes the
  cells and the report, which equal one process's (the membership scores bit for bit); process 1 writes no cell.
  The served row and --collate_only are refused under a launch."""
  from mlpriv_jax.arena import cells as C
  arena = ("--preset=smoke", "--num_examples=128", "--num_shadows=3", "--membership_attacks=loss,lira_offline",
           "--extraction_attacks=", "--defences=", "--dp_epsilons=", "--ownership=", "--monitor=false")
  port, env = free_port(), dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  launch = lambda i, *extra: subprocess.Popen(
      [sys.executable, os.path.join(REPO, "experiments", "arena.py"), *arena, *extra, f"--workdir={tmp_path / 'two'}",
       f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
  codes, out = _finish([launch(0), launch(1)])
  assert codes == [0, 0], out
  assert "process 1 of 2: trained models 2-3" in out[1] and "report in" in out[0] and "report in" not in out[1]
  assert sorted(os.listdir(tmp_path / "two" / "victim" / "models")) == ["models_00000-00002.msgpack",
                                                                       "models_00002-00004.msgpack"]
  r = program("arena", *arena, f"--workdir={tmp_path / 'one'}")
  assert r.returncode == 0, r.stderr[-2000:]
  two, one = ({(c["family"], c["attack"], c["setting"]): c for c in C.load_cells(str(tmp_path / w))}
              for w in ("two", "one"))
  assert set(two) == set(one) and len(one) == 3   # utility, loss, lira_offline behind `none`
  timed = lambda rows: [r for r in rows if not r["metric"].startswith("seconds")]   # the defence's latency aside
  for k in one:
    assert (timed(two[k]["rows"]), two[k]["curves"], two[k]["info"]) == (
        timed(one[k]["rows"]), one[k]["curves"], one[k]["info"]), k
  codes, out = _finish([launch(0, "--collate_only"), launch(1, "--collate_only")], timeout=120)
  assert codes == [2, 2] and all("run them without --num_processes" in text for text in out), out


SLURM_STEP = dict(SLURM_JOB_ID="7", SLURM_STEP_NODELIST="node[1-2]", SLURM_PROCID="1", SLURM_LOCALID="0",
                  SLURM_NTASKS="2")


@pytest.mark.parametrize("env, want", [
    (SLURM_STEP, "SLURM"),
    (dict(SLURM_STEP, SLURM_NTASKS="1"), None),                                   # one task: nothing to join
    ({k: v for k, v in SLURM_STEP.items() if k != "SLURM_STEP_NODELIST"}, None),  # a shell in an allocation
    (dict(OMPI_MCA_orte_hnp_uri="1.2:tcp://10.0.0.1:5000", OMPI_COMM_WORLD_RANK="0", OMPI_COMM_WORLD_SIZE="4"),
     "Open MPI"),
    ({}, None)])
def test_a_launcher_is_detected_only_for_a_step_of_several_tasks(monkeypatch, env, want):
  from mlpriv_jax import hosts
  for k in list(os.environ):
    if k.startswith(("SLURM_", "OMPI_")):
      monkeypatch.delenv(k)
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  assert hosts.launcher() == want
