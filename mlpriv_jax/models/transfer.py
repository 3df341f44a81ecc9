"""A surrogate built on the attacker's pretrained feature extractor (CloudLeak, Yu et al., NDSS 2020, Sec. IV: the
adversary takes a local model pretrained on public data, freezes its feature layers and retrains the last one on the
victim's answers).

`transfer(extractor, variables, num_classes, tune)` is the extractor's architecture with a new linear head for the
victim's classes. With tune='head' (the default) every layer up to the pooled features holds the extractor's weights
and BatchNorm statistics, runs in eval mode (no batch statistics, no dropout, no gradient past the pooled features)
and is never updated: only the head trains. With tune='last_block' the architecture's last block also trains,
starting from the extractor's weights (for features learnt on data less like the victim's); everything before it
stays frozen.
The extractor's variables are the model's `pretrained`, which the training engine starts from; it restores the frozen
ones after every step. For inference the result is an ordinary zoo model (its `spec` rebuilds it with `get_model`).

`load_extractor` reads an extractor artifact (what `experiments/train.py` writes after training on the attacker's
labelled pool) and checks it against the victim the attacker faces.
"""

from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlpriv_jax.errors import UserError
from mlpriv_jax.models import artifact, zoo
from mlpriv_jax.models.architectures import TUNES


def head_name(params) -> str:
  """The top-level parameter name of a zoo model's head (its one dense layer)."""
  dense = [k for k in params if k.startswith("Dense_")]
  if len(dense) != 1:
    raise UserError(f"expected one dense head among the model's layers, found {dense or 'none'}")
  return dense[0]


def tail_layers(module, input_shape) -> Tuple[str, ...]:
  """The top-level layers a zoo module creates from its last block on (its `tail` mark), head included, in order."""
  seen, tail = [], []

  def record(f, args, kwargs, context):
    path = context.module.path
    if context.method_name == "tail" and path == ():
      tail.append(len(seen))
    elif context.method_name == "__call__" and len(path) == 1 and path[0] not in seen:
      seen.append(path[0])
    return f(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
  if len(tail) != 1:
    raise UserError(f"{type(module).__name__} marks {len(tail)} last blocks; a zoo model marks one")
  return tuple(seen[tail[0]:])


def transfer(extractor: zoo.Model, variables, num_classes: int, tune: str = "head",
             input_shape=(32, 32, 3)) -> zoo.Model:
  """The extractor's body under a new head of `num_classes` outputs (initialised by the model's `init`): frozen,
  or (tune='last_block') frozen up to its last block, which fine-tunes from the extractor's weights."""
  if not hasattr(extractor.module, "tune"):
    raise UserError(f"{extractor.name} is not a zoo model; a pretrained extractor must be one")
  if tune not in TUNES:
    raise UserError(f"unknown tune {tune!r}; known: {', '.join(TUNES)}")
  head = head_name(variables["params"])
  kept = {"params": {k: v for k, v in variables["params"].items() if k != head},
          "batch_stats": dict(variables.get("batch_stats", {}))}
  spec = dict(extractor.spec, num_classes=int(num_classes)) if extractor.spec else None
  module = extractor.module.clone(num_classes=int(num_classes), tune=tune)
  tuned = tuple(k for k in tail_layers(module, input_shape) if k != head) if tune == "last_block" else ()
  return zoo._from_module(extractor.name, int(num_classes), module, spec)._replace(
      pretrained=jax.tree.map(jnp.asarray, kept), fine_tuned=tuned)


def load_extractor(path: str, *, input_shape, num_classes: int, arch: Optional[str] = None,
                   victim_data: Optional[str] = None, tune: str = "head") -> zoo.Model:
  """The surrogate on the extractor artifact at `path` for a victim of `input_shape` and `num_classes` (`tune`: what
  trains, as `transfer`).

  Refused, in one line: an extractor of another input shape; of another architecture than `arch` (the surrogate
  asked for); one whose head does not match the class count of the data it records; one trained on `victim_data`
  (the victim's own dataset: the attacker pretrains on its public pool, never on the victim's data).
  """
  model, variables, meta = artifact.load_model(path)
  where = meta.get("artifact", path)
  if tuple(meta["input_shape"]) != tuple(input_shape):
    raise UserError(f"the extractor at {where} takes images of shape {tuple(meta['input_shape'])}, the victim "
                    f"{tuple(input_shape)}")
  if arch is not None and zoo.canonical_name(arch) != model.name:
    raise UserError(f"the extractor at {where} is a {model.name}; the surrogate asked for is {arch}")
  data = meta.get("data") or {}
  if data.get("num_classes") not in (None, model.num_classes):
    raise UserError(f"the extractor at {where} has {model.num_classes} outputs but records training data of "
                    f"{data['num_classes']} classes")
  same = lambda a, b: a is not None and b is not None and a.removesuffix("_jpeg") == b.removesuffix("_jpeg")
  if same(data.get("name"), victim_data):
    raise UserError(f"the extractor at {where} was trained on {victim_data}, the victim's own data; pretrain it on "
                    f"the attacker's pool (experiments/train.py --dataset=<query set>)")
  return transfer(model, variables, num_classes, tune, tuple(input_shape))
