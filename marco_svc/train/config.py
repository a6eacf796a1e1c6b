"""Training configuration: a TOML preset (see models/presets/) read into dataclasses.

Sections: [model] (architecture, name, version, init for fine-tuning, warm_start for a
changed network seeded from a trained one), [data] (where the images come from: a data set
spec or "synthetic", splits), [data.synthetic] (generator settings), [recipe] (marco |
merck | finetune | default | focus | frozen-trunk and its hyper-parameters),
[export] (formats and checks). Unknown keys are errors, so a typo never trains silently
with a default.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marco_svc.labels import SCHEMES

RECIPES = ("marco", "merck", "finetune", "default", "focus", "frozen-trunk")


class ConfigError(ValueError):
    """A training configuration that cannot be used, and why."""


@dataclass
class ModelSection:
    architecture: str = "compact-two-head"
    name: str = "model"
    version: str = "1"
    init: str = ""  # a registered model (NAME[:VERSION]) to start from: fine-tuning
    # A model (NAME[:VERSION] or folder) whose weights seed a fresh `architecture` wherever
    # a layer's name and weight shapes match; the other layers start new (a changed head).
    warm_start: str = ""


@dataclass
class SyntheticSection:
    images: int = 2000
    seed: int = 1
    size: list[int] = field(default_factory=lambda: [256, 306])
    mix: dict[str, float] = field(default_factory=dict)  # ten-way label -> share; {} balanced
    group_size: int = 96  # images per synthetic plate (the unit of the group-aware splits)
    backgrounds: str = ""  # a folder of real clear-drop images to composite onto
    jobs: int = 2
    looks: dict[str, float] = field(default_factory=dict)  # imager look -> share; {} default
    held_out_look: str = ""  # a look never trained on, evaluated on a set of its own
    held_out_images: int = 0  # the size of that set


@dataclass
class DataSection:
    train: str = "synthetic"  # a folder, .csv manifest, TFRecord glob, or "synthetic"
    validation: str = ""  # a separate set; else a group-aware split of `train`
    test: str = ""
    scheme: str = ""  # force marco4 / merck10 when labels are ambiguous
    validation_share: float = 0.1
    test_share: float = 0.1
    split_seed: int = 0
    cache_dir: str = ""  # where synthetic sets are written (default <data_dir>/synthetic)
    synthetic: SyntheticSection = field(default_factory=SyntheticSection)


@dataclass
class RecipeSection:
    name: str = "default"
    batch_size: int = 32
    epochs: int = 10
    steps_per_epoch: int = 0  # 0: one pass over the training images
    learning_rate: float = 0.0  # 0: the recipe's own
    augment: str = ""  # "": the recipe's own
    early_stopping: int = 0  # patience in epochs (0: off)
    freeze_epochs: int = 2  # fine-tuning: epochs with the trunk frozen
    trainable_heads: list[str] = field(default_factory=list)  # while frozen ([]: every head)
    seed: int = 0


@dataclass
class ExportSection:
    formats: list[str] = field(default_factory=lambda: ["tflite-int8"])
    min_agreement: float = 0.99
    check_images: int = 400  # validation images for the export check
    float_stem: bool = False  # int8: keep the ops that read the image in float32


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    recipe: RecipeSection = field(default_factory=RecipeSection)
    export: ExportSection = field(default_factory=ExportSection)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _section(kind: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {', '.join(unknown)} (known: {', '.join(known)})")
    built = {}
    for key, value in values.items():
        if key == "synthetic":
            built[key] = _section(SyntheticSection, value, f"{where}.synthetic")
        else:
            built[key] = value
    try:
        return kind(**built)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def parse_config(values: dict[str, Any], source: str = "<dict>") -> TrainConfig:
    """Build and check a TrainConfig from parsed TOML."""
    sections = {
        "model": ModelSection,
        "data": DataSection,
        "recipe": RecipeSection,
        "export": ExportSection,
    }
    unknown = sorted(set(values) - set(sections))
    if unknown:
        raise ConfigError(f"{source}: unknown sections {', '.join(unknown)}")
    parts = {
        key: _section(kind, values.get(key, {}), f"{source} [{key}]")
        for key, kind in sections.items()
    }
    config = TrainConfig(**parts, source=source)
    if config.recipe.name not in RECIPES:
        raise ConfigError(f"{source}: unknown recipe {config.recipe.name!r} (known: {RECIPES})")
    if config.recipe.name == "finetune" and not config.model.init:
        raise ConfigError(f"{source}: the finetune recipe needs [model] init = a registered model")
    if config.model.init and config.model.warm_start:
        raise ConfigError(f"{source}: [model] init and warm_start exclude each other")
    if config.recipe.name == "focus" and not config.model.warm_start:
        raise ConfigError(f"{source}: the focus recipe needs [model] warm_start = a model")
    if config.recipe.name == "frozen-trunk" and config.recipe.augment not in ("", "none"):
        raise ConfigError(f"{source}: frozen-trunk computes features once: no augment")
    if set(config.recipe.trainable_heads) - set(SCHEMES):
        raise ConfigError(f"{source}: trainable_heads must be among {', '.join(SCHEMES)}")
    if config.recipe.batch_size < 1 or config.recipe.epochs < 1:
        raise ConfigError(f"{source}: batch_size and epochs must be >= 1")
    synth = config.data.synthetic
    if synth.held_out_look and synth.looks.get(synth.held_out_look, 0) > 0:
        raise ConfigError(f"{source}: held_out_look {synth.held_out_look!r} is in the looks mix")
    if synth.held_out_look and synth.held_out_images < 1:
        raise ConfigError(f"{source}: held_out_look needs held_out_images >= 1")
    if config.data.validation_share + config.data.test_share >= 1:
        raise ConfigError(f"{source}: validation_share + test_share must be < 1")
    return config


def load_config(
    path: str | Path, overrides: dict[str, dict[str, Any]] | None = None
) -> TrainConfig:
    """Read a TOML preset; `overrides` ({section: {key: value}}) win over the file."""
    path = Path(path)
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read training config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"training config {path} is not valid TOML: {exc}") from None
    for section, changes in (overrides or {}).items():
        values.setdefault(section, {}).update(changes)
    return parse_config(values, str(path))
