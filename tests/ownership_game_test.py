"""The ownership game on embedded data: the verdict calibrated on the negatives (by hand), the owner's program against
a copy of its victim, and DAWN on a served victim naming the API key that stole (Dataset Inference and IPGuard end to
end are tests/ownership_test.py's)."""

import dataclasses
import math

import jax
import pytest

from mlpriv_jax import train
from mlpriv_jax.attacks import extraction as E
from mlpriv_jax.errors import UserError
from mlpriv_jax.games import ownership
from mlpriv_jax.oracle import Victim


def test_judge_reads_each_verifier_against_the_negatives():
  """By hand: DI's own p-values; IPGuard's binomial tail at the negatives' mean matching rate (here 0.5); DAWN's at
  the negatives' rate on the positive's own triggers."""
  pos = [dict(dataset_inference=dict(p_value=1e-4, statistic=0.9, queries=10),
              ipguard=dict(matched=10, points=10, queries=10),
              dawn=dict(agreed=9, triggers=10, null_agreed=[1, 3], queries=10))]
  neg = [dict(dataset_inference=dict(p_value=0.02, queries=10), ipguard=dict(matched=4, points=10, queries=10)),
         dict(dataset_inference=dict(p_value=0.3, queries=10), ipguard=dict(matched=6, points=10, queries=10))]
  v = ownership.judge(pos, neg, ownership.OwnershipAudit(fprs=(0.05,)))
  assert v["dataset_inference"]["p_values"] == [1e-4] and v["dataset_inference"]["tpr_at_0.05"] == 1.0
  assert v["ipguard"]["p_values"] == [pytest.approx(1 / 1024)]
  assert v["ipguard"]["negative_p_values"] == [pytest.approx(848 / 1024), pytest.approx(386 / 1024)]
  # DAWN: the positive at the negatives' mean rate 0.2: P[Bin(10, 0.2) >= 9] = 10 * 0.2^9 * 0.8 + 0.2^10; each
  # negative at the other's rate (leave one out): P[Bin(10, 0.3) >= 1] and P[Bin(10, 0.1) >= 3]
  assert v["dawn"]["p_values"] == [pytest.approx(10 * 0.2 ** 9 * 0.8 + 0.2 ** 10)] and v["dawn"]["queries"] == 10
  assert v["dawn"]["negative_p_values"] == [pytest.approx(1 - 0.7 ** 10),
                                            pytest.approx(1 - sum(math.comb(10, i) * 0.1 ** i * 0.9 ** (10 - i)
                                                                  for i in range(3)))]
  assert ownership.unflatten(ownership.flatten(pos[0])) == pos[0]


def test_bad_audits_are_refused_in_one_line():
  with pytest.raises(UserError, match="unknown ownership verifier 'radioactive'; known: dataset_inference"):
    ownership.OwnershipAudit(verifiers=("radioactive",)).validate()
  with pytest.raises(UserError, match="ownership num_points"):
    ownership.OwnershipAudit(num_points=10).validate()
  with pytest.raises(UserError, match="false-positive rate"):
    ownership.OwnershipAudit(fprs=(0.0,)).validate()


# ---------------------------------------------------------------- the owner's program

@pytest.fixture(scope="module")
def victim_artifact(tmp_path_factory):
  """A small victim of train.py's (its artifact records its training images and recipe)."""
  from mlpriv_jax.lab import training
  path = tmp_path_factory.mktemp("victim") / "run"
  cfg = training.TrainRun(dataset="shapes10", arch="cnn_tiny", num_train=300, train=train.TrainConfig(
      num_epochs=3, batch_size=32, learning_rate=0.05, schedule="cosine", augment=False))
  training.run(cfg, workdir=str(path), run_config=dict(preset="smoke"), log=lambda *_: None)
  return str(path)


