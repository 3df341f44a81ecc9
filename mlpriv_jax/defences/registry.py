"""Output defences by name, each with one strength parameter: what it means, its range, the threat it addresses.

`REGISTRY[name]` is a `DefenceSpec`; `assemble(names, ...)` makes once what the defences need from the defender
(MAD's proxy: a randomly initialised copy of the victim's architecture, the paper's choice; MemGuard's defence
classifier: trained on the victim's outputs for members against held-out images), and `build(name, strength,
**kit._asdict())` makes each `Defence`.
"""

from typing import Callable, FrozenSet, NamedTuple, Optional

import jax
import jax.numpy as jnp

import numpy as np

from mlpriv_jax import streams, train
from mlpriv_jax.defences import baselines
from mlpriv_jax.defences.base import Defence, identity
from mlpriv_jax.defences.dawn import dawn
from mlpriv_jax.defences.mad import mad, proxy_from_model
from mlpriv_jax.defences.memguard import defence_classifier_score, memguard, train_defence_classifier
from mlpriv_jax.defences.modelguard import modelguard_w
from mlpriv_jax.defences.misinformation import adaptive_misinformation
from mlpriv_jax.errors import UserError

EXTRACTION, MEMBERSHIP = "extraction", "membership"
BOTH = frozenset({EXTRACTION, MEMBERSHIP})


class DefenceSpec(NamedTuple):
  name: str
  strength: Optional[str]        # what the strength means; None: the defence takes none
  valid: Callable[[float], bool]  # whether a strength lies in range
  valid_text: str                # the range, for messages
  threats: FrozenSet[str]        # what it defends against: extraction, membership or both
  needs: FrozenSet[str]          # 'proxy' (MAD), 'members' (MemGuard's classifier), 'master' (DAWN's secret)
  make: Callable[..., Defence]
  description: str
  keeps_label: bool = False      # its answer's argmax is the victim's, for every query, by construction
  default: Optional[float] = None  # the strength an attacker who knows the defence but not its strength guesses


_NONE = lambda s: True
_NONNEG = lambda s: s >= 0
REGISTRY = {d.name: d for d in (
    DefenceSpec("none", None, _NONE, "", BOTH, frozenset(), lambda s, **_: identity(), "the undefended softmax",
                keeps_label=True),
    DefenceSpec("label", None, _NONE, "", BOTH, frozenset(), lambda s, **_: baselines.label_only(),
                "the top-1 label only, as a one-hot vector", keeps_label=True),
    DefenceSpec("top1", None, _NONE, "", BOTH, frozenset(), lambda s, **_: baselines.top_k(1),
                "the top-1 probability, renormalised (a one-hot vector)", keeps_label=True),
    DefenceSpec("top3", None, _NONE, "", BOTH, frozenset(), lambda s, **_: baselines.top_k(3),
                "the three largest probabilities, renormalised", keeps_label=True),
    DefenceSpec("round1", None, _NONE, "", BOTH, frozenset(), lambda s, **_: baselines.rounding(1),
                "probabilities rounded to 1 decimal (Tramer et al. 2016)", keeps_label=True),
    DefenceSpec("round2", None, _NONE, "", BOTH, frozenset(), lambda s, **_: baselines.rounding(2),
                "probabilities rounded to 2 decimals (Tramer et al. 2016)", keeps_label=True),
    DefenceSpec("gaussian", "std of the logit noise", _NONNEG, ">= 0", BOTH, frozenset(),
                lambda s, **_: baselines.logit_noise(s, "gaussian"), "Gaussian noise on log p", default=1.0),
    DefenceSpec("laplace", "scale of the logit noise", _NONNEG, ">= 0", BOTH, frozenset(),
                lambda s, **_: baselines.logit_noise(s, "laplace"), "Laplace noise on log p", default=1.0),
    DefenceSpec("revsig", "beta (gamma = 0.1)", lambda s: s > 0, "> 0", BOTH, frozenset(),
                lambda s, **_: baselines.reverse_sigmoid(s, 0.1), "reverse sigmoid (Lee et al. 2019)", default=0.5),
    DefenceSpec("mad", "L1 budget", _NONNEG, ">= 0", frozenset({EXTRACTION}), frozenset({"proxy"}),
                lambda s, proxy_probs, **_: mad(s, proxy_probs, oracle="extreme"),
                "Prediction Poisoning, MAD (Orekondy et al. 2020)", default=1.0),
    DefenceSpec("mad_argmax", "L1 budget", _NONNEG, ">= 0", frozenset({EXTRACTION}), frozenset({"proxy"}),
                lambda s, proxy_probs, **_: mad(s, proxy_probs, oracle="argmax"),
                "Prediction Poisoning keeping the top-1 label, MAD-argmax (Orekondy et al. 2020)", default=1.0),
    DefenceSpec("memguard", "expected L1 budget", _NONNEG, ">= 0", frozenset({MEMBERSHIP}), frozenset({"members"}),
                lambda s, memguard_params, **_: memguard(s, memguard_params),
                "MemGuard (Jia et al. 2019): noise that fools a membership classifier, labels kept", default=1.0),
    DefenceSpec("modelguard_w", "L1 budget", _NONNEG, ">= 0", frozenset({EXTRACTION}), frozenset(),
                lambda s, **_: modelguard_w(s),
                "ModelGuard-W (Tang et al. 2024): the release of most cross-entropy within an L1 ball, label kept",
                keeps_label=True, default=1.0),
    DefenceSpec("misinfo", "OOD threshold tau on the max probability", lambda s: 0 < s <= 1, "(0, 1]",
                frozenset({EXTRACTION}), frozenset(), lambda s, **_: adaptive_misinformation(tau=s),
                "Adaptive Misinformation (Kariyappa & Qureshi 2020)", default=0.7),
    DefenceSpec("dawn", "fraction of each client's answers watermarked", lambda s: 0 < s < 1, "in (0, 1)",
                frozenset({EXTRACTION}), frozenset({"master"}),
                lambda s, watermark_master, **_: dawn(s, watermark_master),
                "DAWN (Szyller et al. 2021): a keyed few of each client's answers changed, to prove a theft later",
                default=0.005),
)}


