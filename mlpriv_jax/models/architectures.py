"""The CIFAR model zoo as Flax Linen modules.

Every module takes images in [0, 1], f[N, H, W, 3], and normalises them itself
with per-channel `mean` and `std`, so that attacks (adversarial queries, MemGuard)
work in pixel space and a victim is a function of the pixels alone.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlpriv_jax.errors import UserError
from mlpriv_jax.models.layers import Conv, batch_norm, dense, group_norm

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
TUNES = ("all", "head", "last_block")


class _Normalise(nn.Module):
  mean: Sequence[float]
  std: Sequence[float]
  dtype: Any

  def __call__(self, x):
    shape = (1,) * (x.ndim - 1) + (-1,)
    x = (x - jnp.asarray(self.mean, jnp.float32).reshape(shape)) / jnp.asarray(self.std, jnp.float32).reshape(shape)
    return x.astype(self.dtype)


def _max_pool_2x2(x):
  # A reshape-max instead of nn.max_pool: its backward avoids select_and_scatter,
  # which is slow on XLA:CPU (and under vmap).
  n, h, w, c = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class ZooModule(nn.Module):
  """What every zoo model shares: its classes, the input normalisation it applies itself, the compute dtype
  and the convolution implementation; and the layers built from them (called inside `__call__`)."""
  num_classes: int = 10
  mean: Sequence[float] = CIFAR_MEAN
  std: Sequence[float] = CIFAR_STD
  dtype: Any = jnp.float32
  conv_impl: str = "auto"
  norm_kind: str = "batch"   # 'batch' or 'group' (the `_gn` zoo names, for DP-SGD)
  # What trains (a surrogate on a pretrained extractor, `models.transfer`): 'all'; 'head' (everything before it in
  # eval mode, no gradient past the pooled features); 'last_block' (the last block and the head; before the block's
  # input, eval mode and no gradient). Every architecture marks where its last block starts with `tail`.
  tune: str = "all"

  def normalise(self, x):
    return _Normalise(self.mean, self.std, self.dtype)(x)

  def conv(self, features: int, strides: int = 1, kernel_size: int = 3, use_bias: bool = False):
    return Conv(features, kernel_size, strides, use_bias=use_bias, dtype=self.dtype, conv_impl=self.conv_impl)

  def norm(self, train: bool):
    if self.norm_kind == "group":
      return lambda x: group_norm(self.dtype, x.shape[-1])(x)
    return batch_norm(train, self.dtype)

  def body_train(self, train: bool) -> bool:
    """Whether the layers before the last block run in training mode."""
    return train and self.tune == "all"

  def tail(self, x, train: bool):
    """The start of the last block: its input (no gradient behind it when only the last block and the head tune)
    and whether the layers from here on run in training mode."""
    if self.tune not in TUNES:
      raise UserError(f"unknown tune {self.tune!r}; known: {', '.join(TUNES)}")
    if self.tune == "last_block":
      x = jax.lax.stop_gradient(x)
    return x, train and self.tune != "head"

  def head(self, x):
    """Global average pool, then one linear layer: the classifier every zoo model ends with.

    The pooled vector is sown as `intermediates/features` (FeatureFool's phi, MAD's h).
    """
    x = x.mean(axis=(1, 2))
    self.sow("intermediates", "features", x)
    if self.tune == "head":
      x = jax.lax.stop_gradient(x)
    return dense(self.num_classes, self.dtype)(x).astype(jnp.float32)


class WideResNet(ZooModule):
  """WRN-depth-k, pre-activation (Zagoruyko & Komodakis 2016, Table 1)."""
  depth: int = 16
  widen_factor: int = 8
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    if (self.depth - 4) % 6:
      raise UserError(f"WRN depth must be 6n + 4, got {self.depth}")
    n = (self.depth - 4) // 6
    widths = (16 * self.widen_factor, 32 * self.widen_factor, 64 * self.widen_factor)
    x = self.conv(16)(self.normalise(x))
    t = self.body_train(train)
    for g, width in enumerate(widths):
      for b in range(n):
        if (g, b) == (2, n - 1):
          x, t = self.tail(x, train)
        stride = 2 if (g > 0 and b == 0) else 1
        o = nn.relu(self.norm(t)(x))
        # The original shortcut takes the pre-activated input when shapes change.
        shortcut = self.conv(width, stride, 1)(o) if x.shape[-1] != width or stride != 1 else x
        y = nn.relu(self.norm(t)(self.conv(width, stride)(o)))
        if self.dropout_rate > 0:
          y = nn.Dropout(self.dropout_rate, deterministic=not t)(y)
        x = shortcut + self.conv(width)(y)
    return self.head(nn.relu(self.norm(t)(x)))


class CifarResNet(ZooModule):
  """ResNet-(6n+2) for CIFAR (He et al. 2016, section 4.2), option-A shortcuts."""
  depth: int = 20

  @nn.compact
  def __call__(self, x, train: bool = False):
    if (self.depth - 2) % 6:
      raise UserError(f"CIFAR ResNet depth must be 6n + 2, got {self.depth}")
    n = (self.depth - 2) // 6
    t = self.body_train(train)
    x = nn.relu(self.norm(t)(self.conv(16)(self.normalise(x))))
    for g, width in enumerate((16, 32, 64)):
      for b in range(n):
        if (g, b) == (2, n - 1):
          x, t = self.tail(x, train)
        stride = 2 if (g > 0 and b == 0) else 1
        y = nn.relu(self.norm(t)(self.conv(width, stride)(x)))
        y = self.norm(t)(self.conv(width)(y))
        if stride != 1 or x.shape[-1] != width:
          # Option A: subsample and zero-pad the channels (no parameters).
          pad = (width - x.shape[-1]) // 2
          x = jnp.pad(x[:, ::2, ::2, :], ((0, 0), (0, 0), (0, 0), (pad, width - x.shape[-1] - pad)))
        x = nn.relu(x + y)
    return self.head(x)


class ResNet18(ZooModule):
  """ResNet-18 (He et al. 2016). stem='cifar': 3x3/1 conv, no max-pool (kuangliu);
  stem='imagenet': 7x7/2 conv + 3x3/2 max-pool (torchvision), kept to measure whether
  that stem explains the survey's low res18 rows (on 32x32 inputs it leaves a 1x1 map at stage 4)."""
  stem: str = "cifar"
  width_divisor: int = 1  # 8 gives the narrow stand-in of the smoke presets

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = self.normalise(x)
    t = self.body_train(train)
    if self.stem == "cifar":
      x = nn.relu(self.norm(t)(self.conv(64 // self.width_divisor)(x)))
    elif self.stem == "imagenet":
      x = nn.relu(self.norm(t)(self.conv(64 // self.width_divisor, 2, 7)(x)))
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    else:
      raise UserError(f"unknown ResNet-18 stem {self.stem!r}; known: cifar, imagenet")
    for g, width in enumerate((64, 128, 256, 512)):
      width //= self.width_divisor
      for b in range(2):
        if (g, b) == (3, 1):
          x, t = self.tail(x, train)
        stride = 2 if (g > 0 and b == 0) else 1
        y = nn.relu(self.norm(t)(self.conv(width, stride)(x)))
        y = self.norm(t)(self.conv(width)(y))
        if stride != 1 or x.shape[-1] != width:
          x = self.norm(t)(self.conv(width, stride, 1)(x))
        x = nn.relu(x + y)
    return self.head(x)


VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG11_CFG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")   # config A: a shallower stand-in


class VGG(ZooModule):
  """VGG-16 with BatchNorm (Simonyan & Zisserman 2015, config D), one linear head
  (kuangliu/pytorch-cifar and knockoffnets' CIFAR VGG)."""
  cfg: Sequence[Any] = VGG16_CFG
  width_divisor: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = self.normalise(x)
    t = self.body_train(train)
    last = max(i for i, v in enumerate(self.cfg[:-1]) if v == "M") + 1   # the last stage's first conv
    for i, v in enumerate(self.cfg):
      if i == last:
        x, t = self.tail(x, train)
      if v == "M":
        x = _max_pool_2x2(x)
      else:
        x = nn.relu(self.norm(t)(self.conv(v // self.width_divisor, use_bias=True)(x)))
    return self.head(x)


class SmallCNN(ZooModule):
  """A small conv-BN-ReLU-pool network for tests, smoke runs and shadow models."""
  widths: Sequence[int] = (32, 64, 128)

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = self.normalise(x)
    t = self.body_train(train)
    for i, width in enumerate(self.widths):
      if i == len(self.widths) - 1:
        x, t = self.tail(x, train)
      x = _max_pool_2x2(nn.relu(self.norm(t)(self.conv(width)(x))))
    return self.head(x)
