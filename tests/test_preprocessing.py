"""Preprocessing: the official graph's reproduced exactly; numpy and TensorFlow agree.

Tolerances, measured on the 96 real plate images:
- same decoded pixels -> numpy vs TensorFlow: `marco` bit-identical, `merck_gray` <= 1e-6
  (float32 rounding of the area sums);
- from JPEG bytes: both decode with libjpeg-turbo and TensorFlow's settings (the fast IDCT
  for `marco`, as the official graph; the accurate one for `merck_gray`), so the pixels are
  the same and the inputs agree as above: `marco` bit-identical, `merck_gray` <= 1e-6.
  (With Pillow's decoder, accurate IDCT only, `marco` differed by up to 4/255 per value.)
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from marco_svc.nets.preprocessing import (
    MarcoPreprocessing,
    MerckGrayPreprocessing,
    PreprocessingError,
    decode_np,
    from_spec,
)
from tests.conftest import MARCO_GRAPH, REAL_PLATE_IMAGES, needs_real_plate, needs_shared
from tests.fake_marco import meta_graph

SIZES = [(1024, 1224), (960, 1280), (480, 640), (640, 480), (300, 200), (599, 599), (961, 1281)]


def real_images() -> list[bytes]:
    return [p.read_bytes() for p in sorted(REAL_PLATE_IMAGES.glob("*.jpg"))]


def jpeg(pixels: np.ndarray, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def random_pixels(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3)).astype(np.uint8)
    big = np.asarray(Image.fromarray(smooth).resize((width, height), Image.BICUBIC))
    return np.clip(big + rng.normal(0, 8, big.shape), 0, 255).astype(np.uint8)


def test_registry_and_specs() -> None:
    assert from_spec({"name": "marco", "size": 599}).input_shape == (599, 599, 3)
    merck = from_spec({"name": "merck_gray", "size": 128, "description": "ignored"})
    assert (merck.input_shape, merck.spec()) == ((128, 128, 1), {"name": "merck_gray", "size": 128})
    with pytest.raises(PreprocessingError, match="unknown preprocessing 'nope'"):
        from_spec({"name": "nope"})
    with pytest.raises(PreprocessingError, match="bad parameters"):
        from_spec({"name": "marco", "size": 599, "gamma": 2})


@pytest.mark.parametrize("shape", SIZES)
@pytest.mark.parametrize("prep", [MarcoPreprocessing(599), MerckGrayPreprocessing(128)])
def test_numpy_equals_tensorflow_on_the_same_pixels(prep, shape: tuple[int, int]) -> None:
    pixels = random_pixels(*shape)
    ours = prep.np_from_pixels(pixels)
    theirs = prep.tf_from_pixels(tf.constant(pixels)).numpy()
    assert ours.shape == theirs.shape == prep.input_shape
    assert ours.dtype == theirs.dtype == np.float32
    tolerance = 0.0 if prep.name == "marco" else 1e-6
    assert np.max(np.abs(ours - theirs)) <= tolerance
    assert ours.min() >= -1.0 and ours.max() <= 1.0


def test_the_batch_function_is_the_single_image_one() -> None:
    prep = MarcoPreprocessing(599)
    images = [jpeg(random_pixels(h, w, seed=i)) for i, (h, w) in enumerate(SIZES[:3])]
    batch = prep.tf_batch_from_bytes(tf.constant(images)).numpy()
    assert batch.shape == (3, 599, 599, 3)
    for data, row in zip(images, batch, strict=True):
        assert np.array_equal(prep.tf_from_bytes(tf.constant(data)).numpy(), row)


def test_merck_gray_takes_the_central_square_in_gray() -> None:
    pixels = np.zeros((960, 1280, 3), dtype=np.uint8)
    pixels[:, 160:1120] = (200, 100, 50)  # exactly the central 960x960 window
    out = MerckGrayPreprocessing(128).np_from_pixels(pixels)
    gray = (0.2989 * 200 + 0.5870 * 100 + 0.1140 * 50) / 255
    assert out.shape == (128, 128, 1)
    assert np.allclose(out, (gray - 0.5) * 2, atol=1e-6)


def test_decoding_handles_gray_alpha_and_16_bit() -> None:
    gray = Image.fromarray(np.full((10, 12), 77, dtype=np.uint8))
    rgba = Image.fromarray(np.full((10, 12, 4), 200, dtype=np.uint8))
    wide = Image.fromarray(np.full((10, 12), 0x8000, dtype=np.uint16))
    for image, value in ((gray, 77), (rgba, 200), (wide, 0x80)):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        pixels = decode_np(buffer.getvalue())
        assert pixels.shape == (10, 12, 3) and pixels.dtype == np.uint8
        assert np.all(pixels == value)


@pytest.mark.parametrize("dct", ["fast", "accurate"])
@pytest.mark.parametrize("gray", [False, True])
def test_jpeg_decoding_gives_tensorflows_pixels(dct: str, gray: bool) -> None:
    from marco_svc.nets.preprocessing import decode_tf

    pixels = random_pixels(90, 124, seed=4)
    data = jpeg(pixels[..., 0] if gray else pixels, quality=75)
    ours = decode_np(data, dct)
    theirs = decode_tf(tf.constant(data), dct).numpy()
    assert ours.shape == theirs.shape == (90, 124, 3)
    assert np.array_equal(ours, theirs)
    other = decode_np(data, "accurate" if dct == "fast" else "fast")
    assert not np.array_equal(ours, other)  # the IDCT named is the one used


def test_broken_jpegs_raise_instead_of_decoding_garbage() -> None:
    data = jpeg(random_pixels(64, 64))
    for broken in (data[: len(data) // 2], data[:2] + bytes(200), b"\xff\xd8\xff"):
        with pytest.raises(OSError):
            decode_np(broken, "fast")


def test_cmyk_jpegs_fall_back_to_pillow() -> None:
    buffer = io.BytesIO()
    Image.fromarray(random_pixels(32, 40)).convert("CMYK").save(buffer, format="JPEG")
    pixels = decode_np(buffer.getvalue())
    assert pixels.shape == (32, 40, 3) and pixels.dtype == np.uint8


@needs_shared(MARCO_GRAPH)
@pytest.mark.shared
def test_marco_preprocessing_is_the_official_graphs() -> None:
    """The graph's own preprocessing (no weights needed) against ours, bit for bit."""
    images = [jpeg(random_pixels(h, w, seed=i)) for i, (h, w) in enumerate(SIZES)]
    if REAL_PLATE_IMAGES.exists():
        images += real_images()[::12]
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta = meta_graph(MARCO_GRAPH)
        tf.compat.v1.train.import_meta_graph(meta, clear_devices=True)
        feed = meta.signature_def["serving_default"].inputs["image_bytes"].name
        resize = graph.get_operation_by_name("map/while/ResizeBilinear")
        assert resize.get_attr("align_corners") is False
        assert resize.get_attr("half_pixel_centers") is False
        official = [
            session.run("map/TensorArrayStack/TensorArrayGatherV3:0", {feed: [data]})[0]
            for data in images
        ]
    prep = tf.function(MarcoPreprocessing(599).tf_from_bytes)
    for data, theirs in zip(images, official, strict=True):
        assert np.array_equal(prep(tf.constant(data)).numpy(), theirs)


@needs_real_plate
@pytest.mark.shared
def test_numpy_and_tensorflow_from_bytes_on_the_real_plate() -> None:
    images = real_images()
    assert len(images) == 96
    measured = {}
    for prep in (MarcoPreprocessing(599), MerckGrayPreprocessing(128)):
        fn = tf.function(prep.tf_from_bytes, input_signature=[tf.TensorSpec([], tf.string)])
        diffs = [np.abs(prep.np_from_bytes(data) - fn(data).numpy()) for data in images]
        mean = float(np.mean([d.mean() for d in diffs]))
        measured[prep.name] = (float(max(d.max() for d in diffs)), mean)
    print(f"numpy vs TensorFlow from bytes, 96 real images (max, mean): {measured}")
    assert measured["merck_gray"][0] <= 1e-6
    assert measured["marco"] == (0.0, 0.0)


def test_a_jpeg_over_the_decompression_bomb_limit_is_refused(monkeypatch) -> None:
    data = jpeg(random_pixels(64, 64))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 2 - 1)
    with pytest.raises(Image.DecompressionBombError):
        decode_np(data, "fast")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 2)
    assert decode_np(data, "fast").shape == (64, 64, 3)
