"""The ownership game end to end on embedded data: the owner's evidence against a victim, its independent negatives,
a stolen surrogate and the victim itself as positives, and the verdict calibrated on the negatives."""

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
  the null rate each positive carries."""
  pos = [dict(dataset_inference=dict(p_value=1e-4, queries=10), ipguard=dict(matched=10, points=10, queries=10),
              dawn=dict(agreed=9, triggers=9, null_rate=0.1, queries=9))]
  neg = [dict(dataset_inference=dict(p_value=0.02, queries=10), ipguard=dict(matched=4, points=10, queries=10)),
         dict(dataset_inference=dict(p_value=0.3, queries=10), ipguard=dict(matched=6, points=10, queries=10))]
  v = ownership.judge(pos, neg, ownership.OwnershipAudit(fprs=(0.05,)))
  assert v["dataset_inference"]["p_values"] == [1e-4] and v["dataset_inference"]["tpr_at_0.05"] == 1.0
  assert v["ipguard"]["p_values"] == [pytest.approx(1 / 1024)]
  assert v["ipguard"]["negative_p_values"] == [pytest.approx(848 / 1024), pytest.approx(386 / 1024)]
  assert v["dawn"]["p_values"] == [pytest.approx(1e-9)] and v["dawn"]["queries"] == 9


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
