"""`train(config)`: data -> model -> fit -> saved model folder (card + model.keras) -> exports.

Everything is checked before the first step: the data sets are read and validated (empty,
unreadable, unknown labels, a class without examples are `DatasetError`s), the recipe and
network exist. Fitting writes resumable checkpoints under `<out>/checkpoints` (running the
same command again resumes where it stopped) and a per-epoch `history.csv`. With GPUs
present, mixed precision is on and several GPUs train under `MirroredStrategy`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np

from marco_svc.config import Settings
from marco_svc.nets.card import ModelCard
from marco_svc.train.config import TrainConfig
from marco_svc.train.datasets import DatasetError, LabelledSet, read_dataset, read_manifest
from marco_svc.train.recipes import recipe as recipe_named
from marco_svc.train.splits import split

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


@dataclass
class TrainData:
    train: LabelledSet
    validation: LabelledSet
    test: LabelledSet | None
    origin: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    folder: Path
    card: ModelCard
    seconds: dict[str, float]


def synthetic_manifest(config: TrainConfig, settings: Settings, progress: Progress) -> Path:
    """Render (once; reused when its settings match) the configured synthetic set."""
    from marco_svc.synth.background import backgrounds_from_folder
    from marco_svc.synth.dataset import write_dataset

    synth = config.data.synthetic
    key = json.dumps(
        [synth.images, synth.seed, synth.size, sorted(synth.mix.items()), synth.backgrounds]
        + ([synth.group_size] if synth.group_size != 96 else [])
        + ([sorted(synth.looks.items())] if synth.looks else [])
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    if config.data.cache_dir:
        root = Path(config.data.cache_dir) / digest
    else:
        root = settings.resolved_data_dir / "synthetic" / f"set-{digest}"
    manifest = root / "manifest.csv"
    done = root / ".complete"
    if done.exists():
        progress(f"synthetic set: reusing {root}")
        return manifest
    backgrounds = backgrounds_from_folder(synth.backgrounds) if synth.backgrounds else []
    progress(f"synthetic set: rendering {synth.images} images into {root}")
    step = max(synth.images // 20, 1)

    def tick(n: int, total: int) -> None:
        if n % step == 0 or n == total:
            progress(f"  rendered {n}/{total}")

    write_dataset(
        root,
        synth.images,
        seed=synth.seed,
        size=tuple(synth.size),
        class_mix=synth.mix or None,
        group_size=synth.group_size,
        backgrounds=backgrounds,
        jobs=synth.jobs,
        progress=tick,
        looks=synth.looks or None,
    )
    done.write_text(key + "\n")
    return manifest


def _empty_split(name: str, full: LabelledSet, share: float) -> str:
    """Why a split came out empty, and how much data it takes."""
    groups = len({example.group for example in full.examples})
    needed = math.ceil(3 / share) if share > 0 else None
    advice = (
        f"each group lands in the {name} split with probability {share:g}, so about "
        f"{needed} groups are needed for it to get some"
        if needed
        else f"its share is 0 and no {name} set is named"
    )
    return (
        f"the {name} split of {full.origin} is empty: {len(full.examples)} images in "
        f"{groups} groups (splits go by group); {advice}. Add images or groups, or name a "
        f"{name} set in [data]"
    )


def load_data(config: TrainConfig, settings: Settings, progress: Progress) -> TrainData:
    """The train / validation / test sets, split by group unless given separately."""
    scheme = config.data.scheme or None
    spec = config.data.train
    if spec == "synthetic":
        full = read_manifest(synthetic_manifest(config, settings, progress), scheme)
    else:
        full = read_dataset(spec, scheme)
    shares = [config.data.validation_share, config.data.test_share]
    if config.data.validation:
        shares[0] = 0.0
    if config.data.test:
        shares[1] = 0.0
    train, validation, test = split(full, [1 - sum(shares), *shares], seed=config.data.split_seed)
    if config.data.validation:
        validation = read_dataset(config.data.validation, full.scheme)
    if config.data.test:
        test = read_dataset(config.data.test, full.scheme)
    for name, part, share in (
        ("training", train, 1 - sum(shares)),
        ("validation", validation, shares[0]),
    ):
        if not part.examples:
            raise DatasetError(_empty_split(name, full, share))
    missing = train.absent()
    if missing:
        raise DatasetError(
            f"the training split of {full.origin} has no examples of {', '.join(missing)}"
        )
    return TrainData(train, validation, test if test.examples else None, {"train": spec})


def _strategy_and_precision() -> tuple[Any, bool]:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    return strategy, bool(gpus)


def _initial(config: TrainConfig, settings: Settings) -> tuple[Any, ModelCard, dict[str, Any]]:
    """The network to train and its card: a fresh architecture or a model to fine-tune."""
    from marco_svc.nets.architectures import architecture, new_card

    if config.model.init:
        base, model = _stored_keras(settings, config.model.init, "fine-tune")
        card = ModelCard.from_dict(base.card.to_dict())
        card.name, card.version = config.model.name, config.model.version
        card.artifacts, card.exports, card.metrics, card.operating_points = {}, {}, {}, {}
        card.calibration = {}  # the base network's temperature is not this one's
        return model, card, {"fine_tuned_from": base.ref, "sha256": base.card.artifacts}
    keras.utils.set_random_seed(config.recipe.seed)
    model = architecture(config.model.architecture).build()
    card = new_card(config.model.architecture, config.model.name, config.model.version)
    if config.model.warm_start:
        return model, card, _warm_start(model, config.model.warm_start, settings)
    return model, card, {}


def _stored_keras(settings: Settings, ref: str, purpose: str) -> tuple[Any, Any]:
    """A stored model by NAME[:VERSION] or folder, and its loaded Keras network."""
    from marco_svc.registry import find

    base = find(settings, ref)
    if "keras" not in base.card.artifacts:
        raise ValueError(f"{base.ref} has no Keras artifact to {purpose}")
    import marco_svc.nets.resnet_cifar  # noqa: F401 - custom layers

    return base, keras.saving.load_model(base.folder / base.card.artifacts["keras"].file)


def _warm_start(model: Any, ref: str, settings: Settings) -> dict[str, Any]:
    """Copy into `model` the weights of every layer of the model `ref` with the same name
    and weight shapes; the rest keep their fresh weights. What was copied, for the card."""
    base, source = _stored_keras(settings, ref, "start from")
    given = {layer.name: layer for layer in source.layers}
    copied, fresh = [], []
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        old = given.get(layer.name)
        old_weights = old.get_weights() if old is not None else []
        if [w.shape for w in old_weights] == [w.shape for w in weights]:
            layer.set_weights(old_weights)
            copied.append(layer.name)
        else:
            fresh.append(layer.name)
    if not copied:
        raise ValueError(f"{base.ref} shares no layer with {model.name}; nothing to start from")
    log.info("warm start from %s: %d layers copied, new: %s", base.ref, len(copied), fresh)
    return {
        "warm_started_from": base.ref,
        "sha256": base.card.artifacts,
        "layers_copied": len(copied),
        "new_layers": fresh,
    }


def _compile(model: Any, optimizer: Any, heads: list[str]) -> None:
    from marco_svc.nets.resnet_cifar import MaskedSparseCategoricalCrossentropy

    losses = {scheme: MaskedSparseCategoricalCrossentropy() for scheme in heads}
    model.compile(optimizer=optimizer, loss=losses, jit_compile=False)


def _is_head_layer(name: str, heads: list[str]) -> bool:
    """A head's layers are named by its scheme, or start with `<scheme>.`."""
    return any(name == scheme or name.startswith(f"{scheme}.") for scheme in heads)


