"""A surrogate built on the attacker's pretrained feature extractor (CloudLeak, Yu et al., NDSS 2020, Sec. IV: the
adversary takes a local model pretrained on public data, freezes its feature layers and retrains the last one on the
victim's answers).

`transfer(extractor, variables, num_classes)` is the extractor's architecture with a new linear head for the victim's
classes. Every layer up to the pooled features holds the extractor's weights and BatchNorm statistics, runs in eval
mode (no batch statistics, no dropout, no gradient past the pooled features) and is never updated: its variables are
the model's `pretrained`, which the training engine starts from and restores after every step. Only the head trains.
For inference the result is an ordinary zoo model (its `spec` rebuilds it with `get_model`).

`load_extractor` reads an extractor artifact (what `experiments/train.py` writes after training on the attacker's
labelled pool) and checks it against the victim the attacker faces.
"""

from typing import Optional

import jax

from mlpriv_jax.errors import UserError
from mlpriv_jax.models import artifact, zoo


def head_name(params) -> str:
  """The top-level parameter name of a zoo model's head (its one dense layer)."""
  dense = [k for k in params if k.startswith("Dense_")]
  if len(dense) != 1:
    raise UserError(f"expected one dense head among the model's layers, found {dense or 'none'}")
  return dense[0]


def transfer(extractor: zoo.Model, variables, num_classes: int) -> zoo.Model:
  """The extractor's body, frozen, under a new head of `num_classes` outputs (initialised by the model's `init`)."""
  if not hasattr(extractor.module, "head_only"):
    raise UserError(f"{extractor.name} is not a zoo model; a pretrained extractor must be one")
  head = head_name(variables["params"])
  frozen = {"params": {k: v for k, v in variables["params"].items() if k != head},
            "batch_stats": dict(variables.get("batch_stats", {}))}
  spec = dict(extractor.spec, num_classes=int(num_classes)) if extractor.spec else None
  module = extractor.module.clone(num_classes=int(num_classes), head_only=True)
  return zoo._from_module(extractor.name, int(num_classes), module, spec)._replace(
      pretrained=jax.tree.map(jax.numpy.asarray, frozen))


def load_extractor(path: str, *, input_shape, num_classes: int, arch: Optional[str] = None,
                   victim_data: Optional[str] = None) -> zoo.Model:
  """The surrogate on the extractor artifact at `path` for a victim of `input_shape` and `num_classes`.

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
  return transfer(model, variables, num_classes)
