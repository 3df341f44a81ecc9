"""Model zoo: WRN, CIFAR ResNets, ResNet-18, VGG-16 and small CNNs as pure init/apply pairs."""

from mlpriv_jax.models.layers import conv2d, resolve_conv_impl
from mlpriv_jax.models.zoo import ALIASES, KNOWN, Model, canonical_name, count_params, get_model, with_conv_impl
