"""The one table of random streams: IDs distinct under each parent, parties on separate branches, accounts as
leaves, and no constant folded in anywhere else in the library."""

import os
import re

import jax
import numpy as np

from conftest import REPO
from mlpriv_jax import streams as S


def test_ids_are_distinct_under_each_parent():
  for group in ((S.TRAIN, S.KEEP, S.TARGET_HALF, S.DEFENDER, S.ATTACKER, S.EVALUATION),   # below the root
                (S.PROXY, S.GUARD, S.ACCOUNTS),                                            # below the defender
                (S.EXTRACTION_CLIENT, S.MEMBERSHIP_CLIENT, S.MEMBERSHIP_QUERY_CLIENT, S.EVALUATOR_CLIENT),
                (S.EXTRACTION, S.MEMBERSHIP),                                              # below the attacker
                (S.QUERY_CANDIDATES, S.SCORE_ATTACKS, S.QUERY_ATTACKS, S.AWARE_DEFENCE, S.AWARE_ANSWERS),
                (S.KNOCKOFF_QUERIES, S.KNOCKOFF_TRAIN, S.SMOOTHING_VIEWS, S.RECOVERY_SUBSETS, S.RECOVERY_SHADOWS,
                 S.RECOVERY_KIT, S.RECOVERY_TABLE, S.RECOVERY_NET), (S.SHADOW_CLASSES, S.SHADOW_HALF),
                (S.LABEL_TARGET, S.LABEL_CALIBRATION),
                (S.HSJ_INIT, S.HSJ_GRADIENT), (S.MEMGUARD_PROJECTION, S.MEMGUARD_CODES), (S.MLP_INIT, S.MLP_BATCHES),
                (S.INIT, S.ORDER, S.STEP, S.POISSON)):
    assert len(set(group)) == len(group), group


def test_every_key_of_a_run_is_drawn_once():
  """The keys one arena run derives (the world, each party's branch of three games, every account and the first
  queries it answers, the attacks and the streams below them) are pairwise distinct: an account's query keys are
  never an attack's or the defender's streams, as they were when the extraction account and the surrogate's
  training shared `fold_in(key, 1)`."""
  root = jax.random.key(7)
  keys = {f"world/{i}": S.derive(root, i) for i in (S.TRAIN, S.KEEP, S.TARGET_HALF)}
  for g in range(3):
    defender, attacker = S.branch(root, S.DEFENDER, g), S.branch(root, S.ATTACKER, g)
    keys[f"{g}/proxy"], keys[f"{g}/guard"] = S.derive(defender, S.PROXY), S.derive(defender, S.GUARD)
    keys[f"{g}/bootstrap"] = S.derive(S.branch(root, S.EVALUATION, g), S.BOOTSTRAP)
    for client in (S.EXTRACTION_CLIENT, S.MEMBERSHIP_CLIENT, S.MEMBERSHIP_QUERY_CLIENT, S.EVALUATOR_CLIENT):
      account = S.account(root, client, g)
      for q in range(0, 1000, 50):   # the keys of its calls: fold_in(key, queries_used)
        keys[f"{g}/account{client}/query{q}"] = jax.random.fold_in(account, q)
    extraction, membership = S.derive(attacker, S.EXTRACTION), S.derive(attacker, S.MEMBERSHIP)
    for name, sub in (("queries", S.KNOCKOFF_QUERIES), ("train", S.KNOCKOFF_TRAIN)):
      keys[f"{g}/extraction/{name}"] = S.derive(extraction, sub)
      keys[f"{g}/extraction/{name}/model0"] = S.derive(extraction, sub, 0)
    for name, sub in (("candidates", S.QUERY_CANDIDATES), ("score", S.SCORE_ATTACKS), ("query", S.QUERY_ATTACKS)):
      keys[f"{g}/membership/{name}"] = S.derive(membership, sub)
  data = {name: tuple(np.asarray(jax.random.key_data(k)).ravel().tolist()) for name, k in keys.items()}
  seen = {}
  for name, d in data.items():
    assert d not in seen, (name, seen.get(d))
    seen[d] = name
  # the account helper is the defender's branch, then its accounts
  np.testing.assert_array_equal(jax.random.key_data(S.account(root, 2, 1)),
                                jax.random.key_data(S.derive(S.branch(root, S.DEFENDER, 1), S.ACCOUNTS, 2)))


def test_no_constant_is_folded_in_outside_the_table():
  """`fold_in(key, 3)` in library code would be a stream without a name; index addressing (a model, a round, an
  example) is by a variable."""
  bare = re.compile(r"fold_in\([^()]*,\s*\d+\s*\)")
  found = []
  for folder, _, files in os.walk(os.path.join(REPO, "mlpriv_jax")):
    for name in files:
      path = os.path.join(folder, name)
      if name.endswith(".py") and name != "streams.py":
        for i, line in enumerate(open(path), 1):
          code = line.split("#")[0]
          if bare.search(code) and not code.strip().startswith(("*", "A ", "`")) and '"""' not in code:
            found.append(f"{os.path.relpath(path, REPO)}:{i}: {line.strip()}")
  assert not found, found
