"""MLServer custom runtimes for the tests: a model whose protocol terms differ from ours (input `pixels`, UINT8;
outputs `label` INT64 then `proba` FP32), variants that break the protocol (tests/oip_test.py), and one of our
artifacts behind one of our defences (the arena's served row, tests/arena_test.py). Runs in MLServer's venv
(.venv-oip); only `Artifact` imports mlpriv_jax. Each model counts the images it answered in
`<settings folder>/answered.txt`."""

import os

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

from linear import probabilities


class Linear(MLModel):
  async def load(self) -> bool:
    folder = os.path.dirname(self.settings.parameters.uri)
    weights = np.load(self.settings.parameters.uri)
    self.w, self.b, self.log = weights["w"], weights["b"], os.path.join(folder, "answered.txt")
    return True

  def answer(self, x):
    return probabilities(x, self.w, self.b)

  async def predict(self, payload: InferenceRequest) -> InferenceResponse:
    x = NumpyCodec.decode_input(payload.inputs[0])
    p = self.answer(x)
    with open(self.log, "a") as f:
      f.write(f"{len(x)}\n")
    return InferenceResponse(model_name=self.name, outputs=[
        NumpyCodec.encode_output("label", p.argmax(-1).astype(np.int64)), NumpyCodec.encode_output("proba", p)])


class Short(Linear):
  """Answers one row fewer than it was sent."""

  def answer(self, x):
    return super().answer(x)[:-1]


class Broken(Linear):
  """Fails on any batch of more than 4 images (a server error, 5xx)."""

  def answer(self, x):
    if len(x) > 4:
      raise RuntimeError("out of memory")
    return super().answer(x)


class Artifact(MLModel):
  """An mlpriv_jax artifact (`parameters.uri`, a folder) behind a defence of the registry
  (`parameters.extra.defence`, deterministic ones only: no key stream), in MLServer's terms: input `x` (FP32 in
  [0, 1]), output `scores` (FP32)."""

  async def load(self) -> bool:
    from mlpriv_jax import defences, models
    from mlpriv_jax.oracle import Service, Victim
    model, variables, meta = models.load_model(self.settings.parameters.uri)
    extra = self.settings.parameters.extra or {}
    defence = defences.build(extra.get("defence", "none"), extra.get("strength"))
    service = Service.from_model(model, variables, input_shape=tuple(meta["input_shape"]), defence=defence)
    self.victim = Victim.of(service)
    self.log = os.path.join(os.path.dirname(self.settings.parameters.uri), "answered.txt")
    return True

  async def predict(self, payload: InferenceRequest) -> InferenceResponse:
    x = NumpyCodec.decode_input(payload.inputs[0])
    p = self.victim.query(x)
    with open(self.log, "a") as f:
      f.write(f"{len(x)}\n")
    return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("scores", p)])
