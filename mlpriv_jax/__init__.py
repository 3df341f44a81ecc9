"""mlpriv_jax: model-extraction and membership-inference attacks and defences in JAX."""

__version__ = "0.1.0"
