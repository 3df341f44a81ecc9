"""The model artifact, and how the programs treat bad victims, names and strengths (in-process)."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from mlpriv_jax import config, data, models, train
from mlpriv_jax.errors import UserError
from mlpriv_jax.games import membership as G
from mlpriv_jax.games import victims
from mlpriv_jax.games.extraction import ExtractionAudit
from mlpriv_jax.lab import defend, extraction, membership

CFG = train.TrainConfig(num_epochs=1, batch_size=32, augment=False)


def _tiny(num_classes=10, **kw):
  m = models.get_model("cnn_tiny", num_classes, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), **kw)
  return m, m.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def _meta():
  ds = data.load_dataset("shapes10")
  return dict(data=ds.describe(seed=0, num_train_used=256), recipe={}, test_accuracy=0.5)


def test_artifact_round_trip_rebuilds_the_model_without_an_optimiser(tmp_path):
  model, v = _tiny()
  v = {**v, "params": jax.tree.map(lambda p: p + 0.01, v["params"])}   # not the init: the saved weights count
  models.save_model(str(tmp_path / "a"), model, v, meta=_meta())
  got, gv, meta = models.load_model(str(tmp_path / "a"))
  assert got.name == "cnn_tiny" and got.spec == model.spec and meta["input_shape"] == (32, 32, 3)
  assert set(gv) == {"params", "batch_stats"} and meta["data"]["name"] == "shapes10"
  chex.assert_trees_all_equal(gv, jax.tree.map(np.asarray, v))
  x = jax.random.uniform(jax.random.key(1), (4, 32, 32, 3))
  chex.assert_trees_all_close(got.apply(gv, x, train=False)[0], model.apply(v, x, train=False)[0])
  assert os.path.exists(tmp_path / "a" / "model.json")   # readable copy of spec and meta


def test_find_artifact_in_workdirs(tmp_path):
  model, v = _tiny()
  models.save_model(str(tmp_path / "w" / "model"), model, v, meta=_meta())
  assert models.find_artifact(str(tmp_path / "w")) == str(tmp_path / "w" / "model")
  models.save_model(str(tmp_path / "w" / "victim_vgg16"), model, v, meta=_meta())
  with pytest.raises(models.ArtifactError, match="holds 2 model artifacts \\(model, victim_vgg16\\); pass one"):
    models.load_model(str(tmp_path / "w"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(models.ArtifactError, match="no model artifact in .*empty: expected model.msgpack"):
    models.load_model(str(tmp_path / "empty"))
  with pytest.raises(models.ArtifactError, match="no such directory"):
    models.load_model(str(tmp_path / "nothing"))


def test_broken_foreign_and_mismatched_artifacts_are_one_line_errors(tmp_path):
  model, v = _tiny()
  d = tmp_path / "a"
  models.save_model(str(d), model, v, meta=_meta())
  good = (d / "model.msgpack").read_bytes()
  (d / "model.msgpack").write_bytes(good[:100])
  with pytest.raises(models.ArtifactError, match="unreadable model artifact"):
    models.load_model(str(d))
  (d / "model.msgpack").write_bytes(serialization.msgpack_serialize({"meta": "{}", "tree": {}}))
  with pytest.raises(models.ArtifactError, match="not an mlpriv_jax model artifact"):
    models.load_model(str(d))
  payload = serialization.msgpack_restore(good)
  payload["spec"] = payload["spec"].replace('"num_classes": 10', '"num_classes": 7')
  (d / "model.msgpack").write_bytes(serialization.msgpack_serialize(payload))
  with pytest.raises(models.ArtifactError, match="holds an array of shape .*10.* where cnn_tiny has .*7"):
    models.load_model(str(d))
  bad = {**v, "params": jax.tree.map(lambda p: p * np.nan, v["params"])}
  with pytest.raises(UserError, match="NaN"):
    models.save_model(str(tmp_path / "b"), model, bad)


@pytest.mark.parametrize("field,edit,match", [
    ("spec", lambda s: s[:-3], "its spec or meta is damaged \\(JSONDecodeError"),
    ("spec", lambda s: "[1, 2]", "spec and meta must be JSON objects"),
    ("spec", lambda s: s.replace('"cnn_tiny"', '"cnn_huge"'), "unknown architecture 'cnn_huge'"),
    ("spec", lambda s: s.replace('"num_classes": 10', '"num_classes": "ten"'), "num_classes must be a positive"),
    ("spec", lambda s: s.replace('"num_classes": 10', '"num_classes": 0'), "num_classes must be a positive"),
    ("spec", lambda s: s.replace('"input_shape": [32, 32, 3]', '"input_shape": [16, 16]'), "input_shape must be"),
    ("spec", lambda s: s.replace('"input_shape": [32, 32, 3]', '"input_shape": "big"'), "input_shape must be"),
    ("spec", lambda s: json.dumps(dict(json.loads(s), mean=[0.5, "x"])), "its spec or meta is damaged"),
    ("spec", lambda s: json.dumps(dict(json.loads(s), std=[0.0, 1.0, 1.0])), "std must be 3 finite numbers > 0"),
    ("spec", lambda s: json.dumps({k: v for k, v in json.loads(s).items() if k != "arch"}), "spec lacks \\['arch'\\]"),
    ("meta", lambda s: "null", "spec and meta must be JSON objects"),
    ("meta", lambda s: "{", "its spec or meta is damaged"),
])
def test_a_hand_edited_spec_or_meta_is_one_line_naming_the_file(tmp_path, field, edit, match):
  """model.msgpack's spec and meta are JSON a person can edit: whatever they hold, loading is one ArtifactError
  naming the file (never a traceback from json, numpy or flax)."""
  model, v = _tiny()
  d = tmp_path / "a"
  models.save_model(str(d), model, v, meta=_meta())
  payload = serialization.msgpack_restore((d / "model.msgpack").read_bytes())
  payload[field] = edit(payload[field])
  assert payload[field] != serialization.msgpack_restore((d / "model.msgpack").read_bytes())[field]
  (d / "model.msgpack").write_bytes(serialization.msgpack_serialize(payload))
  with pytest.raises(models.ArtifactError, match=match) as e:
    models.load_model(str(d))
  assert str(e.value).startswith(str(d / "model.msgpack") + ": ") and "\n" not in str(e.value)


@pytest.mark.parametrize("data,match", [
    ("shapes10", "does not record its training data"),
    (dict(name="shapes10", seed="0"), "data.seed must be an integer"),
    (dict(name="shapes10", member_indices=[0, 10 ** 9]), "member_indices / num_train_used do not index"),
    (dict(name="shapes10", num_train_used=-5), "member_indices / num_train_used do not index"),
])
def test_a_victims_meta_that_does_not_index_its_data_is_one_line(tmp_path, data, match):
  model, v = _tiny()
  models.save_model(str(tmp_path / "a"), model, v, meta=dict(_meta(), data=data))
  with pytest.raises(UserError, match=match):
    victims.load(str(tmp_path / "a"))


def test_a_killed_save_leaves_the_previous_artifact(tmp_path, monkeypatch):
  model, v = _tiny()
  d = str(tmp_path / "a")
  models.save_model(d, model, v, meta=_meta())
  before = open(os.path.join(d, "model.msgpack"), "rb").read()
  real = os.replace

  def killed(src, dst):
    if dst.endswith("model.msgpack"):
      raise KeyboardInterrupt
    return real(src, dst)
  monkeypatch.setattr(os, "replace", killed)
  with pytest.raises(KeyboardInterrupt):
    models.save_model(d, model, jax.tree.map(lambda p: p + 1, v), meta=_meta())
  monkeypatch.setattr(os, "replace", real)
  assert open(os.path.join(d, "model.msgpack"), "rb").read() == before
  assert sorted(os.listdir(d)) == ["model.json", "model.msgpack"]   # no temporary file left


@pytest.fixture(scope="module")
def victim_dir(tmp_path_factory):
  model, v = _tiny()
  d = str(tmp_path_factory.mktemp("victim") / "model")
  models.save_model(d, model, v, meta=_meta())
  return d


def _extract(victim, workdir, **change):
  """extract.py's body; change: {dotted path: value} of its ExtractRun."""
  cfg = extraction.ExtractRun(ExtractionAudit(("knockoff_random",), budgets=(100,), surrogates=("cnn_tiny",),
                                              query_set="patterns20", surrogate=CFG))
  return extraction.run(config.replace(cfg, change), victim=victim, workdir=str(workdir), log=lambda *_: None)


