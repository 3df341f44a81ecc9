"""The programs: one real run of each as a subprocess (slow), their validation in process (fast)."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from conftest import program as _program
from mlpriv_jax import config, models, train
from mlpriv_jax.errors import UserError
from mlpriv_jax.games.extraction import ExtractionAudit
from mlpriv_jax.lab import defend, extraction, tables, training

TINY = ["--arch=cnn_tiny", "--num_train=256", "--num_epochs=1", "--batch_size=32"]
TINY_CFG = train.TrainConfig(num_epochs=1, batch_size=32, learning_rate=0.05, schedule="cosine", weight_decay=5e-4)
quiet = lambda *_: None


def _train(workdir, **kw):
  """train.py's body on a tiny run; kw: {dotted path: value} changes of its TrainRun."""
  cfg = training.TrainRun(dataset="shapes10", arch="cnn_tiny", train=TINY_CFG, num_train=256)
  return training.run(config.replace(cfg, kw), workdir=str(workdir), run_config=dict(preset="smoke"), log=quiet)


@pytest.mark.slow
def test_train_program_writes_results_and_resumes(tmp_path):
  wd = str(tmp_path / "run")
  p = _program("train", "--preset=smoke", f"--workdir={wd}", *TINY)
  assert p.returncode == 0, p.stderr[-2000:]
  res = json.load(open(os.path.join(wd, "results.json")))
  for k in ("test_accuracy", "num_params", "train_images_per_sec", "compile_seconds", "wall_seconds"):
    assert k in res, k
  assert res["num_params"] == 6418 and 0 <= res["test_accuracy"] <= 1
  assert len(open(os.path.join(wd, "metrics.jsonl")).readlines()) == 1
  assert os.path.exists(os.path.join(wd, "model", "model.msgpack"))
  # A rerun finds the finished checkpoint and trains nothing more.
  p = _program("train", "--preset=smoke", f"--workdir={wd}", *TINY)
  assert p.returncode == 0 and "epoch" not in p.stdout.replace("epochs", "")
  assert len(open(os.path.join(wd, "metrics.jsonl")).readlines()) == 1


def test_train_k_models_saves_keep_and_an_artifact_per_model(tmp_path):
  res = _train(tmp_path / "k", num_models=2, keep_fraction=0.5)
  assert res["test_accuracy"] == [res["test_accuracy_model_0"], res["test_accuracy_model_1"]]   # from its rows
  assert len(res["test_accuracy"]) == 2
  keep = np.load(tmp_path / "k" / "keep.npy")
  assert keep.shape == (2, 256) and (keep.sum(0) == 1).all()
  assert sorted(d for d in os.listdir(tmp_path / "k") if d.startswith("model_")) == ["model_0", "model_1"]


@pytest.mark.parametrize("change,match", [
    (dict(arch="resnet33"), "unknown architecture 'resnet33'"),
    (dict(dataset="nope"), "unknown dataset 'nope'"),
    (dict(num_models=0), "num_models must be an integer >= 1, got 0"),
    (dict(keep_fraction=1.5), "keep_fraction must be a finite number > 0 and <= 1"),
    (dict(train=dataclasses.replace(TINY_CFG, batch_size=5000)), "batch_size 5000 is larger than the data"),
    (dict(train=dataclasses.replace(TINY_CFG, num_epochs=-1)), "num_epochs must be >= 1"),
    (dict(num_train=999999), "exceeds the 10000 training images"),
    ({"train.num_epoch": 3}, "unknown config field 'train.num_epoch'"),
])
def test_train_bad_input_is_one_line(tmp_path, change, match):
  with pytest.raises(UserError, match=match) as e:
    _train(tmp_path / "bad", **change)
  assert "\n" not in str(e.value)


def test_workdir_of_another_run_is_refused(tmp_path):
  wd = tmp_path / "run"
  _train(wd)
  before = open(wd / "results.json").read()
  with pytest.raises(UserError, match="use another --workdir"):
    _train(wd, arch="cnn_small")
  assert open(wd / "results.json").read() == before


