"""What every absl program shares: one-line errors, the workdir claim, key streams."""

import json
import os
import sys

import numpy as np
from absl import app

# Key streams: fold_in(key(seed), STREAM_*) (STYLE.md: streams addressed by index).
STREAM_TRAIN, STREAM_KEEP = 0, 1


def run(main):
  """app.run(main), with every expected error (bad input, missing data, a foreign
  checkpoint) reported as one line on stderr and exit status 2, no traceback."""
  def guarded(argv):
    try:
      return main(argv)
    except (ValueError, FileNotFoundError) as e:  # DataError and CheckpointError are ValueErrors
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.exit(2)
    except KeyboardInterrupt:
      print("interrupted: the last finished epoch is checkpointed; rerun with the same --workdir to resume",
            file=sys.stderr, flush=True)
      sys.exit(130)
  def quiet(argv):
    from absl import logging
    logging.set_verbosity(logging.WARNING)  # hides JAX's "no TPU found" INFO line
    return guarded(argv)
  app.run(quiet)


def setting(flag_values, presets, name):
  """An explicit flag's value, else the chosen preset's."""
  value = flag_values[name].value
  return value if value is not None else presets[flag_values.preset][name]


def arch_family(arch: str) -> str:
  from mlpriv_jax.models import canonical_name
  name = canonical_name(arch)
  if name.startswith("wrn"):
    return "wrn"
  if name.startswith("resnet") and name not in ("resnet18", "resnet18_imagenet"):
    return "resnet_cifar"
  return "other"


def claim_workdir(workdir: str, config: dict, keys) -> None:
  """Writes config.json, or checks that an existing one describes the same run."""
  from mlpriv_jax.utils import write_json
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    for k in keys:
      if k in old and old[k] != config[k]:
        raise ValueError(f"{workdir} holds a run with {k}={old[k]!r}, not {config[k]!r}; "
                         f"use another --workdir (nothing was overwritten)")
  os.makedirs(workdir, exist_ok=True)
  write_json(path, config)


def save_npy(path: str, array) -> None:
  from mlpriv_jax.utils import atomic_write
  atomic_write(path, lambda f: np.save(f, np.asarray(array)))


def load_json(path: str):
  """The JSON at path, or None if there is none (partial results of a killed run resume from it)."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def plot_curve(path: str, curve, title: str) -> None:
  """Accuracy and fidelity against queries, as a PNG (matplotlib, Agg backend)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from mlpriv_jax.utils import atomic_write
  fig, ax = plt.subplots(figsize=(5, 3.5))
  q = [c["queries"] for c in curve]
  ax.plot(q, [c["accuracy"] for c in curve], "o-", label="accuracy")
  ax.plot(q, [c["fidelity"] for c in curve], "s-", label="fidelity")
  ax.set_xlabel("queries")
  ax.set_ylim(0, 1)
  ax.set_title(title, fontsize=8)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
  plt.close(fig)