@pytest.mark.parametrize("change,match", [
    ({"extraction.attacks": ("stealer",)}, "unknown extraction attack 'stealer'; known: knockoff_random"),
    (dict(defence="shield"), "unknown defence 'shield'; known: none, label"),
    (dict(defence="misinfo", strength=2.0), "misinfo: strength 2 .* is out of range; it must be \\(0, 1\\]"),
    (dict(defence="memguard", strength=1.0), "memguard defends against membership, not extraction; defences "
                                             "against extraction: none"),
    (dict(defence="mad"), "--defence=mad needs a strength"),
    ({"extraction.budgets": (-1,)}, "budget must be an integer >= 1, got -1"),
    ({"extraction.budgets": (30000,)}, "budget 30000 is larger than the query pool patterns20 \\(20000 images\\)"),
    ({"extraction.surrogates": ("resnet7",)}, "unknown architecture 'resnet7'"),
    ({"extraction.surrogate.num_epochs": 0}, "num_epochs must be >= 1"),
    ({"extraction.surrogate.learning_rat": 0.1}, "unknown config field 'extraction.surrogate.learning_rat'"),
])
def test_extraction_bad_input_names_the_problem_and_writes_nothing(victim_dir, tmp_path, change, match):
  with pytest.raises(UserError, match=match) as e:
    _extract(victim_dir, tmp_path / "w", **change)
  assert "\n" not in str(e.value) and not os.path.exists(tmp_path / "w")


