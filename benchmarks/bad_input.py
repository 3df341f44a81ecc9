r"""Every program against every class of mistake: runs each case and writes the table of what it printed.

  python benchmarks/bad_input.py                  # writes docs/bad_input.md (about 10 minutes on 2 cores)

Each case is one command line of `experiments/<program>.py`, run as a subprocess against a scratch folder holding
the things a clumsy user points a program at: a tiny trained victim (train.py's workdir), a file, a damaged data
file, a damaged artifact, a damaged config.json. The page records, per case, the exit status and the one line on
stderr; the script exits non-zero when a case ends otherwise than with exit 2 and one line, or when a file the
case pointed at changed.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from flax import serialization

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
TINY = ["--preset=smoke", "--arch=cnn_tiny", "--num_train=256", "--num_epochs=1", "--batch_size=32"]


def _run(program, args, timeout=600):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, os.path.join(REPO, "experiments", f"{program}.py"), *args],
                        capture_output=True, text=True, timeout=timeout, env=env)


def _fixtures(root):
  """The scratch folder's victim, file, damaged data, damaged artifact and damaged workdir."""
  victim = os.path.join(root, "victim")
  p = _run("train", [*TINY, f"--workdir={victim}"])
  assert p.returncode == 0, p.stderr[-2000:]
  f = os.path.join(root, "a_file")
  open(f, "w").write("not a folder\n")
  data = os.path.join(root, "data")
  os.makedirs(data)
  x = np.zeros((64, 32, 32, 3), np.uint8)
  np.savez(os.path.join(data, "cifar10.npz"), x_train=x, y_train=np.arange(64) % 10, x_test=x,
           y_test=np.arange(64) % 10)
  raw = open(os.path.join(data, "cifar10.npz"), "rb").read()
  for name in ("cifar10.npz", "cifar10_jpeg.npz"):   # cut short, as a killed copy
    open(os.path.join(data, name), "wb").write(raw[: len(raw) // 2])
  art = os.path.join(root, "edited")
  shutil.copytree(os.path.join(victim, "model"), art)
  payload = serialization.msgpack_restore(open(os.path.join(art, "model.msgpack"), "rb").read())
  payload["spec"] = payload["spec"].replace('"num_classes": 10', '"num_classes": "ten"')
  open(os.path.join(art, "model.msgpack"), "wb").write(serialization.msgpack_serialize(payload))
  damaged = os.path.join(root, "damaged_workdir")
  os.makedirs(damaged)
  open(os.path.join(damaged, "config.json"), "w").write('{"program": "extract", ')
  keys = os.path.join(root, "keys.json")
  open(keys, "w").write('{"clients": [{"name": "alice", "key": "short"}]}')
  good_keys = os.path.join(root, "good_keys.json")
  open(good_keys, "w").write('{"clients": [{"name": "alice", "key": "sk-alice-0123456789"}]}')
  no_secret, short = os.path.join(root, "dawn_no_secret.json"), os.path.join(root, "dawn_short.json")
  open(no_secret, "w").write('{"key": "0123456789abcdef0123456789abcdef"}')
  open(short, "w").write('{"secret": "00112233445566778899"}')
  return dict(victim=victim, file=f, data=data, art=art, damaged=damaged, keys=keys, good_keys=good_keys, root=root,
              no_secret=no_secret, short=short)


def cases(fx):
  """(program, mistake, args) of every case."""
  v, out = fx["victim"], os.path.join(fx["root"], "out")
  w = f"--workdir={out}"
  return [
      ("train", "unknown flag", [w, "--num_epoch=3"]),
      ("train", "value of the wrong type", [w, "--seed=abc"]),
      ("train", "unknown name", [w, "--arch=resnet33"]),
      ("train", "number out of range", [w, "--num_models=0"]),
      ("train", "NaN", [w, "--learning_rate=nan"]),
      ("train", "list of the wrong form", [w, "--milestones_epochs=abc"]),
      ("train", "--workdir is a file", [f"--workdir={fx['file']}"]),
      ("train", "damaged data file", [w, "--dataset=cifar10", f"--data_dir={fx['data']}"]),
      ("train", "another config in its workdir", [*TINY[:1], f"--workdir={v}", "--arch=cnn_small"]),
      ("verify", "missing required flag", [w, f"--suspect={v}"]),
      ("verify", "no suspect", [f"--victim={v}", w]),
      ("verify", "unknown name", [f"--victim={v}", f"--suspect={v}", w, "--verifiers=radioactive"]),
      ("verify", "number out of range", [f"--victim={v}", f"--suspect={v}", w, "--alpha=1.5"]),
      ("verify", "no ledger for DAWN", [f"--victim={v}", f"--suspect={v}", w, "--verifiers=dawn"]),
      ("verify", "damaged artifact", [f"--victim={fx['art']}", f"--suspect={v}", w]),
      ("verify", "another program's workdir", [f"--victim={v}", f"--suspect={v}", f"--workdir={v}"]),
      ("defend", "missing required flag", [w]),
      ("defend", "unknown name", [f"--victim={v}", w, "--defences=shield"]),
      ("defend", "number out of range", [f"--victim={v}", w, "--num_test=-1"]),
      ("defend", "no strength in range", [f"--victim={v}", w, "--defences=revsig", "--epsilons=0"]),
      ("defend", "damaged artifact", [f"--victim={fx['art']}", w]),
      ("defend", "another program's workdir", [f"--victim={v}", f"--workdir={v}"]),
      ("defend", "damaged config.json", [f"--victim={v}", f"--workdir={fx['damaged']}"]),
      ("extract", "unknown name", [f"--victim={v}", w, "--attack=stealer"]),
      ("extract", "number out of range", [f"--victim={v}", w, "--checkpoints=-1"]),
      ("extract", "checkpoint above the budget", [f"--victim={v}", w, "--budget=500", "--checkpoints=100,900"]),
      ("extract", "budget beyond the pool", [f"--victim={v}", w, "--budget=10000000"]),
      ("extract", "damaged artifact", [f"--victim={fx['art']}", w]),
      ("extract", "another program's workdir", [f"--victim={v}", f"--workdir={v}"]),
      ("extract", "--workdir is a file", [f"--victim={v}", f"--workdir={fx['file']}"]),
      ("extract", "a served model's flag without --victim_url", [f"--victim={v}", w, "--output_name=proba"]),
      ("extract", "no server at --victim_url", [f"--victim={v}", w, "--victim_url=http://127.0.0.1:9"]),
      ("mia", "unknown name", [w, "--attack=lira2"]),
      ("mia", "number out of range", [w, "--num_test=-1"]),
      ("mia", "budget too small for the attack", [w, "--budget=0"]),
      ("mia", "damaged data file", [w, "--dataset=cifar10", f"--data_dir={fx['data']}"]),
      ("mia", "another program's workdir", [f"--workdir={v}"]),
      ("mia", "half a multi-process launch", [w, "--num_processes=2"]),
      ("mia", "process id out of range", [w, "--coordinator_address=127.0.0.1:1", "--num_processes=2",
                                          "--process_id=2"]),
      ("mia", "NaN coordinator timeout", [w, "--coordinator_timeout=nan"]),
      ("mia", "a coordinator that never answers", [w, "--coordinator_address=127.0.0.1:1", "--num_processes=2",
                                                   "--process_id=1", "--coordinator_timeout=2"]),
      ("arena", "unknown name", [w, "--defences=shield"]),
      ("arena", "number out of range", [w, "--num_shadows=-1"]),
      ("arena", "list of the wrong form", [w, "--budgets=100,abc"]),
      ("arena", "another program's workdir", [f"--workdir={v}"]),
      ("arena", "--workdir is a file", [f"--workdir={fx['file']}"]),
      ("survey_tables", "unknown name", [w, "--surrogates=res50"]),
      ("survey_tables", "damaged data file", [w, "--preset=cpu", f"--data_dir={fx['data']}"]),
      ("survey_tables", "another program's workdir", [f"--workdir={v}"]),
      ("serve", "missing required flag", [f"--victim={v}"]),
      ("serve", "damaged keys file", [f"--victim={v}", f"--keys_file={fx['keys']}", "--port=0"]),
      ("serve", "damaged artifact", [f"--victim={fx['art']}", f"--keys_file={fx['good_keys']}", "--port=0"]),
      ("serve", "number out of range", [f"--victim={v}", f"--keys_file={fx['keys']}", "--port=70000"]),
      ("serve", "NaN", [f"--victim={v}", f"--keys_file={fx['keys']}", "--body_timeout=nan"]),
      ("serve", "DAWN without its key file", [f"--victim={v}", f"--keys_file={fx['good_keys']}", "--port=0",
                                              "--defence=dawn", "--strength=0.005"]),
      ("serve", "DAWN key file without a secret", [f"--victim={v}", f"--keys_file={fx['good_keys']}", "--port=0",
                                                   "--defence=dawn", "--strength=0.005",
                                                   f"--dawn_key_file={fx['no_secret']}"]),
      ("serve", "DAWN secret of 10 bytes", [f"--victim={v}", f"--keys_file={fx['good_keys']}", "--port=0",
                                            "--defence=dawn", "--strength=0.005", f"--dawn_key_file={fx['short']}"]),
  ]


def _digest(root):
  h = hashlib.sha256()
  for r, ds, fs in sorted(os.walk(root)):
    ds.sort()
    for f in sorted(fs):
      if f != ".lock":
        h.update(os.path.join(r, f).encode() + open(os.path.join(r, f), "rb").read())
  return h.hexdigest()


def main():
  root = tempfile.mkdtemp(prefix="mlpriv_bad_input_")
  try:
    fx = _fixtures(root)
    rows, bad = [], 0
    for program, mistake, args in cases(fx):
      before = {k: _digest(fx[k]) for k in ("victim", "art", "damaged", "data")}
      p = _run(program, args)
      lines = [line for line in p.stderr.strip().splitlines() if line.strip()]
      changed = [k for k in before if _digest(fx[k]) != before[k]]
      ok = p.returncode == 2 and len(lines) == 1 and not changed
      bad += not ok
      shown = " ".join(a.replace(root + "/", "") for a in args)
      line = (lines[-1] if lines else "").replace(root + "/", "")
      verdict = "" if ok else " **not one line and exit 2" + ("; changed " + ", ".join(changed) if changed else "")
      verdict += "**" if verdict else ""
      rows.append(f"| {program} | {mistake} | `{shown}` | {p.returncode} | {line.replace('|', '/')} |{verdict}")
      print(rows[-1], flush=True)
      shutil.rmtree(os.path.join(root, "out"), ignore_errors=True)
    page = ["# Bad input: what each program prints", "",
            "Generated by `python benchmarks/bad_input.py`: every case run as a subprocess; paths are relative to its "
            "scratch folder (`victim` is a tiny train.py workdir, `edited` a copy of its artifact with "
            "`num_classes` edited to a string, `data/cifar10.npz` and `data/cifar10_jpeg.npz` data files cut in "
            "half, `damaged_workdir` holds a config.json cut short, `keys.json` a key too short, "
            "`dawn_no_secret.json` and `dawn_short.json` DAWN key files without a secret and with one of 10 bytes). "
            "Every case must end with exit status 2, one line on stderr, and no file it pointed at changed.", "",
            "| program | mistake | arguments | exit | stderr |", "|---|---|---|---|---|", *rows, ""]
    with open(os.path.join(REPO, "docs", "bad_input.md"), "w") as f:
      f.write("\n".join(page))
    print(f"{len(rows)} cases, {bad} not one line and exit 2; docs/bad_input.md written")
    return 1 if bad else 0
  finally:
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
  sys.exit(main())
