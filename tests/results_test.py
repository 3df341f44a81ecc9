"""The one results schema: rows, JSON lines, markdown and CSV; and how programs report bad input and bugs."""

import os
import subprocess
import sys

import pytest

from conftest import REPO
from mlpriv_jax import results


def test_rows_round_trip_and_render(tmp_path):
  rows = [results.row(metric="auc", value=0.9, family="membership", attack="lira_online", defence="memguard",
                      strength=1.0, ci=(0.85, 0.95), queries=1000, seed=0, data_source="embedded"),
          results.row(metric="tpr_at_0.001", value=0.02, attack="lira_online", defence="memguard", strength=1.0),
          results.row(metric="auc", value=0.6, attack="loss", defence="label"),
          results.row(metric="fidelity", value=None, family="extraction", attack="cloudleak", budget=250,
                      surrogate="cnn_tiny")]
  path = str(tmp_path / "r.jsonl")
  results.write_jsonl(path, rows)
  assert results.read_jsonl(path) == rows
  assert set(rows[0]) == set(results.FIELDS)
  md = results.to_markdown(rows[:3]).splitlines()
  assert md[0] == "| attack | defence | strength | auc | tpr_at_0.001 |"
  assert md[2] == "| lira_online | memguard | 1 | 0.9000 [0.8500, 0.9500] | 0.0200 |"
  assert md[3] == "| loss | label | - | 0.6000 |  |"
  csv = results.to_csv(rows).splitlines()
  assert csv[0] == ",".join(results.FIELDS)
  assert csv[1] == "membership,lira_online,memguard,1.0,,,auc,0.9,0.85,0.95,1000,0,embedded"
  assert csv[4] == "extraction,cloudleak,,,250,cnn_tiny,fidelity,,,,,,"   # not measurable: no value
  with pytest.raises(ValueError, match="exactly the fields"):
    results.write_jsonl(path, [dict(rows[0], extra=1)])
  with pytest.raises(ValueError, match="must be a number or None"):
    results.row(metric="auc", value="high")


def test_membership_report_is_flattened_once_with_its_intervals_and_audit():
  """One flattener of a membership report: every figure a row, its bootstrap interval the row's CI."""
  report = dict(auc=0.7, balanced_accuracy=0.65, advantage=0.3, tpr_at_fpr={"0.001": 0.01, "0.01": 0.05},
                num_members=500, num_nonmembers=500, num_scored=1000, queries_per_example=2.5,
                interval=dict(auc=[0.68, 0.72], balanced_accuracy=[0.6, 0.7], advantage=[0.2, 0.4],
                              tpr_at_fpr={"0.001": [0.0, 0.02], "0.01": [0.03, 0.07]}),
                audit=dict(epsilon_lower_bound=0.4, clopper_pearson=0.3))
  rows = results.membership_rows(report, attack="lira_online", defence="none", queries=2500)
  by = {r["metric"]: r for r in rows}
  assert set(by) == {"auc", "balanced_accuracy", "advantage", "tpr_at_0.001", "tpr_at_0.01", "epsilon_lower_bound",
                     "epsilon_lower_bound_clopper_pearson", "num_scored", "num_members", "num_nonmembers",
                     "queries_per_example"}
  assert (by["tpr_at_0.01"]["value"], by["tpr_at_0.01"]["ci_low"], by["tpr_at_0.01"]["ci_high"]) == (0.05, 0.03, 0.07)
  assert by["num_scored"]["value"] == 1000 and isinstance(by["num_scored"]["value"], int)
  assert all(r["attack"] == "lira_online" and r["queries"] == 2500 for r in rows)
  assert results.summary(rows)["lira_online"]["intervals"]["auc"] == [0.68, 0.72]
  assert results.metrics(rows)["epsilon_lower_bound"] == 0.4


def _python(code):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=REPO)


def test_programs_print_one_line_for_bad_input_and_keep_the_traceback_of_a_bug():
  head = "from experiments import common\nfrom mlpriv_jax.errors import UserError\n"
  p = _python(head + "def main(argv):\n  raise UserError('--budget must be >= 0, got -1')\ncommon.run(main)\n")
  assert p.returncode == 2 and p.stderr.strip() == "error: --budget must be >= 0, got -1", p.stderr
  # A ValueError that is not a UserError (from inside JAX or Flax, say) is a bug: traceback, not exit 2.
  p = _python(head + "def main(argv):\n  raise ValueError('incompatible shapes for broadcasting')\ncommon.run(main)\n")
  assert p.returncode == 1 and "Traceback" in p.stderr and "error:" not in p.stderr, p.stderr[-500:]
  p = _python(head + "from absl import flags\nflags.DEFINE_integer('n', 1, '')\n"
              "import sys\nsys.argv = ['x', '--n=abc']\ncommon.run(lambda argv: None)\n")
  assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "--n" in p.stderr, p.stderr
