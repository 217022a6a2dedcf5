"""Validate camera images and bring them to the descriptor's input: RGB uint8 of a fixed size.

Accepted: H x W (gray), H x W x 1, H x W x 3 (RGB), H x W x 4 (RGBA; alpha dropped), in uint8,
uint16 (scaled by 1/257: full 16-bit range; `rescale_bit_depth` first for a 10- or 12-bit camera) or
float in [0, 1]. Anything else, non-finite pixels, or a side outside [MIN_SIDE, MAX_SIDE] raises
ImageError naming the problem. `check_size` and `encoded_size` let callers refuse an oversized frame
before copying or decoding it (a 1 MB PNG can decode to 20000 x 20000 pixels).
"""

import struct
from pathlib import Path

import cv2
import numpy as np
import torch

MIN_SIDE = 32
MAX_SIDE = 4000


class ImageError(ValueError):
    """An image the pipeline cannot use; the message says why."""


def check_size(width: int, height: int) -> None:
    """Raise ImageError unless both sides lie in [MIN_SIDE, MAX_SIDE] (checked before any pixel is touched)."""
    if width <= 0 or height <= 0:
        raise ImageError(f"empty image ({width}x{height}), outside the supported {MIN_SIDE}..{MAX_SIDE} px per side")
    if min(width, height) < MIN_SIDE or max(width, height) > MAX_SIDE:
        raise ImageError(f"image of {width}x{height} px is outside the supported {MIN_SIDE}..{MAX_SIDE} px per side")


def encoded_size(data: bytes | np.ndarray) -> tuple[int, int]:
    """(width, height) of a PNG or JPEG from its header, without decoding. Raises ImageError for
    another format or a header that cannot be read."""
    head = bytes(data[:8])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        chunk = bytes(data[8:24])  # length, "IHDR", width, height (big-endian)
        if len(chunk) < 16 or chunk[4:8] != b"IHDR":
            raise ImageError("PNG without an IHDR header")
        return struct.unpack(">II", chunk[8:16])
    if head.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    raise ImageError(f"compressed image is neither PNG nor JPEG (starts with {head[:4].hex()})")


def _jpeg_size(data) -> tuple[int, int]:
    """Walk the JPEG markers to the first start-of-frame segment."""
    view = memoryview(bytes(data)) if not isinstance(data, (bytes, bytearray)) else memoryview(data)
    pos, end = 2, len(view)
    while pos + 4 <= end:
        if view[pos] != 0xFF:
            raise ImageError(f"JPEG marker expected at byte {pos}")
        marker = view[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        length = (view[pos + 2] << 8) | view[pos + 3]
        if marker in (*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0)):  # SOFn
            if pos + 9 > end:
                break
            height = (view[pos + 5] << 8) | view[pos + 6]
            width = (view[pos + 7] << 8) | view[pos + 8]
            return width, height
        if marker == 0xDA or length < 2:  # image data before any frame header
            break
        pos += 2 + length
    raise ImageError("JPEG without a readable frame header (truncated or corrupt)")


def input_size_note(width: int, height: int, input_size: tuple[int, int]) -> str:
    """What is worth saying about frames of width x height going into a network input of `input_size`: much
    smaller (upsampled: its dense features carry little there), or of another shape (stretched to the input's
    aspect ratio); "" when neither."""
    in_w, in_h = input_size
    if not width or not height:
        return ""
    if width < in_w / 2 or height < in_h / 2:
        return (f"images of {width}x{height} are upsampled {in_w / width:.1f}x by {in_h / height:.1f}x to the "
                f"descriptor's {in_w}x{in_h} input: its dense features carry little at this resolution; expect weak "
                "single-image recall (sequence matching, sequence_length, helps on such cameras)")
    if abs(np.log((width / height) / (in_w / in_h))) > np.log(1.1):
        return (f"images of {width}x{height} (aspect {width / height:.2f}) are stretched to the descriptor's "
                f"{in_w}x{in_h} input (aspect {in_w / in_h:.2f}): shapes look distorted to it")
    return ""


def rescale_bit_depth(image: np.ndarray, bit_depth: int = 0) -> np.ndarray:
    """A uint16 image from a 10-, 12- or 16-bit sensor -> uint8 over its real range: `bit_depth` bits
    (8..16), or 0 to stretch the frame's own maximum to 255. Other dtypes pass through."""
    if image.dtype != np.uint16:
        return image
    if bit_depth == 0:
        top = int(image.max())
        if top == 0:
            return np.zeros(image.shape, np.uint8)
    elif 8 <= bit_depth <= 16:
        top = (1 << bit_depth) - 1
    else:
        raise ValueError(f"bit_depth must be 0 (the frame's maximum) or 8..16, got {bit_depth}")
    scaled = (image.astype(np.uint32) * 255 + top // 2) // top
    return np.minimum(scaled, 255).astype(np.uint8)


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Any accepted image -> H x W x 3 uint8 RGB (a new array or the input itself)."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ImageError(f"unsupported image shape {image.shape}; expected H x W, H x W x 1, x 3 or x 4")
    height, width = image.shape[:2]
    check_size(width, height)

    if image.dtype == np.uint8:
        pass
    elif image.dtype == np.uint16:
        image = (image.astype(np.uint32) // 257).astype(np.uint8)
    elif np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise ImageError("image has NaN or infinite pixels")
        image = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    else:
        raise ImageError(f"unsupported pixel type {image.dtype}; expected uint8, uint16 or float")

    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def opencv_to_rgb(image: np.ndarray) -> np.ndarray:
    """An OpenCV-decoded image (BGR or BGRA channel order) -> RGB or RGBA; gray passes through."""
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return image


def resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize H x W x 3 to size=(width, height): area averaging when shrinking, bilinear otherwise."""
    width, height = size
    if (rgb.shape[1], rgb.shape[0]) == (width, height):
        return rgb
    shrinking = width * height < rgb.shape[0] * rgb.shape[1]
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def batch_to_uint8(images: list[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    """Images (any accepted format) -> B x height x width x 3 uint8 tensor (4x fewer bytes to upload)."""
    if not images:
        raise ImageError("no images given")
    return torch.from_numpy(np.stack([resize(to_rgb8(image), size) for image in images]))


def to_float_nchw(batch: torch.Tensor) -> torch.Tensor:
    """A batch_to_uint8 batch -> B x 3 x H x W float in [0, 1] on the same device; float NCHW passes through."""
    if batch.dtype == torch.uint8:
        return batch.permute(0, 3, 1, 2).float().div_(255.0)
    return batch


def batch_to_tensor(images: list[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    """Images (any accepted format) -> B x 3 x height x width float tensor in [0, 1]."""
    return to_float_nchw(batch_to_uint8(images, size))


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".pgm", ".ppm")


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name."""
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: Path) -> np.ndarray:
    """An image file -> H x W (gray) or H x W x 3/4 RGB(A) array, keeping 16-bit depth."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot decode image {path}")
    return opencv_to_rgb(image)
