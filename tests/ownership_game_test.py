"""The ownership game end to end on embedded data: the owner's evidence against a victim, its independent negatives,
a stolen surrogate and the victim itself as positives, and the verdict calibrated on the negatives."""

import math

import jax
import pytest

from mlpriv_jax import defences, train
from mlpriv_jax.attacks import extraction as E
from mlpriv_jax.errors import UserError
from mlpriv_jax.games import membership, ownership
from mlpriv_jax.oracle import Victim
from mlpriv_jax.ownership import ipguard as IG

# Dataset Inference end to end is tests/ownership_test.py's; here the game's other two verifiers
AUDIT = ownership.OwnershipAudit(verifiers=("ipguard", "dawn"), num_independent=1,
                                 ipguard=IG.IPGuardOptions(num_points=30, max_steps=150))


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


@pytest.mark.slow
def test_the_owner_proves_the_theft_and_spares_independent_models(tmp_path):
  game = membership.MembershipGame("shapes10", "cnn_tiny", 600, 2, train.TrainConfig(
      num_epochs=40, batch_size=32, learning_rate=0.05, momentum=0.9, schedule="cosine", augment=False))
  trained = membership.setup(game, membership.load_data(game), str(tmp_path), log=lambda *_: None)
  model, victim, ds = trained.model, trained.target_variables, trained.dataset
  members = trained.x[trained.target_keep], trained.y[trained.target_keep]
  owner = ownership.prepare(AUDIT, model, victim, members, (ds.x_test, ds.y_test), jax.random.key(0))
  negatives = [Victim(model, v) for v in ownership.independent(trained, AUDIT, log=lambda *_: None)]
  # the thief: KnockoffNets through DAWN at 10% on the test images, a surrogate of the victim's architecture
  kit = defences.assemble(["dawn"], model, jax.random.key(1))
  account = jax.random.key(2)
  api = Victim(model, victim, defence=defences.build("dawn", 0.1, **kit._asdict()), key=account, budget=800)
  cfg = train.TrainConfig(num_epochs=60, batch_size=32, learning_rate=0.05, momentum=0.9, schedule="cosine",
                          augment=False)
  res = E.run("knockoff_random", api, ds.x_test[1000:1800], budget=800, surrogate=model, key=jax.random.key(3),
              config=cfg)
  evidence = ownership.dawn_evidence(kit.watermark_master, account, res.images, res.answers, 0.1)
  stolen = Victim(model, train.variables_of(res.state))
  pos = [ownership.verify(owner, stolen, dawn=evidence, negatives=negatives),
         ownership.verify(owner, Victim(model, victim))]
  neg = [ownership.verify(owner, n) for n in negatives]
  assert api.queries_used == 800 and set(pos[0]) == {"ipguard", "dawn"} and set(pos[1]) == {"ipguard"}
  v = ownership.judge(pos, neg, AUDIT)
  # the victim itself matches its fingerprint, far beyond every negative
  assert v["ipguard"]["p_values"][1] < 1e-6 and min(v["ipguard"]["negative_p_values"]) > 1e-3
  # the stolen model is caught by DAWN, on its client's triggers (IPGuard's boundary points do not transfer to it
  # here: the surrogate matches them no more than the negatives do, as Lukas et al. 2021 report of such fingerprints)
  assert v["dawn"]["p_values"][0] < 1e-3 and v["dawn"]["tpr_p<0.01"] == 1.0, v["dawn"]
  assert v["ipguard"]["queries"] == 30 and v["dawn"]["queries"] == len(evidence.x) > 0


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
