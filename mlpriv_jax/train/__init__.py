"""Training engine: one model (`train`) or K at once (`train_k`), one compiled step per run, checkpoints that resume."""

from mlpriv_jax.train.checkpoint import CheckpointError
from mlpriv_jax.train.compiles import Compiles, count_compiles
from mlpriv_jax.train.keep import balanced_keep
from mlpriv_jax.train.loop import (FUNCTIONS, MIN_BUCKET, FunctionCache, TrainResult, bucket_size, evaluate, predict,
                                   predict_k, train, train_k)
from mlpriv_jax.train.step import (TrainConfig, TrainState, cross_entropy, init_train_state,
                                   learning_rates, make_grad_fn, make_optimizer, make_predict_fn,
                                   make_train_step_fn, over_models, resolve_model_axis, update, variables_of,
                                   with_learning_rate)
