"""Model extraction through the oracle: KnockoffNets, JBDA, CloudLeak-style active learning, and the attacks that
know the defence (Top-1, Smoothing, D-DAE's recovery), data-free DFME and DisGUIDE, found by name in `REGISTRY` and run with
`run(name, oracle, pool_images, ...)`."""

from mlpriv_jax.attacks.extraction.active import (ActiveResult, cloudleak, featurefool, jbda, margin, pgd_margin,
                                                  projected_sign_descent)
from mlpriv_jax.attacks.extraction.adaptive import (Recovery, RecoveryNet, recovery_attack, recovery_table,
                                                    smoothing_queries, train_recovery)
from mlpriv_jax.attacks.extraction.datafree import (Generator, NeedsProbabilities, dfme, disagreement_loss,
                                                    disguide, forward_difference_gradient, recover_logits,
                                                    unit_directions)
from mlpriv_jax.attacks.extraction.knockoff import knockoff_adaptive, knockoff_random, train_surrogate
from mlpriv_jax.attacks.extraction.metrics import extraction_metrics, survey_cell
from mlpriv_jax.attacks.extraction.registry import (REGISTRY, CloudLeakOptions, DfmeOptions, DisguideOptions,
                                                    ExtractionAttack,
                                                    ExtractionOptions, ExtractionResult, JbdaOptions,
                                                    KnockoffAdaptiveOptions, KnockoffRandomOptions, RecoveryOptions,
                                                    SmoothingOptions, Top1Options, check_budget, get, known_defence,
                                                    run)