@pytest.mark.slow
def test_verify_program_convicts_a_copy_of_the_victim(victim_artifact, tmp_path):
  """experiments/verify.py on the victim's own artifact as the suspect: IPGuard's fingerprint is matched on every
  point (the negatives match fewer), so the copy is called stolen; the verdict counts the suspect's queries; bad
  input is one line and exit 2."""
  import json
  import os
  from conftest import program
  victim = victim_artifact
  wd = str(tmp_path / "verify")
  p = program("verify", "--preset=smoke", f"--victim={victim}", f"--suspect={victim}", f"--workdir={wd}")
  assert p.returncode == 0, p.stderr[-3000:]
  v = json.load(open(os.path.join(wd, "verdict.json")))
  assert set(v["verifiers"]) == {"dataset_inference", "ipguard"} and v["negatives"] == 2
  ig = v["verifiers"]["ipguard"]
  assert ig["matched"] == ig["points"] == 20 and ig["stolen"] and ig["p_value"] < 0.01, ig
  assert v["suspect_queries"] == ig["queries"] + v["verifiers"]["dataset_inference"]["queries"] > 20
  assert 0 <= v["verifiers"]["dataset_inference"]["p_value"] <= 1
  for args, match in (([], "give exactly one suspect"), ([f"--suspect={victim}", "--alpha=1.5"], "alpha must lie in")):
    p = program("verify", "--preset=smoke", f"--victim={victim}", f"--workdir={tmp_path}/bad", *args)
    assert p.returncode == 2 and match in p.stderr and len(p.stderr.strip().splitlines()) == 1, (args, p.stderr)


def test_verify_refuses_bad_input_in_one_line_before_it_verifies(victim_artifact, tmp_path):
  import os

  import numpy as np
  from mlpriv_jax import config as configs
  from mlpriv_jax import models
  from mlpriv_jax.lab import ownership as lab
  from mlpriv_jax.presets import verify as presets
  victim = victim_artifact
  five = Victim.from_apply(lambda x: x.reshape(len(x), -1)[:, :5], 5, (32, 32, 3))
  with pytest.raises(UserError, match=r"the suspect takes \(32, 32, 3\) with 5 classes; the victim \(32, 32, 3\) "
                                      "with 10: not a copy of it"):
    lab.run(presets.smoke(), victim=victim, suspect=five, suspect_name="five", workdir=str(tmp_path / "a"),
            log=lambda *_: None)
  model = models.get_model("cnn_tiny", 10)
  bare = models.save_model(str(tmp_path / "bare"), model, model.init(jax.random.key(0), np.zeros((1, 32, 32, 3))),
                           meta=dict(data=dict(name="shapes10", num_classes=10)))
  other = Victim(model, model.init(jax.random.key(1), np.zeros((1, 32, 32, 3))))
  with pytest.raises(UserError, match="records neither its training members nor its recipe"):
    lab.run(presets.smoke(), victim=bare, suspect=other, suspect_name="x", workdir=str(tmp_path / "b"),
            log=lambda *_: None)
  dawn = presets.smoke().audit.verifiers + ("dawn",)
  for change, kw, match in (
      ({"audit.verifiers": ("dawn",)}, {}, "give --ledger and --client"),
      ({"audit.verifiers": dawn}, dict(ledger=str(tmp_path / "none.sqlite"), client="alice"), "no such file"),
      ({"audit.verifiers": ("radioactive",)}, {}, "unknown ownership verifier 'radioactive'"),
      ({"audit.num_points": 5}, {}, "ownership num_points must be an integer >= 40")):
    with pytest.raises(UserError, match=match):
      lab.run(configs.replace(presets.smoke(), change), victim=victim, suspect=other, suspect_name="x",
              workdir=str(tmp_path / "c"), log=lambda *_: None, **kw)
  assert not os.path.exists(tmp_path / "c" / "verdict.json")


