"""The papers' training recipes as optimizer, schedule, augmentation and sampling choices.

- marco (Bruno et al. 2018): RMSProp lr 0.045, momentum 0.9, decay 0.9, epsilon 0.1
  (Keras' RMSprop, like TF1's, adds epsilon inside the square root; TF1 started the mean
  square at 1, Keras at 0), lr x0.94 every 2 epochs, an exponential moving average of the
  weights (0.9999) used for evaluation and export, MARCO augmentation.
- merck (Ghafurian et al.): SGD with momentum 0.9, lr 0.1 divided by 10 every 20 epochs,
  classes oversampled inversely to their size, rotations and flips, the checkpoint with
  the best validation accuracy kept.
- finetune: start from a trained or imported model; the trunk is frozen for
  `freeze_epochs` (heads only, lr as given or 1e-3), then everything trains at a tenth.
- default: Adam with cosine decay from 2e-3, rotations/flips and mild brightness and
  contrast jitter; what the shipped default model was trained with.
- focus: the shipped default model's second stage (models/presets/default-focus.toml): start
  from a trained model's weights (`[model] warm_start`), train everything with Adam at a
  constant 5e-4 on the `noisy` augmentation (SmoothGrad-sized pixel noise on half the images);
  with `freeze_epochs` > 0 only the heads train for that many epochs first, as in finetune.
- frozen-trunk: only the layers after the network's `pool` layer (dropout, heads) train,
  on trunk features computed once per image (marco_svc/train/trunk_features.py), Adam with
  cosine decay from 1e-3, no augmentation, the best-validation weights kept; for a
  pretrained trunk (models/presets/lite0.toml).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from marco_svc.train.config import RecipeSection


@dataclass(frozen=True)
class Recipe:
    name: str
    augment: str
    balance: bool  # oversample classes inversely to their size
    keep_best: bool  # restore the best-validation weights at the end
    ema: bool
    trunk_features: bool = False  # fit the heads on trunk features computed once

    def optimizer(self, settings: RecipeSection, steps_per_epoch: int) -> keras.Optimizer:
        """A fresh optimizer with the recipe's schedule."""
        lr = settings.learning_rate
        total = steps_per_epoch * settings.epochs
        if self.name == "marco":
            schedule = keras.optimizers.schedules.ExponentialDecay(
                lr or 0.045, decay_steps=2 * steps_per_epoch, decay_rate=0.94, staircase=True
            )
            return keras.optimizers.RMSprop(
                schedule, rho=0.9, momentum=0.9, epsilon=0.1, use_ema=True, ema_momentum=0.9999
            )
        if self.name == "merck":
            schedule = keras.optimizers.schedules.ExponentialDecay(
                lr or 0.1, decay_steps=20 * steps_per_epoch, decay_rate=0.1, staircase=True
            )
            return keras.optimizers.SGD(schedule, momentum=0.9)
        if self.name == "finetune":
            return keras.optimizers.Adam(lr or 1e-3)
        if self.name == "focus":
            return keras.optimizers.Adam(lr or 5e-4)
        first = lr or (1e-3 if self.trunk_features else 2e-3)
        schedule = keras.optimizers.schedules.CosineDecay(first, max(total, 1), alpha=0.02)
        return keras.optimizers.Adam(schedule)


RECIPES = {
    "marco": Recipe("marco", "marco", balance=False, keep_best=False, ema=True),
    "merck": Recipe("merck", "merck", balance=True, keep_best=True, ema=False),
    "finetune": Recipe("finetune", "merck", balance=False, keep_best=True, ema=False),
    "default": Recipe("default", "default", balance=False, keep_best=False, ema=False),
    "focus": Recipe("focus", "noisy", balance=False, keep_best=False, ema=False),
    "frozen-trunk": Recipe(
        "frozen-trunk", "none", balance=False, keep_best=True, ema=False, trunk_features=True
    ),
}


def recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r} (known: {', '.join(RECIPES)})") from None