def test_victims_that_do_not_fit_their_data(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserError, match="no model artifact in"):
    _extract(str(tmp_path / "empty"), tmp_path / "w")
  model, v = _tiny(num_classes=7)                        # claims to be trained on shapes10 (10 classes)
  models.save_model(str(tmp_path / "seven"), model, v, meta=_meta())
  with pytest.raises(UserError, match="model has 7 classes .* but dataset shapes10 has 10 classes"):
    _extract(str(tmp_path / "seven"), tmp_path / "w")
  with pytest.raises(UserError, match="unknown defence 'shield'"):
    defend.run(defend.DefendRun(("shield",), ()), victim=str(tmp_path / "seven"), workdir=str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w")


def test_membership_refuses_extraction_defences_and_few_shadows(tmp_path):
  game = G.MembershipGame("shapes10", "cnn_tiny", 100, 4, CFG)
  cfg = membership.MiaRun(game, G.MembershipAudit(("loss",)))
  run = lambda **change: membership.run(config.replace(cfg, change), workdir=str(tmp_path / "w"))
  with pytest.raises(UserError, match="mad defends against extraction, not membership"):
    run(defence="mad", strength=0.5)
  with pytest.raises(UserError, match="num_shadows 1: lira_online needs at least 2 shadow models"):
    run(**{"game.num_shadows": 1, "membership.attacks": ("lira_online",)})
  with pytest.raises(UserError, match="unknown attack lira; known: shokri"):
    run(**{"membership.attacks": ("lira",)})
  with pytest.raises(UserError, match="unknown config field 'membership.options.label_noise.num_sample'"):
    run(**{"membership.options.label_noise.num_sample": 3})
  assert not os.path.exists(tmp_path / "w")
