"""Model registry: a name in, a pure `(init, apply)` pair out."""

import re
from typing import Any, Callable, NamedTuple, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlpriv_jax.errors import UserError, integer
from mlpriv_jax.models import architectures as arch
from mlpriv_jax.models.layers import resolve_conv_impl

# The survey's short names (Tables 1-2) are aliases.
ALIASES = {"wres16": "wrn16_8", "wres22": "wrn22_8", "res32": "resnet32", "res18": "resnet18",
           "res20": "resnet20", "res56": "resnet56"}

_FIXED = {
    "resnet18": lambda **kw: arch.ResNet18(stem="cifar", **kw),
    "resnet18_imagenet": lambda **kw: arch.ResNet18(stem="imagenet", **kw),
    "vgg16": lambda **kw: arch.VGG(**kw),
    # Narrow stand-ins (all widths / 8) for the smoke presets on CPU.
    "resnet18_narrow": lambda **kw: arch.ResNet18(stem="cifar", width_divisor=8, **kw),
    "resnet18_imagenet_narrow": lambda **kw: arch.ResNet18(stem="imagenet", width_divisor=8, **kw),
    "vgg16_narrow": lambda **kw: arch.VGG(width_divisor=8, **kw),
    "vgg11": lambda **kw: arch.VGG(cfg=arch.VGG11_CFG, **kw),
    "vgg11_narrow": lambda **kw: arch.VGG(cfg=arch.VGG11_CFG, width_divisor=8, **kw),
    "cnn_small": lambda **kw: arch.SmallCNN(widths=(32, 64, 128), **kw),
    "cnn_tiny": lambda **kw: arch.SmallCNN(widths=(8, 16, 32), **kw),
}
_WRN = re.compile(r"wrn(\d+)_(\d+)$")
_CIFAR_RESNET = re.compile(r"resnet(\d+)$")
# Names listed in errors and docs; any wrn<6n+4>_<k> and resnet<6n+2> also parse.
# Any name with the suffix `_gn` is the same network with GroupNorm for BatchNorm (for DP-SGD).
KNOWN = ("wrn16_4", "wrn16_8", "wrn22_8", "wrn28_2", "wrn28_10", "resnet20", "resnet32", "resnet56",
         "resnet18", "resnet18_imagenet", "vgg16", "vgg11", "resnet18_narrow", "vgg16_narrow", "vgg11_narrow",
         "cnn_small", "cnn_tiny", "cnn_small_gn", "wrn16_4_gn", "resnet20_gn")
GROUP_NORM_SUFFIX = "_gn"


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class Model(NamedTuple):
  """A model as a pair of pure functions.

  init(key, sample_x) -> variables
  apply(variables, x, *, train, key=None) -> (logits f32[N, C], new_model_state)
  features(variables, x) -> (logits f32[N, C], penultimate features f32[N, D]), eval mode

  `spec` holds the keyword arguments of `get_model` that rebuild it (a model
  artifact stores it; see `models.save_model`). `pretrained`: variables that
  training starts from ({'params': {name: ...}, 'batch_stats': {name: ...}},
  top-level names; `models.transfer`); those of the layers in `fine_tuned` then
  train, the others are frozen (never changed).
  """
  name: str
  num_classes: int
  init: Callable[..., Any]
  apply: Callable[..., Any]
  module: nn.Module
  features: Callable[..., Any]
  spec: Any = None
  pretrained: Any = None
  fine_tuned: Tuple[str, ...] = ()


def _split_group_norm(name: str):
  """('wrn16_4', True) for 'wrn16_4_gn'; (name, False) otherwise."""
  gn = name.endswith(GROUP_NORM_SUFFIX)
  return (name[: -len(GROUP_NORM_SUFFIX)] if gn else name), gn


def canonical_name(name: str) -> str:
  """Resolves aliases; raises a one-line UserError listing the known names."""
  base, gn = _split_group_norm(name)
  base = ALIASES.get(base, base)
  m, r = _WRN.match(base), _CIFAR_RESNET.match(base)
  if base in _FIXED or (m and (int(m[1]) - 4) % 6 == 0) or (r and base != "resnet18" and (int(r[1]) - 2) % 6 == 0):
    return base + GROUP_NORM_SUFFIX if gn else base
  raise UserError(f"unknown architecture {name!r}; known: {', '.join(KNOWN)} "
                   f"(aliases: {', '.join(f'{a}={b}' for a, b in ALIASES.items())})")


