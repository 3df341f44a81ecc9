"""Model zoo: WRN, CIFAR ResNets, ResNet-18, VGG-16 and small CNNs as pure init/apply pairs; model artifacts."""

from mlpriv_jax.models.architectures import CIFAR_MEAN, CIFAR_STD, TUNES
from mlpriv_jax.models.artifact import ArtifactError, find_artifact, load_model, save_model
from mlpriv_jax.models.layers import conv2d, resolve_conv_impl
from mlpriv_jax.models.transfer import load_extractor, transfer
from mlpriv_jax.models.zoo import (ALIASES, DTYPES, KNOWN, Model, canonical_name, count_params, from_spec, get_model,
                                   with_conv_impl)
