"""Helpers for the network tests: small model folders with real Keras and TFLite artifacts."""

from __future__ import annotations

from pathlib import Path

from marco_svc.nets.architectures import architecture, new_card
from marco_svc.nets.card import ModelCard


def write_model_folder(
    folder: Path,
    arch: str = "resnet-32",
    name: str = "tiny",
    version: str = "1",
    tflite: bool = False,
    seed: int = 0,
) -> ModelCard:
    """A random-weight network of `arch` saved as model.keras (and model.tflite) with its card."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    model = architecture(arch).build()
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    card = new_card(arch, name, version, notes="random weights, for tests")
    card.add_artifact("keras", folder, "model.keras")
    if tflite:
        from marco_svc.nets.runner import serving_model

        serving = serving_model(model, list(card.heads))
        (folder / "model.tflite").write_bytes(
            tf.lite.TFLiteConverter.from_keras_model(serving).convert()
        )
        card.add_artifact("tflite-fp32", folder, "model.tflite")
    card.save(folder)
    return card


def write_fake_model_folder(folder: Path, name: str = "fake", version: str = "1", **kw) -> Path:
    """A model folder with a card and a placeholder artifact (for registry tests, no TF)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.keras").write_bytes(f"{name}:{version}:{kw.get('content', '')}".encode())
    card = new_card(kw.get("arch", "resnet-32"), name, version, created_at=kw.get("at", "2024"))
    card.add_artifact("keras", folder, "model.keras")
    card.save(folder)
    return folder