def get(name: str) -> DefenceSpec:
  if name not in REGISTRY:
    raise UserError(f"unknown defence {name!r}; known: {', '.join(REGISTRY)}")
  return REGISTRY[name]


def check(name: str, strength: Optional[float] = None, *, threat: Optional[str] = None) -> DefenceSpec:
  """The spec of `name`, after checking the strength's range and (if given) that it addresses `threat`."""
  spec = get(name)
  if threat is not None and threat not in spec.threats:
    others = [n for n, s in REGISTRY.items() if threat in s.threats]
    raise UserError(f"{name} defends against {' and '.join(sorted(spec.threats))}, not {threat}; defences "
                    f"against {threat}: {', '.join(others)}")
  if spec.strength is not None and strength is not None and not spec.valid(float(strength)):
    raise UserError(f"{name}: strength {strength:g} ({spec.strength}) is out of range; it must be {spec.valid_text}")
  return spec


def settings(name: str, strengths) -> list:
  """The (name, strength) points to evaluate: each valid strength, or (name, None) for a parameter-free defence.

  Strengths outside the defence's range are an error (`check`).
  """
  spec = get(name)
  if spec.strength is None:
    return [(name, None)]
  for s in strengths:
    check(name, s)
  return [(name, float(s)) for s in strengths]


def label(name: str, strength: Optional[float]) -> str:
  """`mad@0.5`, or `label` for a parameter-free defence: the key of a defence setting in results."""
  return name if strength is None else f"{name}@{strength:g}"


def make_proxy(model, key, input_shape=(32, 32, 3)) -> Callable:
  """MAD's proxy: a randomly initialised copy of the victim's architecture (Orekondy et al. 2020, Sec. 5)."""
  return proxy_from_model(model, model.init(key, jnp.zeros((1, *input_shape), jnp.float32)))


def make_memguard_classifier(model, variables, member_images, nonmember_images, key, *, num_steps: int = 2000):
  """MemGuard's phase I: the defender's classifier on the victim's softmax for members against non-members."""
  if len(member_images) < 1 or len(nonmember_images) < 1:
    raise UserError("memguard needs member and non-member images for its defence classifier")
  members = jax.nn.softmax(train.predict(model, variables, member_images))
  nonmembers = jax.nn.softmax(train.predict(model, variables, nonmember_images))
  return train_defence_classifier(key, members, nonmembers, num_steps=num_steps)


