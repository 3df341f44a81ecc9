"""Presets of experiments/defend.py: a trained victim under every output defence."""

from mlpriv_jax.lab.defend import DefendRun

PRESETS = ("smoke", "cpu", "paper")
ALL = ("none", "label", "top1", "round2", "gaussian", "revsig", "misinfo", "mad", "mad_argmax", "memguard")


def smoke() -> DefendRun:
  """500 test images, strengths 0.5 and 1.

  Evidence:
    command: python experiments/defend.py --preset=smoke --victim=runs/victim --workdir=runs/defend
    machine: 2-core AMD EPYC, 24 GiB, no GPU
    wall: 42 s
    headline: undefended accuracy 0.884; lowest 0.000 (misinfo@1); 10 of 16 settings keep every label
    result: benchmarks/results/presets/defend_smoke.json (7e35a0a, 2026-12-06)
  """
  return DefendRun(defences=ALL, strengths=(0.5, 1.0), num_test=500, num_guard=500, guard_steps=500)


def cpu() -> DefendRun:
  """2,000 test images, strengths 0.1, 0.5 and 1.

  Evidence: unmeasured (never run alone on the CPU preset's victim; the smoke preset's figures are measured)
  """
  return DefendRun(defences=ALL, strengths=(0.1, 0.5, 1.0), num_test=2000, num_guard=2000, guard_steps=2000)


def paper() -> DefendRun:
  """Every test image, strengths 0.1 to 2.

  Evidence: unmeasured (a GPU preset)
  """
  return DefendRun(defences=ALL, strengths=(0.1, 0.2, 0.5, 1.0, 1.5, 2.0), num_test=0, num_guard=5000,
                   guard_steps=5000)
