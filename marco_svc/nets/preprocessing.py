"""Preprocessing by name: image bytes -> the network's input array, in TensorFlow and in numpy.

Each preprocessing has two implementations of one definition:

- TensorFlow (`tf_from_bytes`, `tf_from_pixels`): used by training (tf.data), serving with
  TensorFlow and export, so a model sees exactly the same input in all three;
- numpy/Pillow (`np_from_bytes`, `np_from_pixels`): for TF-free serving with LiteRT on the
  imager PC. This module never imports TensorFlow at import time.

Given the same decoded pixels the two agree to float rounding (bit for bit for `marco`);
both decode JPEGs with libjpeg-turbo and the same settings (see `decode_np`), so from JPEG
bytes they agree too. `tests/test_preprocessing.py` measures both.

A model card names its preprocessing as `{"name": ..., **params}`; `from_spec` rebuilds it.
"""

from __future__ import annotations

import io
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import simplejpeg
from PIL import Image

if TYPE_CHECKING:
    import tensorflow as tf


JPEG_MAGIC = b"\xff\xd8\xff"


class PreprocessingError(ValueError):
    """An unknown preprocessing name or bad parameters."""


class Preprocessing(ABC):
    """One named preprocessing: decode, then `transform` pixels to a float32 (H, W, C) array."""

    name: ClassVar[str]
    channels: ClassVar[int]
    #: JPEG inverse DCT of both decoders: "fast" is TensorFlow's default (libjpeg
    #: JDCT_IFAST); "accurate" is JDCT_ISLOW.
    jpeg_dct: ClassVar[str]

    def __init__(self, size: int) -> None:
        if not isinstance(size, int) or size < 8:
            raise PreprocessingError(f"{self.name}: size must be an integer >= 8, not {size!r}")
        self.size = size

    @property
    def input_size(self) -> tuple[int, int]:
        return (self.size, self.size)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, self.channels)

    def spec(self) -> dict[str, Any]:
        """What a model card stores: the name and the parameters `from_spec` needs."""
        return {"name": self.name, "size": self.size}

    def input_box(
        self, box: tuple[float, float, float, float], height: int, width: int
    ) -> tuple[float, float, float, float]:
        """A box (x0, y0, x1, y1) in original pixels, in network-input pixels.

        Every registered preprocessing takes the central min(height, width) square and
        scales it to `size`; parts of the box outside that square fall outside the input.
        """
        side = min(height, width)
        left, top, scale = (width - side) / 2, (height - side) / 2, self.size / side
        x0, y0, x1, y1 = box
        return ((x0 - left) * scale, (y0 - top) * scale, (x1 - left) * scale, (y1 - top) * scale)

    # --- numpy / Pillow -------------------------------------------------------------------

    def np_from_bytes(self, data: bytes) -> np.ndarray:
        return self.np_from_pixels(self.decode_for_input(data))

    def decode_for_input(self, data: bytes) -> np.ndarray:
        """Decoded pixels as this preprocessing decodes them, in this thread's scratch memory
        (valid until its next decode: for pixels turned into an input at once)."""
        return decode_np(data, self.jpeg_dct, reuse=True)

    @abstractmethod
    def np_from_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> float32 network input."""

    # --- TensorFlow -----------------------------------------------------------------------

    def tf_from_bytes(self, contents: tf.Tensor) -> tf.Tensor:
        """A scalar string tensor (encoded image) -> float32 network input."""
        return self.tf_from_pixels(decode_tf(contents, self.jpeg_dct))

    @abstractmethod
    def tf_from_pixels(self, pixels: tf.Tensor) -> tf.Tensor:
        """(H, W, 3) uint8 RGB tensor -> float32 network input."""

    def tf_batch_from_bytes(self, contents: tf.Tensor) -> tf.Tensor:
        """A batch of encoded images (1-D string tensor) -> (N, H, W, C) float32."""
        import tensorflow as tf

        return tf.map_fn(
            self.tf_from_bytes,
            contents,
            fn_output_signature=tf.TensorSpec(self.input_shape, tf.float32),
        )


class MarcoPreprocessing(Preprocessing):
    """The official MARCO graph's preprocessing, reproduced op for op.

    Decode the JPEG (TensorFlow's default fast IDCT, as the graph's DecodeJpeg), scale to
    [0, 1] (cast, times 1/255 in float32), `resize_image_with_crop_or_pad` to the central
    square of side min(height, width) (the graph computes that target from the image shape;
    a square never pads), the TF1 bilinear resize to size x size (align_corners=False,
    half_pixel_centers=False: source = destination * in/out), then (x - 0.5) * 2.
    """

    name = "marco"
    channels = 3
    jpeg_dct = "fast"

    def np_from_pixels(self, pixels: np.ndarray) -> np.ndarray:
        # Scaling to [0, 1] is done on the gathered taps: the same float32 values as scaling
        # the whole frame first, at a fraction of the work.
        square = central_square_np(_rgb(pixels))
        return resize_bilinear_tf1_np(
            square, self.size, self.size, scale=1.0 / 255.0, then=_to_signed_unit
        )

    def tf_from_pixels(self, pixels: tf.Tensor) -> tf.Tensor:
        import tensorflow as tf

        image = self.tf_from_squares(central_square_tf(pixels)[tf.newaxis])[0]
        return tf.ensure_shape(image, self.input_shape)

    def tf_from_squares(self, squares: tf.Tensor) -> tf.Tensor:
        """(N, s, s, 3) uint8 central squares -> network inputs: every step after the crop
        (also the graph that `lite_preprocessing` runs through LiteRT)."""
        import tensorflow as tf

        image = tf.cast(squares, tf.float32) * tf.constant(1.0 / 255.0, tf.float32)
        image = tf.raw_ops.ResizeBilinear(
            images=image,
            size=[self.size, self.size],
            align_corners=False,
            half_pixel_centers=False,
        )
        return (image - 0.5) * 2.0


def _to_signed_unit(values: np.ndarray) -> None:
    """[0, 1] -> [-1, 1] in place, as (x - 0.5) * 2 in float32."""
    values -= np.float32(0.5)
    values *= np.float32(2.0)


class MerckGrayPreprocessing(Preprocessing):
    """Ghafurian et al.'s input: grayscale, the central square, area-downsampled to size.

    For their 1280x960 images the central square is the central 960x960 window; other sizes
    get their central min(height, width) square. Gray = 0.2989 R + 0.5870 G + 0.1140 B
    (`tf.image.rgb_to_grayscale`'s weights) on values in [0, 1]; the downsampling is an
    area average (each output pixel the mean of the input box it covers, as
    `tf.image.resize(method="area")`), which does not alias at factors like 960/128 = 7.5.
    Values are then scaled to [-1, 1] as (v - 0.5) * 2, the MARCO convention; the paper does
    not state its scaling. JPEGs are decoded with the accurate IDCT so that TensorFlow and
    Pillow decode identically.
    """

    name = "merck_gray"
    channels = 1
    jpeg_dct = "accurate"
    GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)

    def np_from_pixels(self, pixels: np.ndarray) -> np.ndarray:
        image = central_square_np(_rgb(pixels)).astype(np.float32) * np.float32(1.0 / 255.0)
        gray = image @ np.asarray(self.GRAY_WEIGHTS, dtype=np.float32)
        gray = resize_area_np(gray, self.size, self.size)
        return ((gray - np.float32(0.5)) * np.float32(2.0))[..., np.newaxis]

    def tf_from_pixels(self, pixels: tf.Tensor) -> tf.Tensor:
        import tensorflow as tf

        image = tf.cast(central_square_tf(pixels), tf.float32) * tf.constant(1.0 / 255.0)
        gray = tf.tensordot(image, tf.constant(self.GRAY_WEIGHTS, tf.float32), [[-1], [-1]])
        gray = tf.image.resize(gray[..., tf.newaxis], self.input_size, method="area")
        gray = tf.ensure_shape(gray, self.input_shape)
        return (gray - 0.5) * 2.0


REGISTRY: dict[str, type[Preprocessing]] = {
    MarcoPreprocessing.name: MarcoPreprocessing,
    MerckGrayPreprocessing.name: MerckGrayPreprocessing,
}


def from_spec(spec: dict[str, Any]) -> Preprocessing:
    """Rebuild a preprocessing from a model card's `preprocessing` field."""
    params = dict(spec)
    name = params.pop("name", None)
    params.pop("description", None)
    if name not in REGISTRY:
        raise PreprocessingError(
            f"unknown preprocessing {name!r} (known: {', '.join(sorted(REGISTRY))})"
        )
    try:
        return REGISTRY[name](**params)
    except TypeError as exc:
        raise PreprocessingError(f"preprocessing {name}: bad parameters {params}: {exc}") from None


# --- decoding -----------------------------------------------------------------------------


def decode_np(data: bytes, jpeg_dct: str = "accurate", reuse: bool = False) -> np.ndarray:
    """Encoded image -> (H, W, 3) uint8 RGB, without TensorFlow.

    JPEGs are decoded by libjpeg-turbo through simplejpeg with the inverse DCT that
    `jpeg_dct` names and fancy upsampling, TensorFlow's own decoder settings, so the pixels
    are the ones `decode_tf` gives. Other formats, JPEGs simplejpeg refuses (CMYK, corrupt
    or truncated data) and JPEGs over Pillow's decompression-bomb limit go through Pillow,
    whose error then says what is wrong (alpha dropped, 16-bit scaled to 8). With `reuse`,
    a JPEG is decoded into this thread's scratch memory, valid until its next `reuse`
    decode: for pixels that are used at once.
    """
    if data[:3] == JPEG_MAGIC:
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            if not _decompression_bomb(height * width):
                buffer = _SCRATCH.get("decoded", (height * width * 3,), np.uint8) if reuse else None
                fast = jpeg_dct == "fast"
                return simplejpeg.decode_jpeg(data, "RGB", fastdct=fast, buffer=buffer)
        except ValueError:
            pass
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if image.mode.startswith("I;16") or image.mode == "I":
            wide = np.asarray(image, dtype=np.uint32) >> 8
            return np.repeat(np.clip(wide, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def _decompression_bomb(pixels: int) -> bool:
    """More pixels than Pillow refuses to open (twice its MAX_IMAGE_PIXELS warning level)."""
    limit = Image.MAX_IMAGE_PIXELS
    return limit is not None and pixels > 2 * limit


def decode_tf(contents: tf.Tensor, jpeg_dct: str = "fast") -> tf.Tensor:
    """Encoded image -> (H, W, 3) uint8 RGB with TensorFlow's decoders."""
    import tensorflow as tf

    if jpeg_dct == "fast":  # DecodeImage on a JPEG is DecodeJpeg with its default attributes
        return tf.io.decode_image(contents, channels=3, expand_animations=False)
    return tf.cond(
        tf.io.is_jpeg(contents),
        lambda: tf.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(contents, channels=3, expand_animations=False),
    )


def _rgb(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise PreprocessingError(
            f"expected (H, W, 3) uint8 RGB pixels, got {pixels.shape} {pixels.dtype}"
        )
    return pixels


# --- geometry: numpy twins of the TensorFlow ops ------------------------------------------


def central_square_np(image: np.ndarray) -> np.ndarray:
    """`resize_image_with_crop_or_pad` to side min(h, w): offsets (h - s) // 2, (w - s) // 2."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top : top + side, left : left + side]


def central_square_tf(image: tf.Tensor) -> tf.Tensor:
    import tensorflow as tf

    shape = tf.shape(image)
    side = tf.minimum(shape[0], shape[1])
    return tf.image.resize_with_crop_or_pad(image, side, side)


def _tf1_bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower index, upper index and weight per output row, as TF1's legacy ResizeBilinear."""
    scale = np.float32(in_size) / np.float32(out_size)
    source = np.arange(out_size, dtype=np.float32) * scale
    floor = np.floor(source)
    lower = np.maximum(floor.astype(np.int64), 0)
    upper = np.minimum(np.ceil(source).astype(np.int64), in_size - 1)
    return lower, upper, (source - floor).astype(np.float32)


def resize_bilinear_tf1_np(
    image: np.ndarray,
    out_height: int,
    out_width: int,
    scale: float | None = None,
    then: Callable[[np.ndarray], None] | None = None,
) -> np.ndarray:
    """ResizeBilinear(align_corners=False, half_pixel_centers=False) of (H, W, C), in float32.

    With `scale`, each tap is converted as `float32(value) * float32(scale)` before the
    interpolation, exactly as if the whole image had been scaled first; `then` is an
    elementwise step applied in place to the result (as if applied after the resize).
    The float32 steps are TensorFlow's (across each source row, then down), run on blocks
    of output rows small enough to stay in the CPU cache, with this thread's scratch arrays;
    on a 1224x1024 image this measured 1.3-1.6x faster than whole-image passes.
    """
    height, width, channels = image.shape
    rows = _rows_of_values(image)
    y0, y1, wy = _tf1_bilinear_taps(height, out_height)
    x0, x1, wx = _tf1_bilinear_taps(width, out_width)
    left, right = ((x[:, None] * channels + np.arange(channels)).ravel() for x in (x0, x1))
    wx = np.repeat(wx, channels)
    factor = np.float32(1.0 if scale is None else scale)
    size = out_width * channels
    out = np.empty((out_height, size), dtype=np.float32)
    for first in range(0, out_height, _BLOCK_ROWS):
        last = min(first + _BLOCK_ROWS, out_height)
        top_row, bottom_row = y0[first], y1[last - 1] + 1
        source = rows[top_row:bottom_row]
        shape = (bottom_row - top_row, size)
        taps = _SCRATCH.get("taps", shape, image.dtype)
        low = _scaled_taps(source, left, factor, taps, _SCRATCH.get("left", shape))
        high = _scaled_taps(source, right, factor, taps, _SCRATCH.get("right", shape))
        across = _lerp(low, high, wx)
        block = (last - first, size)
        top = np.take(across, y0[first:last] - top_row, axis=0, out=_SCRATCH.get("top", block))
        bottom = np.take(
            across, y1[first:last] - top_row, axis=0, out=_SCRATCH.get("bottom", block)
        )
        bottom -= top
        bottom *= wy[first:last, None]
        np.add(bottom, top, out=out[first:last])  # = top + (bottom - top) * wy, as TensorFlow
        if then is not None:
            then(out[first:last])
    return out.reshape(out_height, out_width, channels)


_BLOCK_ROWS = 32  # output rows per block: ~2 MB of scratch for a 599-wide RGB output


def _scaled_taps(
    rows: np.ndarray, columns: np.ndarray, factor: np.float32, taps: np.ndarray, out: np.ndarray
) -> np.ndarray:
    """float32(rows[:, columns]) * factor, through the `taps` buffer into `out`."""
    np.take(rows, columns, axis=1, out=taps)
    return np.multiply(taps, factor, dtype=np.float32, out=out)


def _rows_of_values(image: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H, W * C) without copying when each row's pixels are contiguous (the
    central square of a decoded frame is such a view)."""
    height, width, channels = image.shape
    itemsize = image.itemsize
    if image.strides[1:] == (channels * itemsize, itemsize):
        return np.lib.stride_tricks.as_strided(
            image, (height, width * channels), (image.strides[0], itemsize), writeable=False
        )
    return np.ascontiguousarray(image).reshape(height, width * channels)


def _lerp(low: np.ndarray, high: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """low + (high - low) * weight, computed in place in `high` (TensorFlow's float32 steps)."""
    high -= low
    high *= weight
    high += low
    return high


class _Scratch(threading.local):
    """Arrays one thread reuses from call to call: on these machines a fresh multi-megabyte
    array costs more in page faults than the arithmetic done on it."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        """A C-contiguous array of `shape` (contents undefined), the same memory each time."""
        count, dtype = int(np.prod(shape)), np.dtype(dtype)
        array = self.arrays.get(name)
        if array is None or array.size < count or array.dtype != dtype:
            array = self.arrays[name] = np.empty(count, dtype)
        return array[:count].reshape(shape)


_SCRATCH = _Scratch()


def _area_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) weights: the share of each input cell in each output box, rows sum to 1."""
    scale = in_size / out_size
    starts = np.arange(out_size)[:, None] * scale
    cells = np.arange(in_size)[None, :]
    overlap = np.clip(np.minimum(cells + 1, starts + scale) - np.maximum(cells, starts), 0, None)
    return (overlap / scale).astype(np.float32)


def resize_area_np(image: np.ndarray, out_height: int, out_width: int) -> np.ndarray:
    """Area-average resize of a float32 (H, W) image, as `tf.image.resize(method="area")`."""
    rows = _area_matrix(image.shape[0], out_height)
    cols = _area_matrix(image.shape[1], out_width)
    return rows @ image.astype(np.float32, copy=False) @ cols.T
