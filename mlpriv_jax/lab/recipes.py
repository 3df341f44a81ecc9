"""Published training recipes per architecture family (CIFAR-10, crop + flip), for the `paper` presets."""

from mlpriv_jax import models

PAPER_RECIPES = {
    # Zagoruyko & Komodakis 2016, Sec. 3: SGD Nesterov 0.9, wd 5e-4, lr 0.1 x0.2 at 60, 120, 160 of 200 epochs.
    "wrn": dict(learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="multistep",
                milestones_epochs="60,120,160", lr_decay_factor=0.2),
    # He et al. 2016, Sec. 4.2: SGD 0.9, wd 1e-4, lr 0.1 x0.1 at 32k and 48k of 64k iterations (epochs 100, 150).
    "resnet_cifar": dict(learning_rate=0.1, momentum=0.9, nesterov=False, weight_decay=1e-4, schedule="multistep",
                         milestones_epochs="100,150", lr_decay_factor=0.1),
    # kuangliu/pytorch-cifar (ResNet-18, VGG-16): SGD 0.9, wd 5e-4, lr 0.1, cosine.
    "other": dict(learning_rate=0.1, momentum=0.9, nesterov=False, weight_decay=5e-4, schedule="cosine"),
}


def arch_family(arch: str) -> str:
  name = models.canonical_name(arch)
  if name.startswith("wrn"):
    return "wrn"
  if name.startswith("resnet") and name not in ("resnet18", "resnet18_imagenet"):
    return "resnet_cifar"
  return "other"


def paper_recipe(arch: str) -> dict:
  return dict(PAPER_RECIPES[arch_family(arch)], arch=arch)
