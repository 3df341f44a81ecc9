"""Model extraction through the oracle: KnockoffNets, JBDA, CloudLeak-style active learning, found by name in
`REGISTRY` and run with `run(name, oracle, pool_images, ...)`."""

from mlpriv_jax.attacks.extraction.active import (ActiveResult, cloudleak, featurefool, jbda, margin, pgd_margin,
                                                  projected_sign_descent)
from mlpriv_jax.attacks.extraction.knockoff import knockoff_adaptive, knockoff_random, train_surrogate
from mlpriv_jax.attacks.extraction.metrics import extraction_metrics, survey_cell
from mlpriv_jax.attacks.extraction.registry import (REGISTRY, CloudLeakOptions, ExtractionAttack, ExtractionOptions,
                                                    ExtractionResult, JbdaOptions, KnockoffAdaptiveOptions,
                                                    KnockoffRandomOptions, check_budget, get, run)
