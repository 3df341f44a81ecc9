"""The one results schema: rows, JSON lines, markdown and CSV; and how programs report bad input and bugs."""

import os
import subprocess
import sys

import pytest

from conftest import REPO
from mlpriv_jax import results


def test_rows_round_trip_and_render(tmp_path):
  rows = [results.row(metric="auc", value=0.9, attack="lira_online", defence="memguard", strength=1.0,
                      ci=(0.85, 0.95), queries=1000, seed=0, data_source="embedded"),
          results.row(metric="tpr_at_fpr_0.001", value=0.02, attack="lira_online", defence="memguard", strength=1.0),
          results.row(metric="auc", value=0.6, attack="loss", defence="label")]
  path = str(tmp_path / "r.jsonl")
  results.write_jsonl(path, rows)
  assert results.read_jsonl(path) == rows
  assert set(rows[0]) == set(results.FIELDS)
  md = results.to_markdown(rows).splitlines()
  assert md[0] == "| attack | defence | strength | auc | tpr_at_fpr_0.001 |"
  assert md[2] == "| lira_online | memguard | 1 | 0.9000 [0.8500, 0.9500] | 0.0200 |"
  assert md[3] == "| loss | label | - | 0.6000 |  |"
  csv = results.to_csv(rows).splitlines()
  assert csv[0] == ",".join(results.FIELDS) and csv[1].startswith("lira_online,memguard,1.0,auc,0.9,0.85,0.95,1000")
  with pytest.raises(ValueError, match="exactly the fields"):
    results.write_jsonl(path, [dict(rows[0], extra=1)])


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
