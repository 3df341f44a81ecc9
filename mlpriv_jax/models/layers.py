"""Convolution with an implementation switch, and the initialisers the CIFAR zoo shares.

Two implementations of one k x k convolution, sharing one parameter layout
(HWIO), so a checkpoint does not depend on the switch (tests/models_test.py
proves equal outputs and gradients):

* 'lax': `lax.conv_general_dilated`. Best on GPU/TPU, and on CPU for one model.
* 'im2col': k*k shifted slices of the padded input, concatenated on the channel
  axis, times one matmul. Under `vmap` a conv weight becomes a grouped
  convolution whose backward pass XLA:CPU handles badly (jax #13800, #31662);
  the im2col matmul becomes a batched matmul instead, about 4x faster there.

'auto' is 'lax'; on CPU, `train_k` switches a model to 'im2col' when it vmaps
over models (by default it unrolls the model axis there, which measured faster
still; see docs/cpu_gap.md), and DP-SGD's per-example gradients always do.
"""

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import lax
from mlpriv_jax.errors import UserError

# He et al. 2015 init with fan_out, N(0, sqrt(2 / fan_out)): the WRN, knockoffnets and kuangliu/pytorch-cifar code.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

CONV_IMPLS = ("auto", "im2col", "lax")


def resolve_conv_impl(impl: str = "auto") -> str:
  """Returns 'im2col' or 'lax' ('auto' is 'lax'); an unknown name is a one-line error."""
  if impl not in CONV_IMPLS:
    raise UserError(f"unknown conv_impl {impl!r}; known: {', '.join(CONV_IMPLS)}")
  return "lax" if impl == "auto" else impl


def conv2d(x, kernel, strides: int, padding: int, impl: str):
  """2-D convolution, NHWC input, HWIO kernel, symmetric zero padding.

  Padding is explicit and symmetric (PyTorch's `padding=k//2`), not 'SAME': for
  stride 2 on even inputs 'SAME' pads (0, 1) while the reference code pads (1, 1).

  Args:
    x: f[N, H, W, Cin].
    kernel: f[kh, kw, Cin, Cout].
    strides: the stride on both spatial axes.
    padding: zeros added on every spatial side.
    impl: 'im2col' or 'lax' (see `resolve_conv_impl`).
  Returns:
    f[N, Ho, Wo, Cout] with Ho = (H + 2 padding - kh) // strides + 1.
  """
  kh, kw, cin, cout = kernel.shape
  if impl == "lax":
    return lax.conv_general_dilated(
        x, kernel, (strides, strides), [(padding, padding)] * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  n, h, w, _ = x.shape
  ho = (h + 2 * padding - kh) // strides + 1
  wo = (w + 2 * padding - kw) // strides + 1
  if padding:
    x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  if kh == kw == 1:
    cols = x[:, : strides * (ho - 1) + 1 : strides, : strides * (wo - 1) + 1 : strides, :]
  else:
    # Order (i, j, cin) matches kernel.reshape(kh * kw * cin, cout).
    cols = jnp.concatenate(
        [x[:, i : i + strides * (ho - 1) + 1 : strides, j : j + strides * (wo - 1) + 1 : strides, :]
         for i in range(kh) for j in range(kw)], axis=-1)
  return jnp.dot(cols, kernel.reshape(kh * kw * cin, cout))


class Conv(nn.Module):
  """k x k convolution, PyTorch padding, parameters HWIO in `param_dtype`."""
  features: int
  kernel_size: int = 3
  strides: int = 1
  padding: int | None = None  # None: kernel_size // 2
  use_bias: bool = False
  dtype: Any = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param("kernel", conv_kernel_init, (k, k, x.shape[-1], self.features), jnp.float32)
    pad = k // 2 if self.padding is None else self.padding
    y = conv2d(x.astype(self.dtype), kernel.astype(self.dtype), self.strides, pad,
               resolve_conv_impl(self.conv_impl))
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype).reshape(1, 1, 1, -1)
    return y


def batch_norm(train: bool, dtype: Any, name: str | None = None):
  """BatchNorm matching PyTorch defaults (momentum 0.1 there == 0.9 here, eps 1e-5)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      dtype=dtype, param_dtype=jnp.float32, name=name)


def group_norm(dtype: Any, channels: int, groups: int = 16, name: str | None = None):
  """GroupNorm (Wu & He 2018) with gcd(groups, channels) groups: 16 in De et al.'s DP-SGD WRN (2022).

  Normalises each example on its own, so per-example gradients (DP-SGD) stay per example.
  """
  return nn.GroupNorm(num_groups=math.gcd(groups, channels), epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32,
                      name=name)


def dense(features: int, dtype: Any, name: str | None = None):
  return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, name=name)
