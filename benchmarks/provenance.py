"""Where a benchmark's figures come from: this machine (read from /proc) and this checkout's commit."""

import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def machine() -> str:
  """`2-core Intel(R) Xeon(R) ..., 24 GiB, no GPU` from /proc (the figures' hardware)."""
  model = "unknown CPU"
  try:
    with open("/proc/cpuinfo") as f:
      model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    with open("/proc/meminfo") as f:
      mem = int(next(line.split()[1] for line in f if line.startswith("MemTotal"))) / 2**20
  except OSError:
    mem = 0
  return f"{os.cpu_count()}-core {model}, {mem:.0f} GiB, no GPU"


def commit() -> str:
  """The short commit of this checkout, `+changes` when tracked files differ from it."""
  out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
  dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                         text=True).stdout.strip()
  return out.strip() + ("+changes" if dirty else "")