@pytest.mark.slow
def test_served_dawn_names_the_key_that_stole(tmp_path):
  """DAWN on a victim served over loopback (its master secret from the provider's key file): a KnockoffNets thief
  steals with one API key and trains a surrogate that fits its answers; from the server's ledger, the owner calls
  the surrogate stolen through that key, and neither the same surrogate through another key that also queried (its
  triggers are other images) nor an independent model through the thief's key. At 5% of 600 queries (30 triggers
  expected) so that a CPU surrogate fits them in a test; DAWN's 0.5% is measured by benchmarks/dawn_fit.py."""
  import json

  from mlpriv_jax import data, models, serve
  from mlpriv_jax.lab import serving, training
  from mlpriv_jax.ownership import dawn as DW
  recipe = train.TrainConfig(num_epochs=30, batch_size=32, learning_rate=0.05, momentum=0.9, schedule="cosine",
                             augment=False)
  victim = str(tmp_path / "victim")
  training.run(training.TrainRun(dataset="shapes10", arch="cnn_tiny", num_train=500, train=recipe), workdir=victim,
               run_config=dict(preset="smoke"), log=lambda *_: None)
  key_file, keys = str(tmp_path / "dawn_key.json"), str(tmp_path / "keys.json")
  json.dump(dict(secret=bytes(range(7, 39)).hex()), open(key_file, "w"))   # fixed: the triggers are reproducible
  clients = dict(thief="sk-thief-0123456789abcdef", honest="sk-honest-0123456789abcdef")
  json.dump(dict(clients=[dict(name=n, key=k) for n, k in clients.items()]), open(keys, "w"))
  ledger = str(tmp_path / "usage.sqlite")
  served = serving.build(victim=victim, keys_file=keys, defence="dawn", strength=0.05, dawn_key_file=key_file,
                         ledger=ledger, buckets=(600,), log=lambda *_: None)
  ds = data.load_dataset("shapes10")
  model = models.get_model("cnn_tiny", 10)
  with serve.BackgroundServer(serve.create_app(served)) as s:
    thief = serve.connect(serve.Endpoint(s.url, api_key=clients["thief"]))
    res = E.run("knockoff_random", thief, ds.x_test[:600], budget=600, surrogate=model, key=jax.random.key(3),
                config=dataclasses.replace(recipe, num_epochs=60))
    honest = serve.connect(serve.Endpoint(s.url, api_key=clients["honest"]))
    honest.query(ds.x_test[600:1200])
    thief.close()
    honest.close()
  served.ledger.close()
  stolen = Victim(model, train.variables_of(res.state))
  other = Victim(model, train.variables_of(train.train(model, recipe, ds.x_train[2000:2500], ds.y_train[2000:2500],
                                                       jax.random.key(4)).state))
  book = serve.Ledger(ledger)
  audit = ownership.OwnershipAudit(("dawn",), num_independent=2)   # negatives: images 500..1499
  got = {}
  for name, suspect, client in (("stolen", stolen, "thief"), ("stolen", stolen, "honest"),
                                ("independent", other, "thief")):
    got[name, client] = ownership.verify_artifact(victim, suspect, audit, dawn=DW.from_ledger(book, client),
                                                  workdir=str(tmp_path / "negatives"),
                                                  log=lambda *_: None)["verifiers"]["dawn"]
  book.close()
  n = got["stolen", "thief"]["triggers"]
  assert 15 <= n <= 50 and 15 <= got["stolen", "honest"]["triggers"] <= 50, got   # 30 expected of each key
  assert got["stolen", "thief"]["stolen"] and got["stolen", "thief"]["p_value"] < 1e-6, got
  assert not got["stolen", "honest"]["stolen"] and not got["independent", "thief"]["stolen"], got
  agree, null = got["stolen", "thief"]["agreed"] / n, got["independent", "thief"]["agreed"] / n
  print(f"DAWN served: thief's surrogate {got['stolen', 'thief']['agreed']}/{n}, independent "
        f"{got['independent', 'thief']['agreed']}/{n}; triggers needed for p < 2^-64 at these rates: "
        f"{DW.triggers_needed(agree, null, 2.0 ** -64)}")
