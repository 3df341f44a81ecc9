"""The arena's scoring and collation on hand-made cells: worst case per family, dominance, budget to 90%, resume,
and every output written from the cells alone."""

import csv
import io
import json
import os
import shutil

import pytest

import conftest
from conftest import OIP

from mlpriv_jax import results
from mlpriv_jax.arena import cells as C
from mlpriv_jax.arena import report, scoring
from mlpriv_jax.errors import UserError


def _cells(tmp_path):
  wd = str(tmp_path)
  w = lambda *a, **k: C.write_cell(wd, *a, **k)
  for setting, acc in (("none", 0.90), ("label", 0.90), ("round2", 0.90), ("mad", 0.80)):
    d, s = (setting, None) if setting != "mad" else ("mad", 0.5)
    w(C.key("utility", None, d, s), dict(accuracy=acc, label_flip_rate=0.0, l1=0.1))
  # extraction: knockoff beats jbda at the largest budget, jbda is higher at the small one (must not count)
  fid = {("none", "knockoff_random", 100): 0.50, ("none", "knockoff_random", 1000): 0.80,
         ("none", "jbda", 100): 0.65, ("none", "jbda", 1000): 0.70,
         ("label", "knockoff_random", 100): 0.30, ("label", "knockoff_random", 1000): 0.75,
         ("round2", "knockoff_random", 100): 0.50, ("round2", "knockoff_random", 1000): 0.80,
         ("mad", "knockoff_random", 100): 0.20, ("mad", "knockoff_random", 1000): 0.40}
  for (setting, attack, b), f in fid.items():
    d, s = (setting, None) if setting != "mad" else ("mad", 0.5)
    w(C.key("extraction", attack, d, s, budget=b, surrogate="cnn_tiny"), dict(fidelity=f, accuracy=f - 0.1))
  # membership: behind `label` the score attacks fall to chance and the label-only attack is the worst
  tpr = {("none", "lira_online"): (0.05, 0.70, 1.2), ("none", "gap"): (0.0, 0.55, 0.0),
         ("label", "lira_online"): (0.0, 0.51, 0.0), ("label", "gap"): (0.0, 0.55, 0.0),
         ("round2", "lira_online"): (0.04, 0.69, 1.1)}
  for (setting, attack), (t, auc, eps) in tpr.items():
    w(C.key("membership", attack, setting), {"tpr_at_0.001": t, "tpr_at_0.01": t, "auc": auc,
                                              "epsilon_lower_bound": eps, "num_nonmembers": 1000},
      curves=dict(roc=[[0.0, 0.001, 0.1, 1.0], [0.0, t, 0.3, 1.0]]))
  # an attack that measured nothing within the small budget
  w(C.key("extraction", "cloudleak", "none", None, 100, "cnn_tiny"), dict(fidelity=None, accuracy=None))
  return wd


def test_worst_attacks_and_dominance(tmp_path):
  rows = {r["setting"]: r for r in scoring.headline(C.load_cells(_cells(tmp_path)))}
  assert list(rows)[0] == "none" and rows["none"]["budget"] == 1000
  assert rows["none"]["worst_fidelity"] == 0.80 and rows["none"]["worst_fidelity_attack"] == "knockoff_random (cnn_tiny)"
  assert rows["none"]["worst_tpr"] == 0.05 and rows["none"]["worst_tpr_attack"] == "lira_online"
  assert rows["label"]["worst_tpr_attack"] == "gap"   # tie at TPR 0, broken by AUC: the label-only attack
  assert rows["mad@0.5"]["utility_cost"] == pytest.approx(0.10) and rows["mad@0.5"]["families"] == ["extraction"]
  assert rows["none"]["epsilon_lower_bound"] == 1.2 and rows["label"]["epsilon_lower_bound"] == 0.0
  # round2 keeps none's accuracy with the same fidelity and less membership leakage: it dominates none; label
  # (same accuracy, less of both) dominates both
  assert rows["none"]["dominated_by"] == ["label", "round2"] and rows["round2"]["dominated_by"] == ["label"]
  assert not rows["label"]["dominated"]
  assert not rows["mad@0.5"]["dominated"]   # less accurate, but the least fidelity
  same = dict(rows["round2"])
  assert not scoring.dominates(same, rows["round2"])   # equal rows: no strict improvement


