"""Validate camera images and bring them to the descriptor's input: RGB uint8 of a fixed size.

Accepted: H x W (gray), H x W x 1, H x W x 3 (RGB), H x W x 4 (RGBA; alpha dropped), in uint8,
uint16 (scaled by 1/257) or float in [0, 1]. Anything else, non-finite pixels, or a side outside
[MIN_SIDE, MAX_SIDE] raises ImageError naming the problem.
"""

import cv2
import numpy as np
import torch

MIN_SIDE = 32
MAX_SIDE = 4000


class ImageError(ValueError):
    """An image the pipeline cannot use; the message says why."""


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Any accepted image -> H x W x 3 uint8 RGB (a new array or the input itself)."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ImageError(f"unsupported image shape {image.shape}; expected H x W, H x W x 1, x 3 or x 4")
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE or max(height, width) > MAX_SIDE:
        raise ImageError(f"image of {width}x{height} px is outside the supported {MIN_SIDE}..{MAX_SIDE} px per side")

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