@pytest.fixture(scope="module")
def tiny_victim(tmp_path_factory):
  """One tiny trained victim for the defend and extract programs."""
  wd = tmp_path_factory.mktemp("victim") / "run"
  _train(wd)
  return str(wd)


@pytest.mark.slow
def test_defend_program(tmp_path, tiny_victim):
  out = str(tmp_path / "defend")
  p = _program("defend", f"--victim_workdir={tiny_victim}", f"--workdir={out}",
               "--defences=none,top1,mad_argmax,memguard", "--epsilons=0.5", "--num_test=100", "--num_guard=100",
               "--guard_steps=50", "--batch_size=50")
  assert p.returncode == 0, p.stderr[-2000:]
  res = json.load(open(os.path.join(out, "results.json")))
  d = res["settings"]   # the rows' summary: defence, then strength ("" for a defence that takes none)
  assert set(d) == {"none", "top1", "mad_argmax", "memguard"}
  assert d["none"][""]["label_flip_rate"] == 0 and d["none"][""]["l1"] < 1e-5  # batch-size round-off only
  assert d["mad_argmax"]["0.5"]["label_flip_rate"] == 0 and abs(d["mad_argmax"]["0.5"]["l1"] - 0.5) < 0.05
  assert d["memguard"]["0.5"]["label_flip_rate"] == 0 and d["memguard"]["0.5"]["l1"] <= 0.5 * 1.5
  rows = [json.loads(line) for line in open(os.path.join(out, "results.jsonl"))]
  assert {(r["defence"], r["strength"]) for r in rows} == {("none", None), ("top1", None), ("mad_argmax", 0.5),
                                                           ("memguard", 0.5)}


@pytest.mark.parametrize("change,match", [
    (dict(defences=("shield",)), "unknown defence 'shield'"), (dict(strengths=(-1.0,)), "a strength must be a finite"),
    (dict(strengths=(0.0,), defences=("revsig",)), "every strength of revsig is out of range"),
    (dict(victim="nowhere"), "no model artifact")])
def test_defend_bad_input(tmp_path, tiny_victim, change, match):
  victim = str(tmp_path / change.pop("victim")) if "victim" in change else tiny_victim
  cfg = defend.DefendRun(defences=("none",), strengths=(0.5,), num_test=100)
  with pytest.raises(UserError, match=match):
    defend.run(config.replace(cfg, change), victim=victim, workdir=str(tmp_path / "defend"), log=quiet)


@pytest.mark.slow
def test_extract_program(tmp_path, tiny_victim):
  out = str(tmp_path / "extract")
  p = _program("extract", f"--victim_workdir={tiny_victim}", "--surrogate_arch=cnn_tiny", "--num_epochs=1",
               "--batch_size=32", "--num_test=200", f"--workdir={out}", "--budget=300", "--checkpoints=100,300")
  assert p.returncode == 0, p.stderr[-2000:]
  res = json.load(open(os.path.join(out, "results.json")))
  for k in ("victim_accuracy", "queries_used", "curve", "survey_cells"):
    assert k in res, k
  assert res["queries_used"] == 300 and [c["queries"] for c in res["curve"]] == [100, 300]
  last = res["curve"][-1]
  assert abs(last["accuracy_ratio"] - last["accuracy"] / res["victim_accuracy"]) < 1e-9
  assert os.path.getsize(os.path.join(out, "curve.png")) > 1000


@pytest.mark.parametrize("checkpoints,match", [("-1", "each of --checkpoints must be an integer in [1, 500], got -1"),
                                               ("100,900", "got 900"), ("100,2.5", "got 2.5")])
