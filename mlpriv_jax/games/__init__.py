"""The experiment core: the games the programs and the arena both compose, each as steps with typed results.

* `membership`: setup (target and shadows) -> prepare (the attacker's kit) -> attack (scores) -> judge (rows);
* `extraction`: an attack from the registry -> judge (each surrogate snapshot against the victim's test set);
* `utility`: what a defence setting costs benign users;
* `victims`: an artifact with the data it was trained on (what the defender holds).
"""

from mlpriv_jax.games import extraction, membership, utility, victims

__all__ = ["extraction", "membership", "utility", "victims"]
