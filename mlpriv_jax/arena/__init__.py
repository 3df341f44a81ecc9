"""The arena: every attack against every defence at every strength and budget, judged by its worst attack.

`cells` (one result file per measurement, atomic, resumable), `scoring` (worst case per family, dominance,
budget to 90% of the undefended fidelity, pivots), `report` (arena.json, cells.csv, report.md, a
self-contained report.html with the plots embedded), collated from the cells alone.
"""

from mlpriv_jax.arena import cells, report, scoring

__all__ = ["cells", "report", "scoring"]
