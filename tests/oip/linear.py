"""The model MLServer serves in tests/oip_test.py (numpy only, so that the test process computes it too)."""

import numpy as np


def probabilities(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
  """The model: softmax of a linear map of the pixels scaled to [0, 1] (float64, then float32)."""
  z = (x.reshape(len(x), -1).astype(np.float64) / 255.0) @ w + b
  z = np.exp(z - z.max(-1, keepdims=True))
  return (z / z.sum(-1, keepdims=True)).astype(np.float32)