def test_membership_criterion_is_the_lowest_fpr_every_attack_resolves(tmp_path):
  cells = C.load_cells(_cells(tmp_path))
  assert scoring.membership_criterion(cells) == "tpr_at_0.001"
  few = [dict(c, metrics=dict(c["metrics"], num_nonmembers=50 if c["attack"] == "gap" else 1000))
         if c["family"] == "membership" else c for c in cells]
  assert scoring.membership_criterion(few) == "auc"   # 50 non-members resolve neither 0.1% nor 1% FPR
  rows = {r["setting"]: r for r in scoring.headline(few)}
  assert rows["none"]["worst_tpr_attack"] == "lira_online" and rows["none"]["worst_tpr"] == 0.70
  assert rows["label"]["worst_tpr_attack"] == "gap" and rows["label"]["criterion"] == "auc"
  some = [dict(c, metrics=dict(c["metrics"], num_nonmembers=200)) if c["family"] == "membership" else c
          for c in cells]
  assert scoring.membership_criterion(some) == "tpr_at_0.01"
  # the headline ranks by the criterion and adds the worst AUC, once: not twice when the criterion is the AUC
  for cs, header in ((few, ["worst AUC", "(attack)", "audited eps >="]),
                     (some, ["worst TPR @ 1% FPR", "(attack)", "worst AUC", "audited eps >="])):
    table = report.headline_table(scoring.headline(cs))
    assert table[0][5:5 + len(header)] == header and table[0].count("worst AUC") == 1
    assert len(set(map(len, table))) == 1   # every row as wide as the header


def test_dominance_needs_every_family_the_other_was_attacked_in():
  a = dict(accuracy=0.9, worst_fidelity=None, worst_tpr=0.01)
  b = dict(accuracy=0.8, worst_fidelity=0.5, worst_tpr=0.02)
  assert not scoring.dominates(a, b)            # a was never attacked by extraction
  assert scoring.dominates(b | dict(accuracy=0.9, worst_fidelity=0.4), b)
  assert not scoring.dominates(dict(accuracy=None, worst_fidelity=0.1, worst_tpr=0.0), b)


def test_budget_to_90_percent_of_undefended_fidelity(tmp_path):
  reach = scoring.budget_to_fraction(C.load_cells(_cells(tmp_path)))
  assert reach[("none", "knockoff_random", "cnn_tiny")] == 1000        # 0.50 < 0.72 at 100
  assert reach[("none", "jbda", "cnn_tiny")] == 100                    # 0.65 >= 0.9 * 0.70
  assert reach[("label", "knockoff_random", "cnn_tiny")] == 1000 and reach[("mad@0.5", "knockoff_random", "cnn_tiny")] is None


def test_a_pretrained_surrogate_is_held_to_its_architecture_from_scratch(tmp_path):
  """The budget column of `<arch>+pretrained` uses the from-scratch undefended fidelity (0.80 here) as its
  yardstick: reaching 0.72 at 100 queries is the saving; against its own 0.85 it would have needed 1000."""
  wd = _cells(tmp_path)
  for (d, b), f in {("none", 100): 0.74, ("none", 1000): 0.85, ("label", 100): 0.70, ("label", 1000): 0.80}.items():
    C.write_cell(wd, C.key("extraction", "knockoff_random", d, None, budget=b, surrogate="cnn_tiny+pretrained"),
                 dict(fidelity=f, accuracy=f - 0.1))
  reach = scoring.budget_to_fraction(C.load_cells(wd))
  assert reach[("none", "knockoff_random", "cnn_tiny+pretrained")] == 100
  assert reach[("label", "knockoff_random", "cnn_tiny+pretrained")] == 1000
  assert reach[("none", "knockoff_random", "cnn_tiny")] == 1000   # the scratch lane as before


def test_cells_resume_and_ignore_a_killed_write(tmp_path):
  wd = str(tmp_path)
  keys = [C.key("utility", None, "none"), C.key("membership", "loss", "none"), C.key("membership", "gap", "none")]
  C.write_cell(wd, keys[0], dict(accuracy=0.9))
  with open(os.path.join(wd, "cells", keys[1].name + ".json.x1.tmp"), "w") as f:   # what a killed write leaves
    f.write('{"family": "memb')
  assert C.missing(wd, keys) == keys[1:] and len(C.load_cells(wd)) == 1
  assert C.read_cell(wd, keys[0])["metrics"] == dict(accuracy=0.9) and C.read_cell(wd, keys[1]) is None
  with pytest.raises(UserError, match="must be numbers"):
    C.write_cell(wd, keys[1], dict(auc="high"))
  with pytest.raises(UserError, match="unknown cell family"):
    C.key("poisoning", "x")
  assert C.key("extraction", "jbda", "mad", 0.5, 1000, "res/32").name == "extraction__jbda__mad@0.5__B1000__res_32__s0"