def get_model(name: str, num_classes: int, *, dtype: Any = jnp.float32, conv_impl: str = "auto",
              mean: Sequence[float] = arch.CIFAR_MEAN, std: Sequence[float] = arch.CIFAR_STD,
              dropout_rate: float = 0.0) -> Model:
  """Builds a zoo model by name (`wrn16_8`, `resnet32`, `vgg16`, aliases `wres16`, GroupNorm `wrn16_4_gn`, ...).

  Args:
    name: architecture name or alias.
    num_classes: output classes.
    dtype: compute dtype (e.g. jnp.bfloat16); parameters are always float32.
    conv_impl: 'auto' (lax, but im2col on CPU where the model is vmapped: `train_k`'s vmapped model
      axis and DP-SGD's per-example gradients), 'im2col' or 'lax'.
    mean, std: per-channel input normalisation, applied inside the model.
    dropout_rate: WRN only.
  """
  integer(num_classes, "num_classes", at_least=2)
  name = canonical_name(name)
  resolve_conv_impl(conv_impl)  # validates the name
  dtype_name = jnp.dtype(dtype).name
  if dtype_name not in DTYPES:
    raise UserError(f"unknown compute dtype {dtype_name!r}; known: {', '.join(DTYPES)}")
  if len(mean) != len(std) or not all(s > 0 for s in std):
    raise UserError(f"mean and std must have one entry per channel and std > 0, got {mean} and {std}")
  base, gn = _split_group_norm(name)
  kw = dict(num_classes=int(num_classes), mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std),
            dtype=DTYPES[dtype_name], conv_impl=conv_impl, norm_kind="group" if gn else "batch")
  if base in _FIXED:
    module = _FIXED[base](**kw)
  elif m := _WRN.match(base):
    module = arch.WideResNet(depth=int(m[1]), widen_factor=int(m[2]), dropout_rate=dropout_rate, **kw)
  else:
    module = arch.CifarResNet(depth=int(_CIFAR_RESNET.match(base)[1]), **kw)
  spec = dict(arch=name, num_classes=int(num_classes), mean=list(kw["mean"]), std=list(kw["std"]),
              dtype=dtype_name, dropout_rate=float(dropout_rate))
  return _from_module(name, int(num_classes), module, spec)


def from_spec(spec: dict, *, conv_impl: str = "auto") -> Model:
  """The model `get_model` built with the arguments recorded in `spec` (see `Model.spec`)."""
  missing = {"arch", "num_classes", "mean", "std"} - set(spec)
  if missing:
    raise UserError(f"model spec lacks {sorted(missing)}; it holds {sorted(spec)}")
  return get_model(spec["arch"], spec["num_classes"], mean=spec["mean"], std=spec["std"],
                   dtype=spec.get("dtype", "float32"), dropout_rate=spec.get("dropout_rate", 0.0),
                   conv_impl=conv_impl)


def with_conv_impl(model: Model, conv_impl: str) -> Model:
  """The same model (same parameters) computed with another conv implementation."""
  resolve_conv_impl(conv_impl)
  return _from_module(model.name, model.num_classes, model.module.clone(conv_impl=conv_impl), model.spec
                      )._replace(pretrained=model.pretrained, fine_tuned=model.fine_tuned)


def _from_module(name: str, num_classes: int, module: nn.Module, spec=None) -> Model:
  def init(key, sample_x):
    return module.init({"params": key, "dropout": key}, sample_x, train=False)

  def apply(variables, x, *, train: bool, key=None):
    if not train:
      return module.apply(variables, x, train=False), {}
    rngs = {"dropout": key} if key is not None else {}
    return module.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)

  def features(variables, x):
    logits, state = module.apply(variables, x, train=False, mutable=["intermediates"])
    return logits, state["intermediates"]["features"][0].astype(jnp.float32)

  return Model(name, num_classes, init, apply, module, features, spec)


def count_params(model: Model, input_shape=(1, 32, 32, 3)) -> int:
  """Parameter count through `jax.eval_shape` (no FLOPs, no memory)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(input_shape, jnp.float32))
  return sum(int(jnp.prod(jnp.array(p.shape))) for p in jax.tree.leaves(shapes["params"]))
