import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlpriv_jax import models
from mlpriv_jax.models.layers import conv2d

# Published parameter counts (WRN paper Table; He et al. 2016; kuangliu/pytorch-cifar).
PUBLISHED = {"wrn16_8": 11.0e6, "wrn22_8": 17.2e6, "wrn28_10": 36.5e6, "resnet32": 0.46e6, "resnet18": 11.2e6,
             "resnet20": 0.27e6, "resnet56": 0.85e6, "vgg16": 14.7e6, "vgg11": 9.23e6, "wrn28_2": 1.47e6,
             "wrn16_4": 2.75e6}


@pytest.mark.parametrize("name,expected", sorted(PUBLISHED.items()))
def test_parameter_counts_match_published(name, expected):
  n = models.count_params(models.get_model(name, 10))
  assert abs(n - expected) / expected < 0.01, (name, n)


def test_survey_aliases():
  assert models.get_model("wres16", 10).name == "wrn16_8"
  assert models.get_model("wres22", 10).name == "wrn22_8"
  assert models.get_model("res32", 10).name == "resnet32"
  assert models.get_model("res18", 10).name == "resnet18"


@pytest.mark.parametrize("bad", ["foo", "wrn15_8", "resnet33", "vgg13", ""])
def test_unknown_architecture_lists_known(bad):
  with pytest.raises(ValueError, match="unknown architecture.*known: wrn16_4"):
    models.get_model(bad, 10)


def test_bad_num_classes_and_conv_impl():
  with pytest.raises(ValueError, match="num_classes"):
    models.get_model("cnn_tiny", 1)
  with pytest.raises(ValueError, match="conv_impl"):
    models.get_model("cnn_tiny", 10, conv_impl="winograd")


@pytest.mark.parametrize("name", ["wrn16_8", "resnet32", "resnet18", "resnet18_imagenet", "vgg16", "cnn_small",
                                  "resnet18_narrow", "vgg16_narrow", "vgg11_narrow", "resnet18_imagenet_narrow"])
def test_output_shapes(name):
  m = models.get_model(name, 7)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(m.init, jax.random.key(0), x)
  logits, state = jax.eval_shape(lambda v, x: m.apply(v, x, train=True), variables, x)
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  assert set(state) == {"batch_stats"}


def test_imagenet_stem_differs_from_cifar_stem():
  # The 7x7/2 stem + max-pool leaves a 1x1 map at layer 4 on 32x32 inputs.
  a = models.count_params(models.get_model("resnet18", 10))
  b = models.count_params(models.get_model("resnet18_imagenet", 10))
  assert b - a == (7 * 7 - 3 * 3) * 3 * 64


@pytest.mark.parametrize("k,stride,cin,cout,h", [(3, 1, 3, 8, 8), (3, 2, 4, 6, 8), (1, 2, 4, 6, 8), (7, 2, 3, 5, 10)])
def test_im2col_equals_lax_conv_values_and_gradients(k, stride, cin, cout, h):
  kx, kw = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (2, h, h, cin))
  w = jax.random.normal(kw, (k, k, cin, cout))
  f = lambda impl: lambda x, w: conv2d(x, w, stride, k // 2, impl)
  chex.assert_trees_all_close(f("im2col")(x, w), f("lax")(x, w), atol=1e-4, rtol=1e-4)
  g = lambda impl: jax.grad(lambda x, w: (f(impl)(x, w) ** 2).sum(), argnums=(0, 1))(x, w)
  chex.assert_trees_all_close(g("im2col"), g("lax"), atol=1e-3, rtol=1e-4)


def test_conv_padding_is_pytorch_symmetric():
  # Stride 2 on an even input: PyTorch pads (1, 1); 'SAME' would pad (0, 1).
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  w = jnp.zeros((3, 3, 1, 1)).at[0, 0, 0, 0].set(1.0)  # picks the top-left tap
  y = conv2d(x, w, 2, 1, "lax")[0, :, :, 0]
  np.testing.assert_array_equal(y, [[0.0, 0.0], [0.0, 5.0]])


def test_models_agree_across_conv_impls():
  m_lax = models.get_model("cnn_tiny", 10, conv_impl="lax")
  m_col = models.with_conv_impl(m_lax, "im2col")
  x = jax.random.uniform(jax.random.key(1), (4, 32, 32, 3))
  v = m_lax.init(jax.random.key(0), x)
  chex.assert_trees_all_close(m_lax.apply(v, x, train=False)[0], m_col.apply(v, x, train=False)[0], atol=1e-4)


def test_bfloat16_compute_keeps_float32_params():
  m = models.get_model("cnn_tiny", 10, dtype=jnp.bfloat16)
  x = jax.random.uniform(jax.random.key(1), (4, 32, 32, 3))
  v = m.init(jax.random.key(0), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(v["params"]))
  logits, _ = m.apply(v, x, train=True)
  assert logits.dtype == jnp.float32
  chex.assert_tree_all_finite(logits)
  ref = models.get_model("cnn_tiny", 10).apply(v, x, train=False)[0]
  chex.assert_trees_all_close(m.apply(v, x, train=False)[0], ref, atol=0.1, rtol=0.05)


def test_wrn_dropout_uses_key():
  m = models.get_model("wrn16_1", 10, dropout_rate=0.5)
  x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  v = m.init(jax.random.key(0), x)
  apply = jax.jit(m.apply, static_argnames="train")   # one compilation per mode, not op by op
  k1, k2 = jax.random.key(1), jax.random.key(2)
  a = apply(v, x, train=True, key=k1)[0]
  np.testing.assert_array_equal(a, apply(v, x, train=True, key=k1)[0])   # the key is dropout's only randomness
  assert not np.allclose(a, apply(v, x, train=True, key=k2)[0])          # and dropout draws from it
  np.testing.assert_array_equal(apply(v, x, train=False, key=k1)[0], apply(v, x, train=False, key=k2)[0])  # off
  assert not np.allclose(a, apply(v, x, train=False)[0])
  plain = jax.jit(models.get_model("wrn16_1", 10).apply, static_argnames="train")
  # without dropout, training mode does not depend on the key either
  np.testing.assert_array_equal(plain(v, x, train=True, key=k1)[0], plain(v, x, train=True, key=k2)[0])
