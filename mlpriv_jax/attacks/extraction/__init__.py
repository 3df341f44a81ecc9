"""Model extraction through the victim's query door: KnockoffNets, JBDA, CloudLeak-style active learning."""

from mlpriv_jax.attacks.extraction.active import ActiveResult, cloudleak, featurefool, jbda, margin, pgd_margin
from mlpriv_jax.attacks.extraction.knockoff import (check_budget, knockoff_adaptive, knockoff_random,
                                                    query_in_batches, train_surrogate)
from mlpriv_jax.attacks.extraction.metrics import extraction_metrics, survey_cell
