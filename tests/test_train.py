"""Training: a tiny model trained for a few steps on generated drops, exported, scored.

Also the recipes' pieces (class balancing, fine-tuning from a registered model) and the
bad-input checks that must stop a run before any training starts.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from marco_svc.config import Settings, load_settings
from marco_svc.labels import MARCO4, MERCK10
from marco_svc.train.config import ConfigError, load_config, parse_config
from marco_svc.train.datasets import DatasetError
from tests.helpers import run_cli

pytestmark = pytest.mark.slow

TINY = {
    "model": {"architecture": "compact-two-head", "name": "tiny", "version": "1"},
    "data": {
        "train": "synthetic",
        "validation_share": 0.2,
        "test_share": 0.2,
        "synthetic": {"images": 80, "seed": 3, "size": [64, 77], "group_size": 4, "jobs": 1},
    },
    "recipe": {"name": "default", "batch_size": 8, "epochs": 1, "steps_per_epoch": 3},
    "export": {"formats": ["tflite-int8"], "min_agreement": 0.0, "check_images": 16},
}


def _toml(values: dict, path: Path) -> Path:
    """A tiny TOML writer for the nested dicts above (strings, numbers, lists, tables)."""

    def scalar(v: object) -> str:
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        return str(v)

    lines: list[str] = []

    def table(name: str, body: dict) -> None:
        lines.append(f"[{name}]")
        lines.extend(f'"{k}" = {scalar(v)}' for k, v in body.items() if not isinstance(v, dict))
        for key, sub in body.items():
            if isinstance(sub, dict):
                table(f"{name}.{key}", sub)

    for section, body in values.items():
        table(section, body)
    path.write_text("\n".join(lines) + "\n")
    return path


def _tiny(tmp_path: Path, **changes: dict) -> dict:
    values = {k: {**v} for k, v in TINY.items()}
    values["data"]["cache_dir"] = str(tmp_path / "synthetic")
    for section, change in changes.items():
        values[section].update(change)
    return values


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Settings]:
    """A tiny two-head model trained for 3 steps, evaluated and exported to int8."""
    from marco_svc.train.trainer import train

    tmp = tmp_path_factory.mktemp("train")
    settings = load_settings(env={}, data_dir=tmp / "data", database_url=f"sqlite:///{tmp}/db")
    config = parse_config(_tiny(tmp), "tiny")
    train(config, settings, tmp / "model", verbose=0)
    return tmp / "model", settings


def test_tiny_training_writes_a_model_card_report_and_checked_int8_export(
    trained: tuple[Path, Settings],
) -> None:
    from marco_svc.nets.card import ModelCard

    folder, _ = trained
    card = ModelCard.load(folder)
    card.verify(folder)
    assert set(card.artifacts) == {"keras", "tflite-int8"}
    assert card.artifacts["keras"].bytes < 5_000_000  # weights only, no optimizer state
    assert card.provenance["synthetic_training_data"] is True
    assert card.training["recipe"] == "default"
    assert card.training["epochs"] == 1 and card.training["steps_per_epoch"] == 3
    assert sum(card.training["images"].values()) == 80
    held_out = card.metrics["evaluation"]["held_out_synthetic"]
    assert set(held_out["heads"]) == {MARCO4, MERCK10}
    assert held_out["examples"] == card.training["images"]["test"]
    calibration = card.calibration[MARCO4]  # T from the validation split, ECE on the test split
    assert calibration["fitted_examples"] == card.training["images"]["validation"]
    assert calibration["examples"] == held_out["examples"] and calibration["temperature"] > 0
    export = card.exports["tflite-int8"]
    assert export["images"] == 16 and set(export["top1_agreement"]) == {MARCO4, MERCK10}
    assert (folder / "report" / "report.html").exists()
    assert (folder / "report" / "confusion_merck10.png").read_bytes()[:4] == b"\x89PNG"
    with (folder / "history.csv").open() as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["0"]


def test_the_export_scores_a_generated_drop_like_the_keras_model(
    trained: tuple[Path, Settings],
) -> None:
    from marco_svc.nets.card import ModelCard
    from marco_svc.nets.runner import open_runner
    from marco_svc.synth.camera import encode_jpeg
    from marco_svc.synth.render import render_drop

    folder, _ = trained
    card = ModelCard.load(folder)
    jpeg = encode_jpeg(render_drop("large crystals", 11, (96, 115)).image, 95)
    int8, keras_runner = open_runner(card, folder, "tflite-int8"), open_runner(card, folder)
    got = int8.predict(int8.preprocess(jpeg)[None])
    want = keras_runner.predict(keras_runner.preprocess(jpeg)[None])
    for scheme in (MARCO4, MERCK10):
        assert got[scheme].shape == want[scheme].shape
        assert got[scheme].sum() == pytest.approx(1.0, abs=0.02)
        assert np.abs(got[scheme] - want[scheme]).max() < 0.1


def test_cli_registers_and_exports_fp32_that_agrees(tmp_path: Path) -> None:
    preset = _toml(_tiny(tmp_path, export={"formats": [], "check_images": 8}), tmp_path / "t.toml")
    env = {"MARCO_DATA_DIR": str(tmp_path / "data"), "MARCO_CONFIG": ""}
    done = run_cli("train", str(preset), "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert '"model": "tiny:1"' in done.stdout
    done = run_cli("models", "export", "tiny:1", "--format", "tflite-fp32", "--count", "12",
                   env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "top-1 agreement marco4 100.00%, merck10 100.00%" in done.stdout
    card = (tmp_path / "data" / "models" / "tiny" / "1" / "card.json").read_text()
    assert "model-fp32.tflite" in card
    done = run_cli("models", "export", "tiny:1", "--format", "tflite-int8", "--float-stem",
                   "--count", "12", "--min-agreement", "0", "--json", env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["float_stem"] is True
    card = json.loads((tmp_path / "data" / "models" / "tiny" / "1" / "card.json").read_text())
    assert card["exports"]["tflite-int8"]["float_stem"] is True
    plate = _one_jpeg(tmp_path / "plate").parent
    scored = run_cli("score", "--model", "tiny:1", str(plate), env=env)
    assert scored.returncode == 0, scored.stderr
    assert '"probs"' in scored.stdout
    checked = run_cli("models", "check-plate", "tiny:1", str(plate), "--record", "--json",
                      env=env)  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    shares = json.loads(checked.stdout)["shares"]
    assert set(shares) == {"keras", "tflite-fp32", "tflite-int8"}
    assert shares["keras"]["images"] == 1
    assert sum(shares["keras"]["marco4"].values()) == pytest.approx(1.0)
    card = json.loads((tmp_path / "data" / "models" / "tiny" / "1" / "card.json").read_text())
    assert card["metrics"]["unlabelled_plates"]["plate"] == shares
    again = run_cli("models", "check-plate", "tiny:1", str(plate), "--record", "--format", "keras",
                    env=env)  # fmt: skip
    assert again.returncode == 0, again.stderr
    card = json.loads((tmp_path / "data" / "models" / "tiny" / "1" / "card.json").read_text())
    assert set(card["metrics"]["unlabelled_plates"]["plate"]) == {
        "keras",
        "tflite-fp32",
        "tflite-int8",
    }


def _one_jpeg(tmp_path: Path) -> Path:
    from marco_svc.synth.camera import encode_jpeg
    from marco_svc.synth.render import render_drop

    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "drop.jpg"
    path.write_bytes(encode_jpeg(render_drop("clear", 5, (96, 115)).image, 95))
    return path


def test_an_export_below_the_agreement_floor_is_refused_and_not_written(
    trained: tuple[Path, Settings],
) -> None:
    from marco_svc.nets.card import ModelCard
    from marco_svc.train.export import ExportRefused, export_model

    folder, _ = trained
    card = ModelCard.load(folder)
    # Random inputs far outside the calibration range make int8 disagree; a floor of 100%
    # with a random check set must refuse rather than write a file.
    inputs = np.random.default_rng(0).uniform(-1, 1, (24, 192, 192, 1)).astype(np.float32)
    before = (folder / "card.json").read_text()
    with pytest.raises(ExportRefused, match="agrees with the Keras model"):
        export_model(card, folder, "tflite-fp16", inputs * 40, min_agreement=1.01)
    assert not (folder / "model-fp16.tflite").exists()
    assert (folder / "card.json").read_text() == before


def test_an_interrupted_run_resumes_from_its_last_epoch(tmp_path: Path) -> None:
    import keras

    from marco_svc.train.trainer import train

    class StopAfterSecondEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if epoch == 1:
                raise KeyboardInterrupt("power cut")

    settings = load_settings(env={}, data_dir=tmp_path / "data")
    values = _tiny(tmp_path, recipe={"epochs": 3, "steps_per_epoch": 2}, export={"formats": []})
    config = parse_config(values, "resume")
    with pytest.raises(KeyboardInterrupt):
        train(config, settings, tmp_path / "run", verbose=0, callbacks=[StopAfterSecondEpoch()])
    assert not (tmp_path / "run" / "model.keras").exists()
    train(config, settings, tmp_path / "run", verbose=0)
    with (tmp_path / "run" / "history.csv").open() as handle:
        epochs = [row["epoch"] for row in csv.DictReader(handle) if row["epoch"] != "epoch"]
    assert epochs == ["0", "1", "2"]  # epoch 2 only in the second run: nothing started over


@pytest.mark.parametrize("recipe", ["marco", "merck"])
def test_the_papers_recipes_train(tmp_path: Path, recipe: str) -> None:
    """MARCO (RMSProp, EMA weights) and Merck (SGD, balanced classes, best checkpoint)."""
    from marco_svc.nets.card import ModelCard
    from marco_svc.train.trainer import train

    values = _tiny(
        tmp_path,
        recipe={"name": recipe, "epochs": 2, "steps_per_epoch": 2},
        export={"formats": []},
    )
    values["data"]["test_share"] = 0.0
    settings = load_settings(env={}, data_dir=tmp_path / "data")
    train(parse_config(values, recipe), settings, tmp_path / "m", verbose=0)
    card = ModelCard.load(tmp_path / "m")
    assert card.training["recipe"] == recipe and card.training["epochs"] == 2
    assert card.training["images"]["test"] == 0 and "evaluation" not in card.metrics
    best = card.training["restored_best_epoch"]
    assert (best in (0, 1)) if recipe == "merck" else best is None


def test_keep_best_puts_back_the_weights_of_the_lowest_validation_loss() -> None:
    import keras

    from marco_svc.train.trainer import KeepBest

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    keeper = KeepBest()
    keeper.set_model(model)
    for epoch, (loss, value) in enumerate([(0.9, 1.0), (0.4, 2.0), (0.6, 3.0)]):
        for variable in model.weights:
            variable.assign(np.full(variable.shape, value))
        keeper.on_epoch_end(epoch, {"val_loss": loss})
    keeper.restore(model)
    assert keeper.epoch == 1
    assert all(np.all(v.numpy() == 2.0) for v in model.weights)


def test_merck_balancing_draws_every_class_about_equally(tmp_path: Path) -> None:
    from marco_svc.nets.preprocessing import from_spec
    from marco_svc.synth.dataset import write_dataset
    from marco_svc.train.datasets import read_manifest
    from marco_svc.train.pipeline import training_dataset

    mix = {"clear": 0.7, "bad drop": 0.1}
    mix.update({k: 0.025 for k in (
        "heavy precipitate", "large crystals", "light precipitate", "medium crystals",
        "micro crystals", "needles & plates", "phase separation", "small crystals")})  # fmt: skip
    data = read_manifest(write_dataset(tmp_path, 200, seed=4, size=(48, 58), class_mix=mix))
    assert data.counts()["clear"] > 100
    stream = training_dataset(data, from_spec({"name": "merck_gray", "size": 32}), [MERCK10],
                              50, balance=True)  # fmt: skip
    drawn = Counter()
    for _, targets in stream.take(20):
        drawn.update(targets[MERCK10].numpy().tolist())
    assert len(drawn) == 10
    assert max(drawn.values()) < 2.0 * min(drawn.values())  # clear alone would be ~70%


def test_fine_tuning_starts_from_a_registered_model(
    trained: tuple[Path, Settings], tmp_path: Path
) -> None:
    from marco_svc import registry
    from marco_svc.nets.card import ModelCard
    from marco_svc.train.trainer import train

    folder, settings = trained
    registry.register(settings, folder, name="base", version="7")
    values = _tiny(
        tmp_path,
        model={"name": "lab", "version": "1", "init": "base:7"},
        recipe={"name": "finetune", "epochs": 2, "freeze_epochs": 1, "steps_per_epoch": 2},
        export={"formats": []},
    )
    train(parse_config(values, "finetune"), settings, tmp_path / "lab", verbose=0)
    card = ModelCard.load(tmp_path / "lab")
    assert card.provenance["fine_tuned_from"] == "base:7"
    assert card.training["epochs"] == 2 and card.training["restored_best_epoch"] in (0, 1)
    assert card.preprocessing == ModelCard.load(folder).preprocessing


def test_the_focus_recipe_trains_a_changed_network_from_a_trained_one(
    trained: tuple[Path, Settings], tmp_path: Path
) -> None:
    from marco_svc.nets.card import ModelCard
    from marco_svc.train.trainer import train

    folder, settings = trained
    values = _tiny(
        tmp_path,
        model={"architecture": "compact-evidence-two-head", "name": "focused", "version": "1"},
        recipe={"name": "focus", "epochs": 1, "steps_per_epoch": 2, "freeze_epochs": 0},
        export={"formats": []},
    )
    values["model"]["warm_start"] = str(folder)
    train(parse_config(values, "focus"), settings, tmp_path / "focused", verbose=0)
    card = ModelCard.load(tmp_path / "focused")
    assert card.architecture == "compact-evidence-two-head"
    assert card.provenance["warm_started_from"].endswith(ModelCard.load(folder).name + ":1")
    assert f"{MARCO4}.crystal.conv" in card.provenance["new_layers"]
    assert card.training["recipe"] == "focus" and card.training["epochs"] == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"recipe": {"name": "adam-please"}}, "unknown recipe"),
        ({"recipe": {"name": "finetune"}}, "needs \\[model\\] init"),
        ({"recipe": {"name": "focus"}}, "needs \\[model\\] warm_start"),
        ({"recipe": {"trainable_heads": ["marco5"]}}, "trainable_heads must be among"),
        (
            {"model": {"init": "a", "warm_start": "b"}, "recipe": {"name": "finetune"}},
            "exclude each other",
        ),
        ({"recipe": {"bogus": 1}}, "unknown keys bogus"),
    ],
)
def test_bad_configs_are_refused(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(_tiny(tmp_path, **change), "bad")


def _manifest(tmp_path: Path, rows: list[tuple[str, str, str]]) -> Path:
    from tests.helpers import write_jpeg

    path = tmp_path / "set.csv"
    with path.open("w") as handle:
        handle.write("path,label,group\n")
        for i, (name, label, group) in enumerate(rows):
            write_jpeg(tmp_path / name, seed=i)
            handle.write(f"{name},{label},{group}\n")
    return path


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "no labelled images"),
        ([("a.jpg", "Clear", "g1"), ("b.jpg", "Sparkly", "g2")], "unknown labels"),
        ([("a.jpg", "Clear", "g1"), ("b.jpg", "Crystals", "g2")], "no examples of"),
        ([("a.jpg", "Clear", "g1")], r"split of .* is empty: 1 images in 1 groups .* groups are"),
    ],
)
def test_bad_data_stops_before_training_starts(
    tmp_path: Path, rows: list[tuple[str, str, str]], message: str
) -> None:
    from marco_svc.train.trainer import load_data

    values = _tiny(tmp_path)
    values["data"]["train"] = str(_manifest(tmp_path, rows))
    config = parse_config(values, "bad data")
    settings = load_settings(env={}, data_dir=tmp_path / "data")
    with pytest.raises(DatasetError, match=message):
        load_data(config, settings, lambda _m: None)


def test_cli_bad_data_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    values = _tiny(tmp_path)
    values["data"]["train"] = str(tmp_path / "missing.csv")
    preset = _toml(values, tmp_path / "bad.toml")
    done = run_cli("train", str(preset), "--out", str(tmp_path / "out"),
                   env={"MARCO_DATA_DIR": str(tmp_path / "data"), "MARCO_CONFIG": ""})  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0 and "cannot read manifest" in done.stderr
    assert not (tmp_path / "out").exists()


def test_presets_parse() -> None:
    root = Path(__file__).resolve().parents[1] / "models" / "presets"
    presets = sorted(root.glob("*.toml"))
    assert {p.stem for p in presets} >= {"default", "marco", "merck-resnet56", "finetune"}
    for preset in presets:
        load_config(preset)


def test_fine_tuning_freezes_every_layer_but_the_heads() -> None:
    """A head's layers are named by its scheme or start with `<scheme>.`; the rest is trunk."""
    import keras

    from marco_svc.train.trainer import _set_trunk_trainable

    inputs = keras.Input((8, 8, 1))
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(
        keras.layers.Conv2D(4, 3, name="stage1.conv")(inputs)
    )
    logits = keras.layers.Dense(4, name=f"{MARCO4}.logits")(pooled)
    outputs = {
        MARCO4: keras.layers.Activation("softmax", name=MARCO4)(logits),
        MERCK10: keras.layers.Dense(10, activation="softmax", name=MERCK10)(pooled),
    }
    model = keras.Model(inputs, outputs)
    _set_trunk_trainable(model, [MARCO4, MERCK10], False)
    trainable = {layer.name: layer.trainable for layer in model.layers}
    assert not trainable["stage1.conv"] and not trainable["pool"]
    assert trainable[f"{MARCO4}.logits"] and trainable[MARCO4] and trainable[MERCK10]
    _set_trunk_trainable(model, [MARCO4, MERCK10], True)
    assert all(layer.trainable for layer in model.layers)