def test_extract_checkpoints_outside_the_budget_are_refused_not_dropped(tmp_path, checkpoints, match):
  p = _program("extract", f"--victim={tmp_path / 'nowhere'}", f"--workdir={tmp_path / 'w'}", "--budget=500",
               f"--checkpoints={checkpoints}")
  assert p.returncode == 2 and p.stderr.strip().splitlines() == [f"error: {p.stderr.strip()[7:]}"], p.stderr
  assert match in p.stderr and not os.path.exists(tmp_path / "w")


def test_extract_bad_input(tmp_path, tiny_victim):
  small = tmp_path / "data"
  small.mkdir()
  x = np.zeros((64, 16, 16, 3), np.uint8)
  np.savez(small / "tiny16.npz", x_train=x, y_train=np.zeros(64, np.int64), x_test=x, y_test=np.zeros(64, np.int64))
  cfg = extraction.ExtractRun(ExtractionAudit(("knockoff_random",), budgets=(300,), surrogates=("cnn_tiny",),
                                              query_set="patterns20", surrogate=TINY_CFG))
  for change, match, kw in [({"extraction.budgets": (0,)}, "budget must be an integer >= 1, got 0", {}),
                            ({"extraction.budgets": (30000,)}, "budget 30000 is larger than the query pool patterns20 (20000 images)",
                             {}),
                            ({}, "no model artifact", dict(victim=str(tmp_path / "nothing"))),
                            ({"extraction.query_set": "tiny16"}, "has images of shape (16, 16, 3), the victim takes",
                             dict(data_dir=str(small))),
                            ({"extraction.surrogates": ("resnet7",)}, "unknown architecture 'resnet7'", {}),
                            ({"defence": "shield"}, "unknown defence", {}),
                            ({"extraction.options.cloudleak.steps": 0}, "cloudleak steps must be an integer >= 1", {})]:
    with pytest.raises(UserError) as e:
      extraction.run(config.replace(cfg, change), **dict(dict(victim=tiny_victim, workdir=str(tmp_path / "bad"),
                                                              log=quiet), **kw))
    assert match in str(e.value), (change, str(e.value))
  assert not os.path.exists(tmp_path / "bad")


def test_extract_refuses_a_wrong_extractor_in_one_line(tmp_path, tiny_victim):
  model = models.get_model("cnn_tiny", 20)
  v = model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
  good = models.save_model(str(tmp_path / "good"), model, v, meta=dict(data=dict(name="patterns20", num_classes=20)))
  small = models.save_model(str(tmp_path / "small"), model, v, input_shape=(16, 16, 3))
  lying = models.save_model(str(tmp_path / "lying"), model, v, meta=dict(data=dict(name="figures20", num_classes=7)))
  cfg = extraction.ExtractRun(ExtractionAudit(("knockoff_random",), budgets=(100,), surrogates=("cnn_tiny",),
                                              query_set="patterns20", surrogate=TINY_CFG))
  for init, surrogate, match in [
      (small, "cnn_tiny", "takes images of shape (16, 16, 3), the victim (32, 32, 3)"),
      (good, "cnn_small", "is a cnn_tiny; the surrogate asked for is cnn_small"),
      (lying, "cnn_tiny", "has 20 outputs but records training data of 7 classes"),
      (tiny_victim, "cnn_tiny", "was trained on shapes10, the victim's own data"),
      (str(tmp_path / "nothing"), "cnn_tiny", "no model artifact"),
      (None, "cnn_tiny", "surrogate cnn_tiny+pretrained starts from a pretrained extractor: give its artifact")]:
    change = {"extraction.surrogate_init": init, "extraction.surrogates": (surrogate + "+pretrained",)}
    with pytest.raises(UserError) as e:
      extraction.run(config.replace(cfg, change), victim=tiny_victim, workdir=str(tmp_path / "bad"), log=quiet)
    assert match in str(e.value) and "\n" not in str(e.value), (init, str(e.value))
  assert not os.path.exists(tmp_path / "bad")