class DefenderKit(NamedTuple):
  """What the defender makes once for its defences (`assemble`) and every `build` of them takes."""
  proxy_probs: Optional[Callable] = None   # MAD's proxy: x f32[B, H, W, C] -> probabilities f32[B, C]
  memguard_params: Optional[dict] = None   # MemGuard's defence classifier (its phase I), trained by the defender
  watermark_master: Optional[bytes] = None  # DAWN's master secret


def assemble(names, model, key, *, variables=None, input_shape=(32, 32, 3), members=None, nonmembers=None,
             guard_steps: int = 2000, log: Optional[Callable] = None) -> DefenderKit:
  """What the named defences need, made once: the one home of MAD's proxy, MemGuard's classifier and DAWN's master
  secret (from `derive(key, OWNERSHIP, DAWN_MASTER)`).

  MAD's proxy is a randomly initialised copy of the victim's architecture `model` (Orekondy et al. 2020, Sec. 5),
  from `fold_in(key, PROXY)`. MemGuard's classifier (Jia et al. 2019, phase I) is trained on the victim's softmax
  (`model` with `variables`) for as many `members` as `nonmembers` (the shorter list's length of each), from
  `fold_in(key, GUARD)`; with `log`, its accuracy on them is reported.
  """
  specs = [get(n) for n in names]
  kit = DefenderKit()
  if any("master" in s.needs for s in specs):
    bits = jax.random.bits(streams.derive(key, streams.OWNERSHIP, streams.DAWN_MASTER), (32,), jnp.uint8)
    kit = kit._replace(watermark_master=np.asarray(bits).tobytes())
  if any("proxy" in s.needs for s in specs):
    kit = kit._replace(proxy_probs=make_proxy(model, streams.derive(key, streams.PROXY), input_shape))
  if any("members" in s.needs for s in specs):
    if variables is None or members is None or nonmembers is None:
      raise UserError("memguard needs the victim's variables and member and non-member images for its defence "
                      "classifier")
    n = min(len(members), len(nonmembers))
    params = make_memguard_classifier(model, variables, members[:n], nonmembers[:n],
                                      streams.derive(key, streams.GUARD), num_steps=guard_steps)
    kit = kit._replace(memguard_params=params)
    if log is not None:
      g = lambda x: np.asarray(defence_classifier_score(params, jax.nn.softmax(train.predict(model, variables, x))))
      acc = ((g(members[:n]) > 0.5).mean() + (g(nonmembers[:n]) <= 0.5).mean()) / 2
      log(f"memguard: defence classifier accuracy {acc:.3f} on {n} members + {n} non-members")
  return kit


def build(name: str, strength: Optional[float] = None, *, proxy_probs=None, memguard_params=None,
          watermark_master=None) -> Defence:
  """The defence `name` at `strength`, from what `assemble` made (`build(name, s, **kit._asdict())`)."""
  spec = check(name, strength)
  if spec.strength is not None and strength is None:
    raise UserError(f"{name} needs a strength ({spec.strength}, {spec.valid_text})")
  if "proxy" in spec.needs and proxy_probs is None:
    raise UserError(f"{name} needs a proxy model: make it with defences.assemble")
  if "members" in spec.needs and memguard_params is None:
    raise UserError(f"{name} needs a trained defence classifier: make it with defences.assemble")
  if "master" in spec.needs and watermark_master is None:
    raise UserError(f"{name} needs the defender's master secret: make it with defences.assemble")
  return spec.make(None if strength is None else float(strength), proxy_probs=proxy_probs,
                   memguard_params=memguard_params, watermark_master=watermark_master)


def attacker_copy(name: str, strength: Optional[float], model, variables, key, *, input_shape=(32, 32, 3),
                  members=None, nonmembers=None, guard_steps: int = 500) -> Defence:
  """The attacker's own copy of the defence `name` at `strength` (Kerckhoffs: it knows the defence, not the
  defender's secrets): what the defence needs made by the defender's recipe (`assemble`) from the attacker's model
  `model` with `variables` (a shadow): MAD's proxy a random copy of the architecture, MemGuard's classifier on that
  model's `members` against `nonmembers`."""
  kit = DefenderKit()
  if get(name).needs:
    kit = assemble([name], model, key, variables=variables, input_shape=input_shape, members=members,
                   nonmembers=nonmembers, guard_steps=guard_steps)
  return build(name, strength, **kit._asdict())
