"""KnockoffNets (Orekondy, Schiele & Fritz, CVPR 2019): random and adaptive transfer sets.

Both strategies see only the oracle's `query`. The surrogate is then trained on the
returned probability vectors with the soft cross-entropy (paper section 4.2;
`knockoff/utils/model.py::soft_cross_entropy`), or on one-hot answers when the
victim releases labels only (the loss is the same code path).
"""

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mlpriv_jax import streams, train
from mlpriv_jax.errors import UserError
from mlpriv_jax.models import Model
from mlpriv_jax.oracle import Oracle, query_all


def knockoff_random(oracle: Oracle, pool_x, budget: int, key, *, batch_size: int = 256):
  """Random strategy: B pool images drawn without replacement, each queried once.

  The budget is the caller's to check (`extraction.run`: at most the pool).

  Returns:
    (indices int[B] into pool_x, answers f32[B, C]).
  """
  idx = np.asarray(jax.random.permutation(key, len(pool_x))[:budget])
  return idx, query_all(oracle, pool_x[idx], batch_size)


class BanditHistory(NamedTuple):
  coarse_probs: np.ndarray      # [steps, num_coarse] the coarse policy at each step
  rewards: np.ndarray           # [steps] the mean combined reward of each step's batch


def knockoff_adaptive(oracle: Oracle, pool_x, pool_fine, budget: int, key, surrogate: Model, *, pool_coarse=None,
                      batch_size: int = 64, learning_rate: float = 0.01, rewards=("cert", "div", "loss")):
  """Adaptive strategy: a gradient bandit over the pool's label hierarchy (paper section 4.1.2).

  At each step `batch_size` actions are drawn: a coarse node from softmax(H_coarse),
  then a fine label from softmax(H_fine) within it, then an unused image of that
  label. The answers y train an online surrogate for one SGD step; the rewards are
  certainty (y_(1) - y_(2)), diversity (sum_k max(0, y_k - running mean_k)) and the
  surrogate's loss CE(y, y^); each is z-scored by its running mean and std and
  they are averaged (ART's combination). Every node on an action's path gets the
  gradient-bandit update H(a) += alpha (r - baseline)(1 - pi(a)), H(z) -= alpha
  (r - baseline) pi(z), with alpha = 1 / N(a). Batching the bandit is a
  deviation from ART's one sample per step (its pitfall), and the rewards here
  are computed in probability space (ART's loss reward assumes logits).
  learning_rate: of the online surrogate (SGD, momentum 0.5, as knockoffnets);
  the bandit's own step is 1 / N(a).

  Returns:
    (indices int[B], answers f32[B, C], BanditHistory).
  """
  fine = np.asarray(pool_fine)
  coarse = np.zeros_like(fine) if pool_coarse is None else np.asarray(pool_coarse)
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
  num_coarse, num_fine = int(coarse.max()) + 1, int(fine.max()) + 1
  children = [np.unique(fine[coarse == c]) for c in range(num_coarse)]
  unused = {f: list(rng.permutation(np.nonzero(fine == f)[0])) for f in range(num_fine)}
  h_coarse, h_fine = np.zeros(num_coarse), np.zeros(num_fine)
  n_coarse, n_fine = np.zeros(num_coarse), np.zeros(num_fine)

  cfg = train.TrainConfig(num_epochs=1, batch_size=batch_size, learning_rate=learning_rate, momentum=0.5, nesterov=False,
                          weight_decay=0.0, schedule="constant", augment=False)
  tx = train.make_optimizer(cfg)
  state = train.init_train_state(surrogate, tx, streams.derive(key, streams.ADAPTIVE_INIT), pool_x.shape[1:])
  step = train.make_train_step_fn(surrogate, tx, augment=False)
  predict = train.make_predict_fn(surrogate)
  step_key = streams.derive(key, streams.ADAPTIVE_STEPS)

  stats = {r: [0.0, 0.0, 0] for r in rewards}            # running mean, M2, count (Welford)
  baseline, steps_done, y_mean, n_seen = 0.0, 0, None, 0
  chosen, answers, hist_p, hist_r = [], [], [], []

  def softmax(h, mask):
    z = np.where(mask, h, -np.inf)
    z = np.exp(z - z[mask].max())
    return z / z.sum()

  while len(chosen) < budget:
    b = min(batch_size, budget - len(chosen))
    alive_f = np.array([len(unused[f]) > 0 for f in range(num_fine)])
    alive_c = np.array([alive_f[ch].any() for ch in children])
    pc = softmax(h_coarse, alive_c)
    acts, idx = [], []
    for _ in range(b):
      c = rng.choice(num_coarse, p=pc)
      mask = np.zeros(num_fine, bool)
      mask[children[c]] = True
      mask &= np.array([len(unused[f]) > 0 for f in range(num_fine)])
      if not mask.any():                       # this node ran dry within the batch
        c = rng.choice(np.nonzero([any(len(unused[f]) for f in ch) for ch in children])[0])
        mask = np.zeros(num_fine, bool)
        mask[[f for f in children[c] if len(unused[f])]] = True
      pf = softmax(h_fine, mask)
      f = rng.choice(num_fine, p=pf)
      acts.append((c, f, pf))
      idx.append(unused[f].pop())
    idx = np.asarray(idx)
    y = oracle.query(pool_x[idx])
    # Train on (x_t, y_t), then y^_t = F_A(x_t) (the paper's Sec. 4.1.2 reward order, as ART).
    state, _ = step(state, {"x": jnp.asarray(pool_x[idx]), "y": jnp.asarray(y)}, step_key, learning_rate)
    y_hat = np.asarray(jax.nn.softmax(predict(train.variables_of(state), jnp.asarray(pool_x[idx]))))

    raw = {}
    top2 = -np.sort(-y, axis=-1)[:, :2]
    raw["cert"] = top2[:, 0] - top2[:, 1]
    div = []
    for row in y:                               # running mean over all answers so far (ART)
      n_seen += 1
      y_mean = row.copy() if y_mean is None else y_mean + (row - y_mean) / n_seen
      div.append(np.maximum(0.0, row - y_mean).sum())
    raw["div"] = np.asarray(div)
    raw["loss"] = -(y * np.log(np.maximum(y_hat, 1e-30))).sum(-1)
    r = np.zeros(b)
    for name in rewards:
      mean, m2, cnt = stats[name]
      for v in raw[name]:
        cnt += 1
        d = v - mean
        mean += d / cnt
        m2 += d * (v - mean)
      stats[name] = [mean, m2, cnt]
      std = np.sqrt(m2 / cnt) if cnt > 1 else 1.0
      r += (raw[name] - mean) / (std if std > 0 else 1.0)
    r /= len(rewards)

    for (c, f, pf), ri in zip(acts, r):
      steps_done += 1
      baseline += (ri - baseline) / steps_done
      adv = ri - baseline
      n_coarse[c] += 1
      n_fine[f] += 1
      g_c = -pc * adv / n_coarse[c]
      g_c[c] += adv / n_coarse[c]
      h_coarse += np.where(np.isfinite(g_c), g_c, 0.0)
      g_f = -pf * adv / n_fine[f]
      g_f[f] += adv / n_fine[f]
      h_fine += np.where(np.isfinite(g_f), g_f, 0.0)
    chosen.extend(idx.tolist())
    answers.append(y)
    hist_p.append(pc)
    hist_r.append(float(r.mean()))
  return np.asarray(chosen), np.concatenate(answers), BanditHistory(np.stack(hist_p), np.asarray(hist_r))


def fit_batch(config: train.TrainConfig, n: int) -> train.TrainConfig:
  """The recipe for a surrogate trained on `n` images (a small checkpoint, an early round): a batch larger than
  the data shrinks to it."""
  return dataclasses.replace(config, batch_size=min(config.batch_size, n))


def train_surrogate(surrogate: Model, config: train.TrainConfig, images, answers, key, *,
                    label_only: Optional[bool] = None, **kwargs) -> train.TrainResult:
  """Trains the surrogate from scratch on (images, answers) with the soft cross-entropy.

  label_only: train on one-hot(argmax answers) (KnockoffNets' `--argmaxed`); by
  default it is detected (every answer one-hot).
  """
  answers = np.asarray(answers, np.float32)
  if answers.shape[-1] != surrogate.num_classes:
    raise UserError(f"the surrogate has {surrogate.num_classes} classes, the victim answers {answers.shape[-1]}")
  if label_only is None:
    label_only = bool(np.all((answers == 0) | (answers == 1)))
  if label_only:
    answers = np.eye(surrogate.num_classes, dtype=np.float32)[answers.argmax(-1)]
  return train.train(surrogate, config, images, answers, key, **kwargs)