def _set_trunk_trainable(model: Any, heads: list[str], trainable: bool) -> None:
    for layer in model.layers:
        if not _is_head_layer(layer.name, heads):
            layer.trainable = trainable


class KeepBest(keras.callbacks.Callback):
    """Remember the weights of the epoch with the lowest validation loss, by variable path,
    across fits (fine-tuning fits twice, with different optimizers), and put them back."""

    def __init__(self) -> None:
        super().__init__()
        self.loss, self.epoch = float("inf"), None
        self.values: dict[str, np.ndarray] = {}

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        loss = (logs or {}).get("val_loss")
        if loss is not None and loss < self.loss:
            self.loss, self.epoch = float(loss), epoch
            self.values = {v.path: v.numpy() for v in self.model.weights}

    def restore(self, model: Any) -> None:
        for variable in model.weights:
            if variable.path in self.values:
                variable.assign(self.values[variable.path])


def fit(
    model: Any,
    card: ModelCard,
    config: TrainConfig,
    data: TrainData,
    out: Path,
    verbose: int,
    extra_callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Run the recipe; returns what happened (epochs, steps, best validation loss)."""
    from marco_svc.nets.preprocessing import from_spec
    from marco_svc.train.pipeline import evaluation_dataset, training_dataset

    settings = config.recipe
    chosen = recipe_named(settings.name)
    heads = list(card.heads)
    prep = from_spec(card.preprocessing)
    steps = settings.steps_per_epoch or max(len(data.train.examples) // settings.batch_size, 1)
    features: dict[str, Any] = {}
    if chosen.trunk_features:  # from here `model` is the heads alone (the network's layers)
        from marco_svc.train.trunk_features import feature_datasets

        model, train_ds, val_ds, features = feature_datasets(
            model,
            card,
            data.train,
            data.validation,
            settings.batch_size,
            settings.seed,
            out,
            verbose,
        )
    else:
        train_ds = training_dataset(
            data.train,
            prep,
            heads,
            settings.batch_size,
            augment=settings.augment or chosen.augment,
            balance=chosen.balance,
            seed=settings.seed,
        )
        val_ds = evaluation_dataset(data.validation, prep, heads, settings.batch_size)
    logger = keras.callbacks.CSVLogger(str(out / "history.csv"), append=True)
    callbacks: list[Any] = [
        keras.callbacks.BackupAndRestore(str(out / "checkpoints")),
        logger,
        *extra_callbacks,
    ]
    keeper = KeepBest()
    if chosen.keep_best:
        callbacks.append(keeper)
    if settings.early_stopping:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=settings.early_stopping)
        )
    # finetune always starts with the heads alone; focus only when asked (freeze_epochs)
    starts_frozen = settings.name == "finetune" or (
        settings.name == "focus" and settings.freeze_epochs > 0
    )
    frozen = min(settings.freeze_epochs, settings.epochs) if starts_frozen else 0
    history: dict[str, list[float]] = {}

    def run(first: int, last: int) -> None:
        result = model.fit(
            train_ds,
            initial_epoch=first,
            epochs=last,
            steps_per_epoch=steps,
            validation_data=val_ds,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,  # the datasets shuffle themselves
        )
        for key, values in result.history.items():
            history.setdefault(key, []).extend(values)

    try:
        if frozen:
            _set_trunk_trainable(model, settings.trainable_heads or heads, False)
            _compile(model, chosen.optimizer(settings, steps), heads)
            run(0, frozen)
            _set_trunk_trainable(model, heads, True)
            settings = replace(settings, learning_rate=(settings.learning_rate or 1e-3) / 10)
        _compile(model, chosen.optimizer(settings, steps), heads)
        run(frozen, settings.epochs)
    finally:  # an interrupted fit never reaches on_train_end, which closes the log
        if getattr(logger, "csv_file", None) is not None and not logger.csv_file.closed:
            logger.csv_file.close()
    if chosen.keep_best:
        keeper.restore(model)
    val_loss = history.get("val_loss", [])
    return {
        "epochs": len(history.get("loss", [])),
        "steps_per_epoch": steps,
        "batch_size": settings.batch_size,
        "final_loss": history["loss"][-1] if history.get("loss") else None,
        "best_val_loss": min(val_loss) if val_loss else None,
        "restored_best_epoch": keeper.epoch,
        **({"trunk_features": features} if features else {}),
    }


def _looks_in(config: TrainConfig) -> str:
    """The configured look mix in words; "" when the set has the default look only."""
    synth = config.data.synthetic
    if not synth.looks and not synth.held_out_look:
        return ""
    trained = ", ".join(f"{k} {v:g}" for k, v in synth.looks.items()) or "formulatrix"
    return trained + (f"; held out: {synth.held_out_look}" if synth.held_out_look else "")


def evaluate_looks(
    config: TrainConfig,
    settings: Settings,
    stored: Any,
    test: LabelledSet,
    progress: Progress,
) -> dict[str, Any]:
    """Held-out figures per look of the test split, and on the held-out look's own set."""
    from marco_svc.train.evaluation import card_figures, evaluate_model
    from marco_svc.train.looks_eval import look_summary, looks_of, split_by_look

    synth = config.data.synthetic
    manifest = synthetic_manifest(config, settings, progress)
    figures: dict[str, Any] = {}
    for look, part in split_by_look(test, looks_of(manifest)).items():
        result = evaluate_model(stored, part, "keras", 64)
        figures[look] = look_summary(card_figures(result), in_training=True)
    if synth.held_out_look:
        unseen = replace(
            synth,
            images=synth.held_out_images,
            seed=synth.seed + 1,
            looks={synth.held_out_look: 1.0},
            held_out_look="",
        )
        other = replace(config, data=replace(config.data, synthetic=unseen))
        part = read_manifest(synthetic_manifest(other, settings, progress), test.scheme)
        result = evaluate_model(stored, part, "keras", 64)
        figures[synth.held_out_look] = look_summary(card_figures(result), in_training=False)
    return figures


def save_without_optimizer(model: Any, path: Path) -> None:
    """Save the network and its weights only (the optimizer state would triple the file)."""
    # A new, uncompiled functional model over the same layers (clone_model would compile).
    keras.Model(model.input, model.output, name=model.name).save(path)


def predict_inputs(data: LabelledSet, card: ModelCard, limit: int) -> np.ndarray:
    """Up to `limit` preprocessed inputs of a set (export checks and calibration)."""
    from marco_svc.nets.preprocessing import from_spec
    from marco_svc.train.pipeline import input_batches

    subset = LabelledSet(data.origin, data.scheme, data.examples[:limit])
    batches = input_batches(subset, from_spec(card.preprocessing), 64)
    return np.concatenate([b.numpy() for b in batches]) if subset.examples else np.zeros((0,))


def train(
    config: TrainConfig,
    settings: Settings,
    out: Path,
    progress: Progress = log.info,
    verbose: int = 1,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train per the config into the folder `out` (card.json, model.keras, exports, report)."""
    from marco_svc.registry import StoredModel
    from marco_svc.train.evaluation import (
        apply_to_card,
        card_figures,
        evaluate_model,
        write_result_report,
    )
    from marco_svc.train.export import export_model

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    recipe_named(config.recipe.name)
    data = load_data(config, settings, progress)
    seconds["data"] = time.perf_counter() - started
    progress(
        f"data: {len(data.train.examples)} training, {len(data.validation.examples)} "
        f"validation, {len(data.test.examples) if data.test else 0} test images "
        f"({data.train.scheme})"
    )
    out.mkdir(parents=True, exist_ok=True)
    strategy, gpu = _strategy_and_precision()
    with strategy.scope():
        model, card, origin = _initial(config, settings)
        tick = time.perf_counter()
        summary = fit(model, card, config, data, out, verbose, callbacks)
    seconds["fit"] = time.perf_counter() - tick
    if gpu:
        keras.mixed_precision.set_global_policy("float32")
    save_without_optimizer(model, out / "model.keras")
    card.add_artifact("keras", out, "model.keras")
    synthetic = config.data.train == "synthetic"
    card.provenance = {
        "trained_by": "marco-svc train",
        "config": config.source,
        "synthetic_training_data": synthetic,
        **origin,
    }
    card.training = {
        "recipe": config.recipe.name,
        "config": config.to_dict(),
        "images": {
            "train": len(data.train.examples),
            "validation": len(data.validation.examples),
            "test": len(data.test.examples) if data.test else 0,
        },
        "class_counts": data.train.counts(),
        **summary,
        "gpu": gpu,
    }
    card.save(out)
    progress(f"saved {out / 'model.keras'} after {seconds['fit']:.0f} s of fitting")

    stored = StoredModel(card, out, "path")
    if data.test is not None:
        tick = time.perf_counter()
        result = evaluate_model(stored, data.test, "keras", 64)
        write_result_report(out / "report", result)
        apply_to_card(card, "held_out_synthetic" if synthetic else "held_out", card_figures(result))
        card.save(out)
        seconds["evaluate"] = time.perf_counter() - tick

    if data.test is not None and "marco4" in card.heads:  # temperature scaling, issue 17
        from marco_svc.train.calibration import calibrate_card

        tick = time.perf_counter()
        validation = evaluate_model(stored, data.validation, "keras", 64, calibrated=False)
        result = calibrate_card(card, validation, result)  # T from validation, ECE on test
        write_result_report(out / "report", result)  # the held-out figures as now served
        apply_to_card(card, "held_out_synthetic" if synthetic else "held_out", card_figures(result))
        card.save(out)
        seconds["calibrate"] = time.perf_counter() - tick

    if synthetic and data.test is not None and (synth_looks := _looks_in(config)):
        tick = time.perf_counter()
        card.metrics["looks"] = evaluate_looks(config, settings, stored, data.test, progress)
        progress(f"held-out figures per look: {sorted(card.metrics['looks'])} ({synth_looks})")
        card.save(out)
        seconds["evaluate_looks"] = time.perf_counter() - tick

    if config.export.formats:
        check_set = data.test or data.validation
        inputs = predict_inputs(check_set, card, config.export.check_images)
    for fmt in config.export.formats:
        tick = time.perf_counter()
        figures = export_model(
            card,
            out,
            fmt,
            inputs,
            config.export.min_agreement,
            float_stem=config.export.float_stem,
        )
        seconds[f"export_{fmt}"] = time.perf_counter() - tick
        progress(f"exported {fmt}: top-1 agreement {figures['top1_agreement']}")
    seconds["total"] = time.perf_counter() - started
    card.training["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    card.save(out)
    return TrainResult(out, card, seconds)