@pytest.mark.slow
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
  assert "| wres16 (wrn10_1) |" in md and "85.63 (0.90x)" in md   # the survey's own cell beside ours
  assert os.path.exists(os.path.join(out, "victim_wres16", "model.msgpack"))
  bad = _program("survey_tables", f"--workdir={out}", "--tables=table1", "--surrogates=wres16")
  assert bad.returncode == 2 and "use another --workdir" in bad.stderr   # other scale than the saved tables


@pytest.mark.slow
def test_survey_tables_row_does_not_depend_on_the_other_rows_asked_for(tmp_path):
  """A row's surrogate key is its place among all rows: --surrogates=res32 gives the row of the full table."""
  cfg = tables.TablesRun(victim_dataset="shapes10", query_set="patterns20", num_train=100, budget=100,
                         archs=tuple((n, "cnn_tiny") for n in tables.SURVEY_NAMES), victim=TINY_CFG,
                         surrogate=TINY_CFG, num_test=100, tables=("table1",))
  run = lambda where, rows: tables.run(dataclasses.replace(cfg, rows=rows), workdir=str(tmp_path / where), log=quiet)
  both = run("both", ("wres16", "res32"))["tables"]["table1"]["rows"]
  one = run("one", ("res32",))["tables"]["table1"]["rows"]
  pick = lambda m: {k: v for k, v in m.items() if k != "seconds"}
  assert pick(one["res32"]) == pick(both["res32"]) and pick(both["wres16"]) != pick(both["res32"])


def test_survey_tables_bad_input(tmp_path):
  cfg = tables.TablesRun(victim_dataset="shapes10", query_set="patterns20", num_train=100, budget=100,
                         archs=tuple((n, "cnn_tiny") for n in tables.SURVEY_NAMES), victim=TINY_CFG, surrogate=TINY_CFG)
  run = lambda **change: tables.run(dataclasses.replace(cfg, **change), workdir=str(tmp_path / "t"), log=quiet)
  with pytest.raises(UserError, match="unknown rows \\['res50'\\]"):
    run(rows=("res50",))
  with pytest.raises(UserError, match="budget must be an integer >= 1, got 0"):
    run(budget=0)
  with pytest.raises(UserError, match="--victim_epochs must be an integer >= 1, got 0"):
    tables.with_epochs(TINY_CFG, 0, "victim_epochs")
  assert not os.path.exists(tmp_path / "t")


def test_no_program_takes_another_programs_workdir(tmp_path, tiny_victim):
  """train.py's workdir (the folder README passes as --victim) is refused as the workdir of every other program,
  by name, before anything in it changes."""
  from mlpriv_jax import presets
  from mlpriv_jax.arena import run as arena
  from mlpriv_jax.lab import membership
  tree = lambda: {os.path.join(r, f): open(os.path.join(r, f), "rb").read() for r, _, fs in os.walk(tiny_victim)
                  for f in fs}
  before = tree()
  runs = {
      "extract": lambda: extraction.run(presets.get("extract", "smoke"), victim=tiny_victim, workdir=tiny_victim,
                                        log=quiet),
      "defend": lambda: defend.run(defend.DefendRun(defences=("none",), strengths=(), num_test=100),
                                   victim=tiny_victim, workdir=tiny_victim, log=quiet),
      "mia": lambda: membership.run(presets.get("mia", "smoke"), workdir=tiny_victim, log=quiet),
      "arena": lambda: arena.run(presets.get("arena", "smoke"), workdir=tiny_victim, log=quiet),
      "survey_tables": lambda: tables.run(presets.get("survey_tables", "smoke"), workdir=tiny_victim, log=quiet)}
  for name, run in runs.items():
    with pytest.raises(UserError, match=f"is train.py's workdir, holding a model artifact \\(pass it as --victim\\), "
                                        f"not {name}.py's; use another --workdir \\(nothing was overwritten\\)"):
      run()
  assert tree() == before
