"""The provider's second line: proving after the fact that a suspect model was stolen from the victim.

`dataset_inference` (Maini et al. 2021: the suspect knows the victim's private points), `ipguard` (Cao et al. 2021:
a fingerprint of points across the victim's boundary), `dawn` (Szyller et al. 2021: the suspect agrees with the
watermarked answers one client was given; the watermark itself is the defence `defences.dawn`), and `verdicts`
(p-values against independent models, detection rates at a false-positive rate).
"""

from mlpriv_jax.ownership import dataset_inference, dawn, ipguard, verdicts
from mlpriv_jax.ownership.verdicts import binomial_p, detection
