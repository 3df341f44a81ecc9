"""Training engine: one model (`train`) or K at once (`train_k`), checkpoints that resume."""

from mlpriv_jax.train.checkpoint import CheckpointError
from mlpriv_jax.train.keep import balanced_keep
from mlpriv_jax.train.loop import TrainResult, evaluate, predict, train, train_k
from mlpriv_jax.train.step import (TrainConfig, TrainState, cross_entropy, init_train_state, make_optimizer,
                                   make_predict_fn, make_train_step_fn, over_models, resolve_model_axis,
                                   variables_of)
