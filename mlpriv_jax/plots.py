"""The PNG figures the programs write (matplotlib, Agg backend, written atomically)."""

from mlpriv_jax.utils import atomic_write


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _save(fig, path):
  plt = _pyplot()
  fig.tight_layout()
  atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
  plt.close(fig)


def extraction_curve(path: str, curve, title: str) -> None:
  """Surrogate accuracy and fidelity against queries; curve: [{'queries', 'accuracy', 'fidelity'}]."""
  fig, ax = _pyplot().subplots(figsize=(5, 3.5))
  q = [c["queries"] for c in curve]
  ax.plot(q, [c["accuracy"] for c in curve], "o-", label="accuracy")
  ax.plot(q, [c["fidelity"] for c in curve], "s-", label="fidelity")
  ax.set_xlabel("queries")
  ax.set_ylim(0, 1)
  ax.set_title(title, fontsize=8)
  ax.grid(alpha=0.3)
  ax.legend()
  _save(fig, path)


def roc_loglog(path: str, curves, title: str) -> None:
  """Log-log ROC curves (LiRA's figures); curves: {name: (fpr, tpr, auc)}. Member = positive."""
  fig, ax = _pyplot().subplots(figsize=(4.5, 4.5))
  lo = 1e-4
  for name, (fpr, tpr, auc) in curves.items():
    ax.plot(fpr.clip(lo), tpr.clip(lo), label=f"{name} (AUC {auc:.3f})")
  ax.plot([lo, 1], [lo, 1], "k--", lw=0.8)
  ax.set(xscale="log", yscale="log", xlim=(lo, 1), ylim=(lo, 1), xlabel="FPR (non-members called members)",
         ylabel="TPR (members found)")
  ax.set_title(title, fontsize=8)
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  _save(fig, path)
