r"""mia.py's models trained by 1 process and by 2 (`jax.distributed` on localhost), each process on one CPU core.

  python benchmarks/hosts.py --out=benchmarks/results/hosts_cpu.json    # 2 cores, ~10 min

Both launches run the same game (`--game` flags on top of mia.py's smoke preset) in fresh workdirs; the 1-process
run is pinned to core 0 (`taskset`), process i of the 2-process launch to core i. Reports each launch's wall (the
last process's exit), its training seconds (results.json), the ratios 2-process / 1-process, and whether the two
results.json agree (timings aside). On a machine with one GPU, `--cores=` (empty) runs both processes unpinned: the
2-process launch then shares the GPU, each process needs XLA_PYTHON_CLIENT_MEM_FRACTION below 0.5 (docs/hosts.md).
"""

import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks.provenance import commit, machine  # noqa: E402

flags.DEFINE_list("game", ["--preset=smoke", "--attack=loss"], "mia.py's flags of the game (the workdir and the "
                  "launch flags are added).")
flags.DEFINE_list("cores", ["0", "1"], "The core of each process (empty: unpinned, e.g. processes sharing a GPU).")
flags.DEFINE_string("out", None, "Also write the JSON here.")
FLAGS = flags.FLAGS


def _port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(workdir: str, n: int) -> dict:
  """Runs mia.py as n processes (n = 1: a plain run) and returns its wall, training seconds and results."""
  port, env = _port(), dict(os.environ, PYTHONPATH=REPO)
  procs = []
  for i in range(n):
    pin = ["taskset", "-c", FLAGS.cores[i]] if FLAGS.cores else []
    hosts = [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={n}", f"--process_id={i}"] if n > 1 else []
    procs.append(subprocess.Popen([*pin, sys.executable, os.path.join(REPO, "experiments", "mia.py"), *FLAGS.game,
                                   f"--workdir={workdir}", *hosts], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, env=env))
  t0 = time.time()
  outs = [p.communicate()[0] for p in procs]
  wall = time.time() - t0
  if any(p.returncode for p in procs):
    raise SystemExit(f"a process of the {n}-process launch failed:\n" + "\n".join(o[-2000:] for o in outs))
  results = json.load(open(os.path.join(workdir, "results.json")))
  return dict(wall_seconds=round(wall, 1), train_seconds=round(results["seconds"]["train"], 1), results=results)


def main(argv):
  del argv
  root = tempfile.mkdtemp(prefix="hosts_bench_")
  try:
    one = launch(os.path.join(root, "one"), 1)
    two = launch(os.path.join(root, "two"), 2)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  same = ({k: v for k, v in one["results"].items() if k != "seconds"}
          == {k: v for k, v in two["results"].items() if k != "seconds"})
  ratio = dict(wall=round(two["wall_seconds"] / one["wall_seconds"], 3),
               train=round(two["train_seconds"] / one["train_seconds"], 3))
  pinned = "each process on one core" if FLAGS.cores else "unpinned"
  out = dict(
      what=f"mia.py's game ({' '.join(FLAGS.game)}) on 1 process and on 2 (jax.distributed, localhost), {pinned}",
      summary=(f"2 processes / 1: wall {ratio['wall']:.2f}x ({two['wall_seconds']:.0f} s against "
               f"{one['wall_seconds']:.0f} s), training {ratio['train']:.2f}x ({two['train_seconds']:.0f} s against "
               f"{one['train_seconds']:.0f} s); results.json {'equal' if same else 'DIFFERENT'} (timings aside)"),
      one_process={k: v for k, v in one.items() if k != "results"},
      two_processes={k: v for k, v in two.items() if k != "results"},
      ratio=ratio, results_equal=same,
      provenance=dict(command=" ".join(["python", "benchmarks/hosts.py"] + sys.argv[1:]), commit=commit(),
                      date=datetime.date.today().isoformat(), machine=machine()))
  from mlpriv_jax.utils import print_json
  print_json(out, FLAGS.out)


if __name__ == "__main__":
  app.run(main)