def test_a_damaged_cell_is_set_aside_and_recomputed_never_a_traceback(tmp_path):
  """A cell file holding `{}`, `[1, 2]`, a cut-off write or rows of another schema is moved aside with a warning and
  counts as missing; the good cells load as before."""
  wd = _cells(tmp_path)
  good = len(C.load_cells(wd)) - 4
  keys = [C.key("utility", None, "none"), C.key("utility", None, "label"), C.key("utility", None, "round2"),
          C.key("utility", None, "mad", 0.5)]
  for k, text in zip(keys, ("{}", "[1, 2]", '{"family": "util', json.dumps(dict(C.read_cell(wd, keys[3]),
                                                                                   rows=[{"metric": "accuracy"}])))):
    with open(C.cell_path(wd, k), "w") as f:
      f.write(text)
  lines = []
  assert C.missing(wd, keys, lines.append) == keys
  assert len(lines) == 4 and all("does not hold a cell; set aside" in line for line in lines)
  folder = os.path.join(wd, "cells")
  assert sorted(n for n in os.listdir(folder) if ".damaged" in n) == sorted(k.name + ".json.damaged" for k in keys)
  assert len(C.load_cells(wd, lines.append)) == good and len(lines) == 4   # nothing left to set aside
  with open(C.cell_path(wd, keys[0]), "w") as f:   # damaged again: set aside beside the first, not over it
    f.write("{}")
  assert C.read_cell(wd, keys[0]) is None and C.missing(wd, keys[:1]) == keys[:1]
  assert os.path.exists(C.cell_path(wd, keys[0]) + ".damaged.1")


def test_collate_writes_every_output_from_the_cells(tmp_path):
  wd = _cells(tmp_path)
  for attack, flag in (("jbda", 170), ("benign", None)):
    C.write_cell(wd, C.key("monitor", attack, "none", None, 1000), dict(queries_to_flag=flag,
                                                                        flagged=float(flag is not None), stream=1000))
  cells = C.load_cells(wd)
  doc = report.collate(wd, cells, config=dict(preset="smoke", victim="cnn_tiny"),
                       provenance=dict(git_commit="abc", device="cpu", wall_seconds=1.0),
                       skipped=[dict(what="memguard x extraction", why="MemGuard defends membership only")])
  assert doc["schema"] == report.SCHEMA and len(doc["cells"]) == len(cells) == 4 + 11 + 5 + 2
  again = json.load(open(os.path.join(wd, "arena.json")))
  assert again["headline"][0]["setting"] == "none" and again["skipped"][0]["what"] == "memguard x extraction"
  rows = list(csv.DictReader(io.StringIO(open(os.path.join(wd, "cells.csv")).read())))
  assert len(rows) == sum(len(c["metrics"]) for c in cells)
  # cells.csv and results.jsonl are the one results schema, the same rows: each carries its cell's key
  lines = results.read_jsonl(os.path.join(wd, "results.jsonl"))
  assert list(rows[0]) == list(results.FIELDS) and len(lines) == len(rows)
  for r, line in zip(rows, lines):
    assert (r["family"], r["attack"], r["defence"], r["metric"]) == tuple(line[f] for f in ("family", "attack",
                                                                                               "defence", "metric"))
    assert (float(r["value"]) if r["value"] else None) == line["value"]
  mad = [line for line in lines if line["defence"] == "mad" and line["family"] == "extraction"]
  assert {(line["strength"], line["budget"], line["surrogate"]) for line in mad} == {(0.5, 100, "cnn_tiny"),
                                                                                     (0.5, 1000, "cnn_tiny")}
  md = open(os.path.join(wd, "report.md")).read()
  assert "| none | 0.900 | 0.000 | 0.800 | knockoff_random (cnn_tiny) | 0.050 | lira_online |" in md
  assert "## Utility" in md and "| mad@0.5 | 0.800 | 0.000 | 0.100 | - | - |" in md
  assert "| jbda | yes | 170 | 1000 |\n| benign | no | - | 1000 |" in md   # the benign stream last
  page = open(os.path.join(wd, "report.html")).read()
  for name in ("tradeoff_extraction.png", "tradeoff_membership.png", "fidelity_vs_budget.png", "roc_loglog.png",
               "heatmap_extraction.png", "heatmap_membership.png"):
    assert os.path.getsize(os.path.join(wd, name)) > 5000, name
  assert page.count("data:image/png;base64,") == 6 and "<table>" in page and "memguard x extraction" in page