def test_a_warm_start_copies_the_layers_it_shares_and_leaves_the_new_head_fresh(
    tmp_path: Path,
) -> None:
    """As default-focus.toml starts: the evidence head is new, the rest comes from stage 1."""
    import keras

    from marco_svc.nets.architectures import architecture, new_card
    from marco_svc.train.trainer import _warm_start

    keras.utils.set_random_seed(11)
    stage1 = architecture("compact-two-head").build()
    stage1.save(tmp_path / "model.keras")
    card = new_card("compact-two-head", "stage1", "1")
    card.add_artifact("keras", tmp_path, "model.keras")
    card.save(tmp_path)
    model = architecture("compact-evidence-two-head").build()
    origin = _warm_start(model, str(tmp_path), load_settings(env={}))
    for name in ("stem.conv", "stage3.b.bn", "stage4.b.conv", MERCK10):
        for new, old in zip(
            model.get_layer(name).get_weights(), stage1.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(new, old)
    assert f"{MARCO4}.crystal.conv" in origin["new_layers"]
    assert f"{MARCO4}.clear" in origin["new_layers"]
    assert origin["layers_copied"] == 19  # stem + 8 convolutions, each conv and bn; merck10


def test_held_out_figures_per_look_include_a_look_left_out_of_training(tmp_path: Path) -> None:
    """The card reports each trained look's test split and the left-out look's own set."""
    from marco_svc.train.trainer import train

    synthetic = {
        **TINY["data"]["synthetic"],
        "looks": {"formulatrix": 1.0, "minstrel": 1.0},
        "held_out_look": "hanging",
        "held_out_images": 12,
    }
    values = _tiny(tmp_path, export={"formats": []})
    values["data"]["synthetic"] = synthetic
    settings = load_settings(env={}, data_dir=tmp_path / "data", database_url="sqlite://")
    card = train(parse_config(values, "looks"), settings, tmp_path / "m", verbose=0).card
    looks = card.metrics["looks"]
    assert set(looks) == {"formulatrix", "minstrel", "hanging"}
    assert looks["hanging"] == {**looks["hanging"], "in_training": False, "examples": 12}
    trained = [looks[name] for name in ("formulatrix", "minstrel")]
    assert all(figures["in_training"] for figures in trained)
    assert sum(f["examples"] for f in trained) == card.training["images"]["test"]


@pytest.mark.parametrize(
    ("synthetic", "message"),
    [
        ({"looks": {"hanging": 1.0}, "held_out_look": "hanging", "held_out_images": 5}, "mix"),
        ({"held_out_look": "hanging"}, "held_out_images"),
    ],
)
def test_a_held_out_look_must_be_out_of_training_and_sized(
    tmp_path: Path, synthetic: dict, message: str
) -> None:
    values = _tiny(tmp_path)
    values["data"]["synthetic"] = {**TINY["data"]["synthetic"], **synthetic}
    with pytest.raises(ConfigError, match=message):
        parse_config(values, "bad")
