"""A workdir belongs to one program and one config, and to one process at a time."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
from mlpriv_jax import workdir as wd
from mlpriv_jax.errors import UserError

GAME = dict(preset="smoke", game=dict(arch="cnn_tiny", num_shadows=4, train=dict(num_epochs=2)))


def test_a_rerun_of_the_same_config_resumes_and_records_its_whole_config(tmp_path):
  w = str(tmp_path / "w")
  wd.claim(w, "mia", dict(GAME, run=dict(attacks=["loss"])), identity=("game",))
  wd.release(w)
  # other attacks against the same trained game: the same workdir, its config.json the latest run's
  wd.claim(w, "mia", dict(GAME, run=dict(attacks=["lira"])), identity=("game",))
  wd.release(w)
  rec = json.load(open(os.path.join(w, "config.json")))
  assert rec["program"] == "mia" and rec["run"] == dict(attacks=["lira"]) and rec["game"] == GAME["game"]


def test_another_programs_workdir_is_refused_naming_whose_it_is(tmp_path):
  w = str(tmp_path / "w")
  wd.claim(w, "train", dict(arch="cnn_tiny", seed=0))
  wd.release(w)
  os.makedirs(os.path.join(w, "model"))
  open(os.path.join(w, "model", "model.msgpack"), "wb").close()
  before = open(os.path.join(w, "config.json")).read()
  with pytest.raises(UserError, match=r"^.*/w is train.py's workdir, holding a model artifact \(pass it as --victim\), "
                                      r"not extract.py's; use another --workdir \(nothing was overwritten\)$"):
    wd.claim(w, "extract", dict(run=dict(budget=100)))
  assert open(os.path.join(w, "config.json")).read() == before
  assert sorted(os.listdir(w)) == [".lock", "config.json", "model"]


def test_the_same_program_with_another_config_is_refused_naming_what_differs(tmp_path):
  w = str(tmp_path / "w")
  wd.claim(w, "mia", GAME, identity=("game",))
  wd.release(w)
  other = dict(GAME, game=dict(GAME["game"], num_shadows=8, train=dict(num_epochs=3)))
  with pytest.raises(UserError, match=r"holds another mia.py run \(game.num_shadows=4 there, 8 here; "
                                      r"game.train.num_epochs=2 there, 3 here\); use another --workdir"):
    wd.claim(w, "mia", other, identity=("game",))
  # a field missing on one side is a difference too (a config of an older version is not this one)
  with pytest.raises(UserError, match=r"game.dp=None there, 'x' here"):
    wd.claim(w, "mia", dict(GAME, game=dict(GAME["game"], dp="x")), identity=("game",))


def test_artifact_folders_files_and_damaged_records_are_refused(tmp_path):
  art = tmp_path / "art"
  art.mkdir()
  (art / "model.msgpack").write_bytes(b"x")
  with pytest.raises(UserError, match="holds a model artifact of no program's run"):
    wd.claim(str(art), "train", {})
  assert sorted(os.listdir(art)) == ["model.msgpack"]
  (tmp_path / "file").write_text("x")
  with pytest.raises(UserError, match="--workdir .*/file is a file, not a folder"):
    wd.claim(str(tmp_path / "file"), "train", {})
  for i, text in enumerate(("{", "[1, 2]", "\xff")):
    d = tmp_path / f"damaged{i}"
    d.mkdir()
    (d / "config.json").write_text(text, encoding="latin-1")
    with pytest.raises(UserError, match=r"config.json is damaged"):
      wd.claim(str(d), "train", {})
    assert (d / "config.json").read_text(encoding="latin-1") == text
  d = tmp_path / "foreign"
  d.mkdir()
  (d / "config.json").write_text('{"lr": 0.1}')
  with pytest.raises(UserError, match="foreign is a workdir of no mlpriv_jax program"):
    wd.claim(str(d), "train", {})


_HOLDER = """
import sys, time
from mlpriv_jax import workdir as wd
wd.claim(sys.argv[1], "arena", {"arena": 1}, identity=("arena",))
print("claimed", flush=True)
time.sleep(60)
"""


def test_one_process_at_a_time_and_the_lock_dies_with_its_process(tmp_path):
  w = str(tmp_path / "w")
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  p = subprocess.Popen([sys.executable, "-c", _HOLDER, w], stdout=subprocess.PIPE, text=True, env=env)
  try:
    assert p.stdout.readline().strip() == "claimed"
    with pytest.raises(UserError, match=f"is in use by process {p.pid}; wait for it to finish, or use another"):
      wd.claim(w, "arena", {"arena": 1}, identity=("arena",))
  finally:
    p.send_signal(signal.SIGKILL)   # kill -9: no cleanup runs, the OS drops the lock
    p.wait()
  wd.claim(w, "arena", {"arena": 1}, identity=("arena",))
  wd.release(w)


def test_a_program_releases_its_lock_when_it_ends_or_fails(tmp_path):
  w = str(tmp_path / "w")

  @wd.releases
  def run(*, workdir, fail):
    wd.claim(workdir, "defend", {})
    if fail:
      raise UserError("bad")
    return 1

  with pytest.raises(UserError):
    run(workdir=w, fail=True)
  assert run(workdir=w, fail=False) == 1 and not wd._HELD
