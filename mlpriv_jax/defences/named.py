"""Defences by the names the programs use, with one strength parameter `epsilon`."""

from mlpriv_jax.defences import baselines
from mlpriv_jax.defences.base import Defence, identity
from mlpriv_jax.defences.mad import mad
from mlpriv_jax.defences.memguard import memguard
from mlpriv_jax.defences.misinformation import adaptive_misinformation

# name -> what epsilon means (None: the defence takes no strength).
DEFENCES = {
    "none": None, "label": None, "top1": None, "top3": None, "round1": None, "round2": None,
    "gaussian": "std of the logit noise", "laplace": "scale of the logit noise",
    "revsig": "beta (gamma = 0.1)", "mad": "L1 budget", "mad_argmax": "L1 budget",
    "memguard": "expected L1 budget", "misinfo": "OOD threshold tau on the max probability",
}


def epsilon_in_range(name: str, epsilon: float) -> bool:
  """Whether `epsilon` is a valid strength for `name` (misinfo's tau lies in (0, 1], revsig's beta > 0)."""
  check_name(name)
  if name == "misinfo":
    return 0 < epsilon <= 1
  if name == "revsig":
    return epsilon > 0
  return epsilon >= 0


def takes_epsilon(name: str) -> bool:
  check_name(name)
  return DEFENCES[name] is not None


def check_name(name: str) -> None:
  if name not in DEFENCES:
    raise ValueError(f"unknown defence {name!r}; known: {', '.join(DEFENCES)}")


def make_defence(name: str, epsilon: float = 0.0, *, proxy_probs=None, memguard_params=None) -> Defence:
  """Builds the named defence; `proxy_probs` is MAD's proxy, `memguard_params` MemGuard's classifier."""
  check_name(name)
  if DEFENCES[name] is not None and not epsilon >= 0:
    raise ValueError(f"{name}: epsilon must be >= 0, got {epsilon}")
  if name == "none":
    return identity()
  if name == "label":
    return baselines.label_only()
  if name.startswith("top"):
    return baselines.top_k(int(name[3:]))
  if name.startswith("round"):
    return baselines.rounding(int(name[5:]))
  if name in ("gaussian", "laplace"):
    return baselines.logit_noise(epsilon, name)
  if name == "revsig":
    return baselines.reverse_sigmoid(epsilon, 0.1)
  if name in ("mad", "mad_argmax"):
    if proxy_probs is None:
      raise ValueError(f"{name} needs a proxy model")
    return mad(epsilon, proxy_probs, oracle="argmax" if name == "mad_argmax" else "extreme")
  if name == "memguard":
    if memguard_params is None:
      raise ValueError("memguard needs a trained defence classifier")
    return memguard(epsilon, memguard_params)
  return adaptive_misinformation(tau=epsilon)