# ---------------------------------------------------------------- a small end-to-end arena

def _tiny_config(**change):
  """The tiny arena's config; `change`: {dotted path: value} (e.g. `extraction.budgets`)."""
  from mlpriv_jax import config, train
  from mlpriv_jax.arena import run
  from mlpriv_jax.games.extraction import ExtractionAudit
  from mlpriv_jax.games.membership import MembershipAudit, MembershipGame
  from mlpriv_jax.games.ownership import OwnershipAudit
  from mlpriv_jax.ownership import dataset_inference as DI
  from mlpriv_jax.ownership import ipguard as IG
  cfg = run.ArenaConfig(
      game=MembershipGame("shapes10", "cnn_tiny", 800, 2,   # the victim: ~50% on shapes10
                          train.TrainConfig(num_epochs=20, batch_size=32, learning_rate=0.05, schedule="cosine",
                                            augment=False)),
      membership=MembershipAudit(("loss", "lira_offline", "gap"), label_examples=40, num_population=100,
                                 num_bootstrap=100),
      extraction=ExtractionAudit(("knockoff_random", "top1"), budgets=(200, 400), surrogates=("cnn_tiny",),
                                 query_set="figures20",   # fidelity ~0.45 at 400 (chance 0.16)
                                 surrogate=train.TrainConfig(num_epochs=12, batch_size=16, learning_rate=0.05,
                                                             schedule="cosine", augment=False)),
      defences=(("label", ()), ("mad_argmax", (0.5,)), ("memguard", (1.0,)), ("dawn", (0.1,))),
      ownership=OwnershipAudit(("dataset_inference", "ipguard", "dawn"), num_points=20, num_independent=2,
                               dataset_inference=DI.DatasetInferenceOptions(num_directions=2, max_steps=10,
                                                                            num_revealed=5, num_resamples=20),
                               ipguard=IG.IPGuardOptions(num_points=20, max_steps=100)),
      num_test=200, num_guard=50, dp_epsilons=(8.0,),
      dp_game=MembershipGame("shapes10", "cnn_tiny_gn", 200, 2,
                             train.TrainConfig(num_epochs=2, batch_size=50, learning_rate=1.0, schedule="cosine",
                                               augment=False, weight_decay=0.0)))
  return config.replace(cfg, change)


def _setting_cells(cells, setting):
  """{(family, attack, budget, surrogate): metrics} of one setting, the timings left out."""
  return {(c["family"], c["attack"], c["budget"], c["surrogate"]):
          {k: v for k, v in c["metrics"].items() if k != "seconds_per_1000_queries"}
          for c in cells if c["setting"] == setting}


@pytest.fixture(scope="module")
def small_arena(tmp_path_factory):
  """The tiny arena, computed once: (workdir, report, log lines)."""
  from mlpriv_jax.arena import run
  wd = str(tmp_path_factory.mktemp("small_arena") / "arena")
  lines = []
  doc = run.run(_tiny_config(), workdir=wd, log=lines.append)
  return wd, doc, lines


