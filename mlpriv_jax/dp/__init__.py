"""Differential privacy: DP-SGD's recipe (trained by the engine, `train.dpsgd`), its accounting, its audit.

Needs the 'dp' extra (dp-accounting, jax-privacy; Python >= 3.11), imported on first use.
"""

from mlpriv_jax.dp.accounting import ACCOUNTANTS, calibrate_noise, compute_epsilon, dpsgd_event
from mlpriv_jax.dp.audit import METHODS, audit_report, dp_ceiling, epsilon_lower_bound
from mlpriv_jax.dp.recipe import DPTarget, calibrate_training, describe
from mlpriv_jax.train.dpsgd import DPConfig, check_dp_model, physical_batch_size
