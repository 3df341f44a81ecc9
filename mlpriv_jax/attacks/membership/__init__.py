"""Membership inference through the oracle. Member = positive; every score is higher = member.

Shokri shadow models, the metric attacks (loss, confidence, entropy, modified entropy with class-dependent
thresholds), LiRA and RMIA (online, offline), and the label-only attacks (gap, augmentation, noise, boundary
distance), found by name in `REGISTRY`.
"""

from mlpriv_jax.attacks.membership.lira import lira_offline, lira_online
from mlpriv_jax.attacks.membership.metrics import check_fprs, membership_report, roc_curve, tpr_at_fpr
from mlpriv_jax.attacks.membership.registry import (REGISTRY, LabelAugmentationOptions, LabelBoundaryOptions,
                                                    LabelNoiseOptions, LiraOptions, MembershipOptions, NoOptions,
                                                    QueryAttack, QueryInputs, RmiaOptions, ScoreAttack, ScoreInputs,
                                                    ShokriOptions, check_shadows, get, labels_of, lira_phis,
                                                    needs_population, parse, query_attack, reads_labels_only,
                                                    rmia_settings, score, split, views_needed)
from mlpriv_jax.attacks.membership.shokri import ShokriAttack, attack_records, shokri_score, train_shokri
from mlpriv_jax.attacks.membership.signals import (SIGNALS, confidence_score, entropy_score,
                                                   logit_scaled_confidence, loss_score, modified_entropy_score,
                                                   query_views, released_log_probs)
from mlpriv_jax.attacks.membership.threshold import calibrated_score, class_thresholds