@pytest.mark.slow
def test_small_arena_end_to_end_resumes_and_collates(small_arena):
  from mlpriv_jax.arena import run
  wd, doc, lines = small_arena
  lines = list(lines)
  cells = C.load_cells(wd)
  fam = {f: [c for c in cells if c["family"] == f] for f in C.FAMILIES}
  # 6 settings (none, label, mad_argmax@0.5, memguard@1, dawn@0.1, dpsgd@8): utility for each; membership for the
  # 4 that address it (mad_argmax and DAWN are extraction-only), and behind label and memguard the 2 score attacks
  # calibrated on defended shadows too; extraction (2 attacks x 2 budgets) for all 6; ownership for each surrogate
  # of the main victim and the 2 independent models
  assert len(fam["utility"]) == 6 and len(fam["membership"]) == 4 * 3 + 2 * 2
  assert {c["attack"] for c in fam["membership"] if c["setting"] == "memguard@1"} == {
      "loss", "lira_offline", "gap", "loss_aware", "lira_offline_aware"}
  assert len(fam["extraction"]) == 6 * 2 * 2
  assert len(fam["monitor"]) == 3   # knockoff_random, top1, benign
  assert {s["what"] for s in doc["skipped"]} == {"mad_argmax@0.5 x membership", "dawn@0.1 x membership",
                                                 "dpsgd x ownership"}
  _check_ownership(wd, cells, doc)
  # Top-1 behind the label-keeping defences trains the label API's surrogate: the same cells, to the last digit
  fidelity = {(c["attack"], c["setting"], c["budget"]): c["metrics"]["fidelity"] for c in fam["extraction"]}
  for b in (200, 400):
    for setting in ("mad_argmax@0.5", "memguard@1", "label"):
      assert fidelity["top1", setting, b] == fidelity["knockoff_random", "label", b], (setting, b)
  rows = {r["setting"]: r for r in doc["headline"]}
  assert set(rows) == {"none", "label", "mad_argmax@0.5", "memguard@1", "dawn@0.1", "dpsgd@8"}
  assert rows["none"]["accuracy"] > 0.4                                 # a victim worth attacking (10 classes)
  assert rows["label"]["accuracy"] == rows["none"]["accuracy"]          # the label output keeps every top-1
  assert rows["none"]["worst_fidelity"] > 0.3                           # the undefended victim is extracted
  assert any("left" in line for line in lines)                          # progress with the time left
  assert doc["provenance"]["compute_runs"] == 1
  # a killed run: cells deleted (one of a shared KnockoffNets training, one of a membership setting's run, a lost
  # proof: its surrogate is trained again) or damaged are recomputed alone; their finished siblings are not
  # rewritten, and the progress counts only them
  gone = [C.key("membership", "gap", "label"), C.key("extraction", "knockoff_random", "label", None, 200, "cnn_tiny"),
          C.key("ownership", "knockoff_random", "dawn", 0.1, 200, "cnn_tiny")]
  damaged = C.key("membership", "loss", "none")
  was = {k: C.read_cell(wd, k)["metrics"] for k in (*gone, damaged)}
  was_stolen = C.read_cell(wd, gone[-1]._replace(family="extraction"))["metrics"]
  for k in gone:
    os.remove(C.cell_path(wd, k))
  with open(C.cell_path(wd, damaged), "w") as f:
    f.write("[1, 2]")
  redone = (*gone, damaged, gone[-1]._replace(family="extraction"))   # a lost proof's surrogate is trained again
  others = {n: os.stat(os.path.join(wd, "cells", n)).st_mtime_ns for n in os.listdir(os.path.join(wd, "cells"))
            if n.endswith(".json") and n not in {k.name + ".json" for k in redone}}
  lines.clear()
  doc = run.run(_tiny_config(), workdir=wd, log=lines.append)
  assert any("5 to compute" in line for line in lines) and any("set aside" in line for line in lines)
  assert [line[:5] for line in lines if line.startswith("[")] == [f"[{i}/5]" for i in range(1, 6)]
  assert C.read_cell(wd, gone[-1]._replace(family="extraction"))["metrics"] == was_stolen
  assert not any("memguard: defence classifier" in line for line in lines)   # no defence built that had no cell
  for k in (*gone, damaged):
    assert C.read_cell(wd, k)["metrics"] == was[k], k                    # recomputed exactly
  assert {n: os.stat(os.path.join(wd, "cells", n)).st_mtime_ns for n in others} == others   # the rest untouched
  assert doc["provenance"]["compute_runs"] == 2   # both runs' time, the first one's kept
  # --collate_only computes nothing; another config is refused and nothing is overwritten
  before = open(os.path.join(wd, "arena.json")).read()
  run.run(_tiny_config(), workdir=wd, collate_only=True, log=lines.append)
  other = r"holds another arena.py run \(arena.extraction.budgets=\[.*\] there, \[200, 300\] here"
  with pytest.raises(UserError, match=other):
    run.run(_tiny_config(**{"extraction.budgets": (200, 300)}), workdir=wd, log=lines.append)
  assert json.load(open(os.path.join(wd, "arena.json")))["headline"] == json.loads(before)["headline"]
  assert os.path.getsize(os.path.join(wd, "report.html")) > 50000



