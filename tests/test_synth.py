"""The synthetic drop generator: every class renders with its ground truth, deterministically;
compositing, plates in imager layouts, training sets, the synthetic marker, `marco-svc demo`."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imager_adapters.record import ImageRecord
from imager_adapters.registry import parse_path
from marco_svc.labels import CRYSTAL_CLASSES_10, MERCK10_LABELS, TEN_TO_FOUR
from marco_svc.synth import (
    BAD_DROP_VARIANTS,
    FULL_SIZE,
    Background,
    backgrounds_from_folder,
    detect_drop,
    render_drop,
    synthetic_comment,
    write_dataset,
    write_plate,
)
from marco_svc.synth.bad import CAMERA_VARIANTS
from marco_svc.synth.camera import decode_jpeg
from marco_svc.synth.gallery import contact_sheet, gallery_rows
from marco_svc.synth.marking import NOTE_NAME
from marco_svc.synth.plates import LAYOUTS, ROCK_MAKER_COLUMNS, register_layout
from marco_svc.synth.render import VARIANTS
from tests.conftest import REAL_PLATE, REAL_PLATE_IMAGES, needs_real_plate
from tests.helpers import cli_json, jpeg_bytes, run_cli

SMALL = (128, 153)  # the full frame's aspect at 1/8 scale: fast
TINY = (64, 77)


def _inside(box, centre, radius, slack=1.0) -> bool:
    """All four corners of a box within the circle (radius scaled by slack)."""
    x0, y0, x1, y1 = box
    corners = [(x0, y0), (x0, y1), (x1, y0), (x1, y1)]
    return all(np.hypot(x - centre[0], y - centre[1]) <= radius * slack for x, y in corners)


@pytest.mark.parametrize("label", MERCK10_LABELS)
def test_every_class_renders_with_ground_truth(label: str) -> None:
    drop = render_drop(label, 7, SMALL)
    assert drop.image.shape == (*SMALL, 3)
    assert drop.image.dtype == np.uint8
    assert drop.image.std() > 5  # not blank
    assert drop.label == label
    assert drop.label4 == TEN_TO_FOUR[label]
    assert drop.seed == 7
    truth = drop.truth()
    assert {"label", "label4", "drop_x", "drop_y", "drop_radius", "crystal_boxes"} <= set(truth)
    json.dumps(truth)
    json.dumps(drop.params)
    assert 0 < drop.well_radius < SMALL[0]
    if label in CRYSTAL_CLASSES_10:
        assert drop.crystal_boxes, f"{label} drew no crystals"
        for box in drop.crystal_boxes:
            assert box[0] < box[2] and box[1] < box[3]
            assert _inside(box, drop.centre, drop.radius, slack=1.02), (box, drop.centre)
    else:
        assert drop.crystal_boxes == ()
    if label != "bad drop":
        assert drop.radius > 0.3 * SMALL[0]


@pytest.mark.parametrize("label", MERCK10_LABELS)
def test_render_is_deterministic_from_its_seed(label: str) -> None:
    first = render_drop(label, 11, SMALL)
    again = render_drop(label, 11, SMALL)
    assert first.image.tobytes() == again.image.tobytes()
    assert first.crystal_boxes == again.crystal_boxes
    assert first.params == again.params
    other = render_drop(label, 12, SMALL)
    assert np.abs(other.image.astype(int) - first.image.astype(int)).mean() > 2


@pytest.mark.parametrize("variant", BAD_DROP_VARIANTS)
def test_every_bad_drop_variant_renders(variant: str) -> None:
    drop = render_drop("bad drop", 3, SMALL, variant=variant)
    again = render_drop("bad drop", 3, SMALL, variant=variant)
    assert drop.image.tobytes() == again.image.tobytes()
    assert drop.variant == variant and drop.label4 == "Other"
    clear = render_drop("clear", 3, SMALL).image.astype(float)
    image = drop.image.astype(float)
    if variant == "dark":
        assert image.mean() < 0.5 * clear.mean()
    elif variant == "overexposed":
        assert image.mean() > clear.mean() + 20
    elif variant == "out of focus":
        edges = [np.percentile(np.abs(np.diff(x.mean(axis=2), axis=1)), 99) for x in (image, clear)]
        assert edges[0] < 0.7 * edges[1]
    elif variant == "no drop":
        assert drop.radius == 0
    elif variant == "contaminated":  # a normal drop: its contents make it bad (test_synth_kinds)
        assert drop.radius > 0 and drop.params["detail"] == ""
    else:
        assert drop.params["detail"] in ("off centre", "split", "smeared")


@pytest.mark.parametrize("label", CRYSTAL_CLASSES_10)
def test_crystal_count_is_exact_and_never_zero(label: str) -> None:
    for seed in range(12):
        for count in (1, 3):
            drop = render_drop(label, seed, TINY, crystals=count, distractors=False)
            assert len(drop.crystal_boxes) == count, (seed, count, drop.variant)
        assert render_drop(label, seed, TINY).crystal_boxes  # a crystal class shows crystals


def test_many_seeds_render_at_a_tiny_size() -> None:
    """Small drops (split dispensing failures) and extreme draws must not break a class."""
    for seed in range(30):
        for label in MERCK10_LABELS:
            assert render_drop(label, seed, (40, 48)).image.shape == (40, 48, 3)


def test_variants_are_chosen_by_seed_and_checked() -> None:
    seen = {render_drop("bad drop", seed, TINY).variant for seed in range(40)}
    assert seen == set(BAD_DROP_VARIANTS)
    for label, variants in VARIANTS.items():
        for variant in variants:
            assert render_drop(label, 1, TINY, variant=variant).variant == variant
    with pytest.raises(ValueError, match="no variant"):
        render_drop("clear", 1, TINY, variant="out of focus")
    with pytest.raises(ValueError, match="unknown ten-way label"):
        render_drop("Crystals", 1, TINY)
    with pytest.raises(ValueError, match="non-negative"):
        render_drop("clear", -1, TINY)
    with pytest.raises(ValueError, match="crystal classes only"):
        render_drop("clear", 1, TINY, crystals=1)


def test_full_size_render_is_a_rock_imager_frame() -> None:
    drop = render_drop("clear", 5)
    assert drop.image.shape == (*FULL_SIZE, 3)
    assert drop.jpeg is not None  # JPEG compression simulated at full size ...
    assert np.array_equal(decode_jpeg(drop.jpeg), drop.image)  # ... and the pixels are the file
    assert render_drop("clear", 5).jpeg == drop.jpeg
    with Image.open(io.BytesIO(drop.jpeg)) as image:
        assert image.size == (1224, 1024)
    # The same seed at a small size is the same scene, scaled.
    small = render_drop("clear", 5, SMALL)
    scale = SMALL[0] / FULL_SIZE[0]
    assert small.centre == pytest.approx((drop.centre[0] * scale, drop.centre[1] * scale), abs=0.5)
    assert small.radius == pytest.approx(drop.radius * scale, rel=1e-6)


def test_one_crystal_and_its_box_hold_the_change() -> None:
    """Same seed, same well: a one-crystal drop differs from the clear one inside the box."""
    clear = render_drop("large crystals", 21, (256, 306), distractors=False)
    crystal = render_drop("large crystals", 21, (256, 306), crystals=1, distractors=False)
    assert len(crystal.crystal_boxes) == 1
    empty = render_drop("clear", 21, (256, 306), distractors=False)
    assert empty.centre == clear.centre and empty.radius == clear.radius
    diff = np.abs(crystal.image.astype(float) - empty.image.astype(float)).sum(axis=2)
    x0, y0, x1, y1 = crystal.crystal_boxes[0]
    pad = 3
    inside = diff[int(y0) - pad : int(y1) + pad + 1, int(x0) - pad : int(x1) + pad + 1].sum()
    assert inside > 0.95 * diff.sum()
    assert diff.sum() > 1000


def test_compositing_on_a_background(tmp_path: Path) -> None:
    real_like = render_drop("clear", 2, (300, 358)).image  # a stand-in for a real photo
    for k in range(2):
        Image.fromarray(real_like).save(tmp_path / f"bg{k}.jpg", quality=90)
    (tmp_path / "notes.txt").write_text("not an image")
    found = backgrounds_from_folder(tmp_path)
    assert [b.name for b in found] == ["bg0.jpg", "bg1.jpg"]
    background = found[0]
    assert background.radius > 0.3 * 300
    drop = render_drop("small crystals", 4, SMALL, background)
    again = render_drop("small crystals", 4, SMALL, background.image)  # a bare array works too
    assert drop.image.tobytes() == again.image.tobytes()
    assert drop.params["background"] == "bg0.jpg"
    for box in drop.crystal_boxes:
        assert _inside(box, drop.centre, drop.radius, slack=1.02)
    plain = render_drop("clear", 4, SMALL, background)
    assert np.abs(drop.image.astype(int) - plain.image.astype(int)).max() > 40
    bad = render_drop("bad drop", 4, SMALL, background)
    assert bad.variant in CAMERA_VARIANTS
    with pytest.raises(ValueError, match="real background"):
        render_drop("bad drop", 4, SMALL, background, variant="no drop")
    given = Background(background.image, (150.0, 140.0), 100.0, "given")
    placed = render_drop("medium crystals", 4, SMALL, given)
    assert placed.centre == pytest.approx((150.0 * 153 / 358, 140.0 * 128 / 300))


@needs_real_plate
def test_drop_found_in_real_images_and_used_as_background() -> None:
    files = sorted(REAL_PLATE_IMAGES.glob("*.jpg"))[::24]
    for path in files:
        image = np.asarray(Image.open(path).convert("RGB"))
        cx, cy, radius = detect_drop(image)
        assert abs(cx - 612) < 60 and abs(cy - 512) < 60
        assert 400 < radius < 480
    background = backgrounds_from_folder(REAL_PLATE_IMAGES, limit=1)[0]
    drop = render_drop("needles & plates", 9, SMALL, background)
    assert drop.crystal_boxes
    assert synthetic_comment(drop.to_jpeg()) is not None


def test_synthetic_marker_in_every_jpeg() -> None:
    for size in (TINY, FULL_SIZE):
        drop = render_drop("phase separation", 8, size)
        text = synthetic_comment(drop.to_jpeg())
        assert text is not None
        assert "label=phase separation" in text and "seed=8" in text
    assert synthetic_comment(jpeg_bytes()) is None


def _records(paths: list[Path]) -> list[ImageRecord]:
    records = [parse_path(p) for p in paths]
    assert all(isinstance(r, ImageRecord) for r in records), records[:3]
    return records  # type: ignore[return-value]


def test_plate_in_formulatrix_flat_layout_parses_back(tmp_path: Path) -> None:
    when = datetime(2023, 5, 6)
    written = write_plate(tmp_path, barcode="SYNX1", drops=2, inspected_at=when, seed=3, size=TINY)
    paths = sorted(tmp_path.rglob("*.jpg"))
    assert len(paths) == 192 == len(written.images)
    records = _records(paths)
    assert {r.barcode for r in records} == {"SYNX1"}
    assert {r.inspected_at for r in records} == {when}
    assert {r.imager for r in records} == {"RI1000-SYNTH"}
    assert {r.plate_drops for r in records} == {2}
    wells = {f"{row}{col}" for row in "ABCDEFGH" for col in range(1, 13)}
    assert {(r.well, r.drop) for r in records} == {(w, d) for w in wells for d in (1, 2)}
    for image in written.images:  # the record says the well and drop the truth says
        record = parse_path(image.path)
        assert (record.well, record.drop) == (image.well, image.drop)

    with written.truth_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert written.truth_csv == tmp_path / "SYNX1.truth.csv"
    assert len(rows) == 192
    assert {row["synthetic"] for row in rows} == {"1"}
    assert {row["label"] for row in rows} <= set(MERCK10_LABELS)
    assert {row["label"] for row in rows} > {"clear", "light precipitate"}
    first = rows[0]
    assert (tmp_path / first["path"]).is_file()
    assert first["label4"] == TEN_TO_FOUR[first["label"]]
    boxes = [json.loads(row["crystal_boxes"]) for row in rows if row["label4"] == "Crystals"]
    assert boxes and all(boxes)
    assert (tmp_path / NOTE_NAME).is_file()
    assert (written.image_root / NOTE_NAME).is_file()
    assert synthetic_comment(paths[0].read_bytes()) is not None

    again = write_plate(tmp_path / "again", barcode="SYNX1", inspected_at=when, seed=3, size=TINY)
    assert [i.render.label for i in again.images] == [i.render.label for i in written.images]
    assert again.images[5].path.read_bytes() == written.images[5].path.read_bytes()


def test_plate_in_rock_maker_tree(tmp_path: Path) -> None:
    written = write_plate(
        tmp_path,
        layout="rock-maker",
        barcode="91ab",
        drops=1,
        inspected_at=datetime(2018, 4, 11),
        seed=5,
        size=TINY,
        imager="RI1000-0081",
        plate_id=1692,
        batch_id=616,
    )
    paths = sorted((tmp_path / "WellImages").rglob("*.jpg"))
    assert len(paths) == 96
    for image in written.images:
        relative = image.path.relative_to(tmp_path).parts
        number = (ord(image.well[0]) - ord("A")) * 12 + int(image.well[1:])
        assert relative[:6] == (
            "WellImages",
            "692",
            "plateID_1692",
            "batchID_616",
            f"wellNum_{number}",
            "profileID_1",
        )
        assert relative[6].startswith("d1_r") and relative[6].endswith("_ef.jpg")
    assert len({p.name for p in paths}) == 96  # region ids are unique per image
    assert written.metadata == [tmp_path / "91ab.csv"]
    with (tmp_path / "91ab.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == ROCK_MAKER_COLUMNS
    if REAL_PLATE.exists():  # the same columns as the real Rock Maker export
        with (REAL_PLATE / "90j8.csv").open() as handle:
            assert tuple(next(csv.reader(handle))) == ROCK_MAKER_COLUMNS
    assert len(rows) == 96
    a12 = next(r for r in rows if r["WellRowLetter"] == "A" and r["WellColNum"] == "12")
    assert a12 == {
        "BatchID": "616",
        "DateImaged": "2018-04-11",
        "DropNum": "1",
        "ImagerName": "RI1000-0081",
        "PlateID": "1692",
        "ProfileID": "1",
        "WellColNum": "12",
        "WellNum": "12",
        "WellRowLetter": "A",
    }
    assert (tmp_path / "WellImages" / "692" / "plateID_1692" / "batchID_616" / "wellNum_1"
            / "profileID_1" / NOTE_NAME).is_file()  # fmt: skip
    assert (tmp_path / "91ab.truth.csv").is_file()


def test_other_layouts_plug_in(tmp_path: Path) -> None:
    class Flat:
        name = "test-flat"

        def path(self, plate, well, drop, index):
            return Path("flat") / f"{plate.barcode}-{well}-{drop}.jpg"

        def finish(self, root, plate, images):
            return []

    register_layout(Flat())
    try:
        written = write_plate(tmp_path, layout="test-flat", wells=96, drops=1, seed=1, size=TINY)
        assert (tmp_path / "flat" / f"{written.spec.barcode}-H12-1.jpg").is_file()
    finally:
        LAYOUTS.pop("test-flat")
    with pytest.raises(ValueError, match="unknown plate layout"):
        write_plate(tmp_path, layout="nope", size=TINY)


def test_training_set_with_manifest(tmp_path: Path) -> None:
    manifest = write_dataset(tmp_path / "a", 30, seed=4, size=TINY, group_size=8)
    with manifest.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:3] == ["path", "label", "group"]
    assert len(rows) == 30
    counts = {label: sum(r["label"] == label for r in rows) for label in MERCK10_LABELS}
    assert set(counts.values()) == {3}  # balanced
    assert {r["group"] for r in rows} == {f"synth4-{g:04d}" for g in range(4)}
    assert {r["synthetic"] for r in rows} == {"1"}
    assert all((tmp_path / "a" / r["path"]).is_file() for r in rows)
    assert (tmp_path / "a" / NOTE_NAME).is_file()
    assert (tmp_path / "a" / rows[0]["group"] / NOTE_NAME).is_file()
    # Workers do not change the output.
    other = write_dataset(tmp_path / "b", 30, seed=4, size=TINY, group_size=8, jobs=2)
    assert other.read_text() == manifest.read_text()
    for row in rows[:5]:
        a = (tmp_path / "a" / row["path"]).read_bytes()
        assert a == (tmp_path / "b" / row["path"]).read_bytes()


def test_gallery_has_a_row_per_class_and_variant() -> None:
    sheet = contact_sheet(seeds=(0, 1), tile=(48, 57))
    assert sheet.shape[0] == 48 * len(gallery_rows()) == 48 * 15
    assert sheet.dtype == np.uint8


@pytest.mark.shared
@pytest.mark.slow
@needs_real_plate
def test_clear_drops_look_like_the_real_plate() -> None:
    """Medians of simple image statistics: synthetic clear drops vs the real 90j8 plate."""

    def stats(rgb: np.ndarray) -> np.ndarray:
        cx, cy, radius = detect_drop(rgb)
        h, k = rgb.shape[0], int(0.15 * rgb.shape[0])
        inner = rgb[int(cy) - k : int(cy) + k, int(cx) - k : int(cx) + k].reshape(-1, 3)
        mean = inner.mean(axis=0)
        grey = rgb.mean(axis=2)
        return np.array(
            [radius / h, mean[1] / 255, mean[0] / mean[1], mean[2] / mean[1], (grey < 60).mean()]
        )

    real = np.median(
        [
            stats(np.asarray(Image.open(p).convert("RGB")))
            for p in sorted(REAL_PLATE_IMAGES.glob("*.jpg"))[::8]
        ],
        axis=0,
    )
    fake = np.median([stats(render_drop("clear", s, (512, 612)).image) for s in range(8)], axis=0)
    assert fake == pytest.approx(real, rel=0.08), (fake, real)


def test_demo_writes_and_ingests_a_synthetic_plate(cli_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "demo"
    args = ("demo", "--out", str(out), "--image-size", "64x77", "--drops", "1", "--seed", "2")
    done = cli_json(*args, env=cli_env)
    assert done["ingest"] == {"created": 96}
    assert done["synthetic"] is True
    barcode = done["barcode"]
    plates = cli_json("plates", "list", env=cli_env)
    assert [(p["barcode"], p["image_count"]) for p in plates] == [(barcode, 96)]
    detail = cli_json("plates", "show", barcode, env=cli_env)
    assert {i["status"] for i in detail["images"]} == {"scored"}  # by the shipped default
    assert done["scoring"].startswith("scored 96 image(s) with default:1")
    assert (out / NOTE_NAME).is_file()
    again = cli_json(*args, env=cli_env)  # idempotent: the same plate again
    assert again["ingest"] == {"duplicate": 96}
    text = run_cli(*args[:-2], "--seed", "3", env=cli_env)
    assert text.returncode == 0, text.stderr
    assert "SYNTHETIC" in text.stdout and "marco-svc plates show SYN00003" in text.stdout


def test_demo_in_the_rock_maker_layout(cli_env: dict[str, str], tmp_path: Path) -> None:
    """Ingests where an adapter reads the Rock Maker tree; a one-line error where none does."""
    probe = write_plate(tmp_path / "probe", layout="rock-maker", wells=96, drops=1, size=TINY)
    readable = isinstance(parse_path(probe.images[0].path), ImageRecord)
    args = ("demo", "--out", str(tmp_path / "rm"), "--layout", "rock-maker", "--drops", "1")
    done = run_cli(*args, "--image-size", "64x77", env=cli_env)
    if readable:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode != 0
        assert "no imager adapter reads it" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_synth_commands(tmp_path: Path) -> None:
    done = run_cli("synth", "drop", "small crystals", "--seed", "4", "--image-size", "64x77",
                   "--out", str(tmp_path / "one.jpg"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["label4"] == "Crystals"
    assert synthetic_comment((tmp_path / "one.jpg").read_bytes()) is not None
    done = run_cli("synth", "dataset", "--out", str(tmp_path / "ds"), "-n", "10",
                   "--image-size", "64x77")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ds" / "manifest.csv").is_file()
    done = run_cli("synth", "gallery", "--out", str(tmp_path / "g.png"), "--seeds", "1",
                   "--image-size", "48x57", "--colours", "64")  # fmt: skip
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "g.png") as sheet:
        assert sheet.mode == "P" and sheet.size == (150 + 57, 15 * 48)
    done = run_cli("synth", "drop", "crystal", "--out", str(tmp_path / "x.jpg"))
    assert done.returncode != 0 and "unknown ten-way label" in done.stderr
    done = run_cli("synth", "plate", "--out", str(tmp_path / "p"), "--layout", "nope")
    assert done.returncode != 0 and "unknown plate layout" in done.stderr