def _check_ownership(wd, cells, doc):
  """Every surrogate of the main victim is a positive with its own ownership cell, the independent models the
  negatives; DAWN reads exactly the triggers the thief's account was given (the watermarked answers among its
  queries up to the budget), only behind DAWN; the headline names the verifier that proves the theft."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from mlpriv_jax import data, streams
  from mlpriv_jax.arena import proof
  from mlpriv_jax.defences import dawn as W
  cfg = _tiny_config()
  name = lambda c: f"{c['attack']} {c['setting']} {c['budget']}"
  ext = {name(c) for c in cells if c["family"] == "extraction" and c["defence"] != "dpsgd"}
  own = {name(c): c["metrics"] for c in cells if c["family"] == "ownership"}
  assert set(own) == ext | {"independent none None"} and len(ext) == 5 * 2 * 2
  assert sorted(c["surrogate"] for c in cells if c["attack"] == proof.NEGATIVE) == ["independent0", "independent1"]
  for n, m in own.items():
    assert 0 <= m["dataset_inference_p_value"] <= 1 and m["ipguard_points"] == 20, n
    assert ("dawn_triggers" in m) == ("dawn@" in n), n
  # DAWN's evidence is the thief's own: the triggers of its account's secret among its first B pool queries
  root = jax.random.key(cfg.game.seed)
  master = np.asarray(jax.random.bits(streams.derive(streams.branch(root, streams.DEFENDER), streams.OWNERSHIP,
                                                     streams.DAWN_MASTER), (32,), jnp.uint8)).tobytes()
  secret = W.client_secret(master, W.account_bytes(streams.account(root, streams.EXTRACTION_CLIENT)))
  pool = data.load_dataset("figures20", None, seed=cfg.game.seed + 1)
  kx = streams.derive(streams.branch(root, streams.ATTACKER), streams.EXTRACTION)
  idx = np.asarray(jax.random.permutation(streams.derive(kx, streams.KNOCKOFF_QUERIES), len(pool.x_train))[:400])
  for b in (200, 400):
    hits = int(W.triggers(secret, W.canonical(pool.x_train[idx[:b]]), 0.1).sum())
    for a in ("knockoff_random", "top1"):
      m = own[f"{a} dawn@0.1 {b}"]
      assert m["dawn_triggers"] == hits > 0 and m["dawn_queries"] == hits, (a, b, m)
      assert {k for k in m if k.startswith("dawn_null_agreed_")} == {"dawn_null_agreed_0", "dawn_null_agreed_1"}
  verdicts = scoring.ownership_verdicts(cells)
  assert set(verdicts["dawn@0.1"][400]) == {"dataset_inference", "ipguard", "dawn"}
  assert "dawn" not in verdicts["none"][400] and len(verdicts["none"][400]["ipguard"]["p_values"]) == 2
  for r in doc["headline"]:
    if r["setting"] != "dpsgd@8":
      assert r["proof_by"] in cfg.ownership.verifiers and 0 <= r["proof"] <= 1, r
  assert "Ownership: theft proven after the fact" in open(os.path.join(wd, "report.md")).read()


@pytest.mark.slow
def test_the_served_row_equals_the_in_process_one_behind_our_server(small_arena, tmp_path):
  """The victim served over HTTP behind the server's `label` defence: the row `served` has every cell of the
  in-process `label` row, equal (the same queries, answers, attack keys and surrogate initialisation)."""
  pytest.importorskip("fastapi")
  from mlpriv_jax import serve
  from mlpriv_jax.lab import serving
  wd = _copy_without_served(small_arena[0], tmp_path)
  keys = tmp_path / "keys.json"
  keys.write_text(json.dumps({"clients": [{"name": "auditor", "key": "sk-auditor-0123456789abcdef"}]}))
  served = serving.build(victim=os.path.join(wd, "victim", "target"), keys_file=str(keys), defence="label",
                         budget_per_key=None, log=lambda *_: None)
  with serve.BackgroundServer(serve.create_app(served)) as s:
    _served_row_equals_label_row(wd, serve.Endpoint(s.url, "sk-auditor-0123456789abcdef"))


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(os.path.join(OIP, "mlserver")), reason="no .venv-oip (built by `make test`)")
def test_the_served_row_is_the_same_behind_mlserver(small_arena, tmp_path):
  """The same artifact behind the same defence in a server nobody here wrote (MLServer, in its own terms: input
  `x` FP32, output `scores`, no key, no quota headers): the same cells again, and the arena's clients sent exactly
  the images MLServer answered (the attacks' queries, the utility's and the membership attacks' together)."""
  from mlpriv_jax import serve
  wd = _copy_without_served(small_arena[0], tmp_path)
  root = str(tmp_path / "mlserver")
  artifact = os.path.join(root, "victim", "target")
  shutil.copytree(os.path.join(wd, "victim", "target"), artifact)
  settings = dict(implementation="runtime.Artifact", parameters={"uri": artifact, "extra": {"defence": "label"}},
                  inputs=[{"name": "x", "datatype": "FP32", "shape": [-1, 32, 32, 3]}],
                  outputs=[{"name": "scores", "datatype": "FP32", "shape": [-1, 10]}])
  with conftest.mlserver(root, {"victim": settings}) as url:
    sent = _served_row_equals_label_row(wd, serve.Endpoint(url))
  answered = sum(int(line) for line in open(os.path.join(root, "victim", "answered.txt")))
  assert answered == sent > 0


def _copy_without_served(wd, tmp_path) -> str:
  """A copy of the arena's workdir without a served row."""
  copy = str(tmp_path / "arena")
  shutil.copytree(wd, copy, ignore=shutil.ignore_patterns("*.lock"))
  for name in os.listdir(os.path.join(copy, "cells")):
    if "served" in name:
      os.remove(os.path.join(copy, "cells", name))
  return copy


def _served_row_equals_label_row(wd, endpoint) -> int:
  """Runs the arena's served row against `endpoint`; checks its cells equal the `label` row's; returns the queries
  the served row's clients sent."""
  from mlpriv_jax import serve
  from mlpriv_jax.arena import run
  lines, clients = [], []
  connect = serve.connect
  with pytest.MonkeyPatch.context() as mp:   # keeps the arena's clients, to read their counts
    mp.setattr(serve, "connect", lambda *a, **k: clients.append(connect(*a, **k)) or clients[-1])
    doc = run.run(_tiny_config(), workdir=wd, endpoint=endpoint, log=lines.append)
  # utility, 3 membership, 2 x 2 extraction and their proofs
  assert any("12 to compute" in line for line in lines), lines
  cells = C.load_cells(wd)
  label = {k: v for k, v in _setting_cells(cells, "label").items()
           if not (k[1] or "").endswith("_aware")}   # a served victim's defence is unknown: no aware attack
  assert _setting_cells(cells, "served") == label and len(label) == 12
  assert {r["setting"] for r in doc["headline"]} == {"none", "label", "mad_argmax@0.5", "memguard@1", "dawn@0.1",
                                                     "dpsgd@8", "served"}
  return sum(c.queries_used for c in clients)


@pytest.mark.slow
def test_the_arena_runs_data_free_attacks_and_pretrained_surrogates(tmp_path):
  """A data-free attack in the arena: DFME is refused behind the label-only API (its cells say why, the arena goes
  on), DisGUIDE (hard labels) is not; a surrogate on the attacker's extractor gets its own lane beside the one from
  scratch, and the budget column holds it to the from-scratch figure."""
  import jax
  import numpy as np
  from mlpriv_jax import models
  from mlpriv_jax.arena import run
  from mlpriv_jax.attacks import extraction as E
  from mlpriv_jax.games.extraction import ExtractionAudit
  ext = models.get_model("cnn_tiny", 20)
  init = models.save_model(str(tmp_path / "extractor"), ext, ext.init(jax.random.key(0), np.zeros((1, 32, 32, 3))),
                           meta=dict(data=dict(name="figures20", num_classes=20)))
  base = _tiny_config()
  cfg = _tiny_config(**{
      "membership.attacks": ("loss",), "defences": (("label", ()),), "dp_epsilons": (), "game.train.num_epochs": 4,
      "ownership.verifiers": ("ipguard",), "ownership.num_independent": 1,
      "extraction": ExtractionAudit(
          ("knockoff_random", "dfme", "disguide"), budgets=(192,), surrogates=("cnn_tiny", "cnn_tiny+pretrained"),
          query_set="figures20", surrogate=base.extraction.surrogate, surrogate_init=init,
          options=E.ExtractionOptions(dfme=E.DfmeOptions(batch_size=16, nz=8, ngf=4, d_iter=2),
                                      disguide=E.DisguideOptions(batch_size=32, nz=8, ngf=4, replay_steps=1)))})
  wd = str(tmp_path / "arena")
  doc = run.run(cfg, workdir=wd, log=lambda *_: None)
  ext_cells = {(c["attack"], c["setting"], c["budget"], c["surrogate"]): c for c in C.load_cells(wd)
               if c["family"] == "extraction"}
  assert len(ext_cells) == 3 * 2 * 1 * 2
  for b in (192,):
    for g in ("cnn_tiny", "cnn_tiny+pretrained"):
      refused = ext_cells[("dfme", "label", b, g)]
      assert refused["metrics"]["fidelity"] is None and refused["info"]["note"].startswith(
          "refused: dfme needs the victim's probabilities"), refused
      for a, d in (("dfme", "none"), ("disguide", "none"), ("disguide", "label"), ("knockoff_random", "label")):
        assert 0 <= ext_cells[(a, d, b, g)]["metrics"]["fidelity"] <= 1, (a, d, b, g)
  assert sorted(c["attack"] for c in C.load_cells(wd) if c["family"] == "monitor") == [
      "benign", "dfme", "disguide", "knockoff_random"]   # one stream per attack, whatever the surrogates
  reach = {(r["setting"], r["attack"], r["surrogate"]) for r in doc["budget_to_90"]}
  assert ("none", "knockoff_random", "cnn_tiny+pretrained") in reach
  # the owner verifies DisGUIDE's two students by their soft vote; a refused attack left nothing to verify
  own = {(c["attack"], c["setting"], c["surrogate"]): c for c in C.load_cells(wd) if c["family"] == "ownership"}
  assert own[("disguide", "none", "cnn_tiny")]["metrics"]["ipguard_points"] == 20
  assert own[("dfme", "label", "cnn_tiny")]["metrics"] == {} and own[("dfme", "label", "cnn_tiny")]["info"][
      "note"].startswith("refused")


def test_arena_served_victim_bad_input(tmp_path):
  pytest.importorskip("httpx")
  from mlpriv_jax import serve
  from mlpriv_jax.arena import run
  for kw, match in ((dict(endpoint=serve.Endpoint("http://127.0.0.1:9")), "cannot reach the victim at"),
                    (dict(endpoint=serve.Endpoint("http://127.0.0.1:9", "sk-x", output_kind="odds")),
                     "--output_kind must be one of auto, probabilities, logits, labels")):
    with pytest.raises(UserError, match=match) as e:
      run.run(_tiny_config(), workdir=str(tmp_path / "bad"), log=lambda *_: None, **kw)
    assert "\n" not in str(e.value) and not os.path.exists(tmp_path / "bad")


@pytest.mark.parametrize("change,match", [
    ({"defences": (("shield", ()),)}, "unknown defence 'shield'"),
    ({"defences": (("revsig", (-1.0,)),)}, "out of range"),
    ({"extraction.attacks": ("copycat",)}, "unknown extraction attack 'copycat'"),
    ({"membership.attacks": ("oracle",)}, "unknown"),
    ({"extraction.budgets": (100, 10**6)}, "larger than the query pool"),
    ({"extraction.budgets": (0,)}, "budget must be an integer >= 1"),
    ({"extraction.budgets": (2.5,)}, "budget must be an integer >= 1"),
    ({"dp_epsilons": (-1.0,)}, "a DP epsilon must be a finite number > 0"),
    ({"membership.options.label_noise.num_samples": 0}, "label_noise num_samples must be an integer >= 1"),
    ({"ownership.verifiers": ("radioactive",)}, "unknown ownership verifier 'radioactive'"),
    ({"ownership.num_independent": 0}, "num_independent must be an integer >= 1"),
    ({"extraction.attacks": ()}, "the ownership verifiers judge the extraction attacks' surrogates")])
def test_arena_bad_input(tmp_path, change, match):
  from mlpriv_jax.arena import run
  with pytest.raises(UserError, match=match) as e:
    run.run(_tiny_config(**change), workdir=str(tmp_path / "bad"), log=lambda *_: None)
  assert "\n" not in str(e.value) and not os.path.exists(tmp_path / "bad")
