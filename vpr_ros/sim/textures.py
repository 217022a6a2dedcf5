"""Procedural textures: facades, towers and cars (with a mask of their windows), ground and sky.

Each texture is a float32 H x W x 3 RGB array in [0, 1] at `TEXELS_PER_M`, made from its own seed,
so the same building looks the same on every lap; window masks let a lap light some windows.
"""

import cv2
import numpy as np

TEXELS_PER_M = 24
GROUND_TEXELS_PER_M = 16
GROUND_TILE = 256  # texels; the ground repeats every 16 m


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    rgb = cv2.cvtColor(np.array([[[h * 179.0, s * 255.0, v * 255.0]]], np.float32).astype(np.uint8),
                       cv2.COLOR_HSV2RGB)
    return rgb[0, 0].astype(np.float32) / 255.0


def _smooth_noise(rng, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid resized smoothly."""
    coarse = rng.uniform(-1, 1, (max(cells * shape[0] // max(shape[1], 1), 2), cells)).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC).clip(-1, 1)


def _rect(img, mask, x0, y0, x1, y1, color, window_id=None):
    h, w = img.shape[:2]
    x0, x1, y0, y1 = max(int(x0), 0), min(int(x1), w), max(int(y0), 0), min(int(y1), h)
    if x1 > x0 and y1 > y0:
        img[y0:y1, x0:x1] = color
        if window_id is not None:
            mask[y0:y1, x0:x1] = window_id


def _sign(rng, img, x0, y0, x1, y1):
    """A shop sign: a coloured board with glyph-like blocks in a contrasting colour."""
    board = _hsv(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.3, 0.9))
    ink = 1.0 - board if rng.random() < 0.7 else _hsv(rng.random(), 0.2, 1.0)
    _rect(img, None, x0, y0, x1, y1, board)
    glyph_w, height = max((y1 - y0) * 0.5, 3), y1 - y0
    x = x0 + glyph_w * 0.6
    while x + glyph_w < x1 - glyph_w * 0.4:
        kind = rng.integers(4)
        gx0, gy0, gy1 = x, y0 + height * 0.2, y1 - height * 0.2
        if kind == 0:
            _rect(img, None, gx0, gy0, gx0 + glyph_w, gy1, ink)
            _rect(img, None, gx0 + glyph_w * 0.3, gy0 + height * 0.15, gx0 + glyph_w * 0.7, gy1 - height * 0.15, board)
        elif kind == 1:
            _rect(img, None, gx0, gy0, gx0 + glyph_w * 0.3, gy1, ink)
            _rect(img, None, gx0, gy0, gx0 + glyph_w, gy0 + height * 0.15, ink)
        elif kind == 2:
            cv2.circle(img, (int(gx0 + glyph_w / 2), int((gy0 + gy1) / 2)), int(glyph_w / 2), ink.tolist(), -1)
        else:
            _rect(img, None, gx0, (gy0 + gy1) / 2 - height * 0.1, gx0 + glyph_w, (gy0 + gy1) / 2 + height * 0.1, ink)
        x += glyph_w * (1.3 + 0.5 * rng.random())


def facade(seed: int, width_m: float, height_m: float, tower: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A building front: wall material, floors, a window grid, a ground floor with shops or doors.

    Returns RGB (H x W x 3 float32) and the window mask (H x W int32: window index, -1 elsewhere).
    """
    rng = np.random.default_rng(seed)
    t = TEXELS_PER_M
    h, w = max(int(round(height_m * t)), 4), max(int(round(width_m * t)), 4)
    wall = _hsv(rng.random(), rng.uniform(0.05, 0.45), rng.uniform(0.45, 0.9))
    if tower:
        wall = _hsv(rng.uniform(0.5, 0.7), rng.uniform(0.0, 0.2), rng.uniform(0.35, 0.75))
    img = np.empty((h, w, 3), np.float32)
    img[:] = wall
    img *= (1 + 0.12 * _smooth_noise(rng, (h, w), max(w // 48, 2)))[..., None]
    mask = np.full((h, w), -1, np.int32)
    if not tower and rng.random() < 0.4:  # brick courses
        mortar = wall * 1.25
        img[::6] = mortar
        for row in range(0, h, 12):
            img[row:row + 6, ::14] = mortar
            img[row + 6:row + 12, 7::14] = mortar
    ground_floor = rng.uniform(3.5, 4.5) if not tower else rng.uniform(4.0, 6.0)
    floor_h = rng.uniform(2.8, 3.6) if not tower else rng.uniform(3.0, 3.8)
    pitch = rng.uniform(1.6, 3.2) if not tower else rng.uniform(1.2, 2.0)
    win_w, win_h = pitch * rng.uniform(0.45, 0.75), floor_h * rng.uniform(0.4, 0.65)
    glass = _hsv(rng.uniform(0.5, 0.65), rng.uniform(0.2, 0.5), rng.uniform(0.15, 0.4))
    frame = _hsv(rng.random(), rng.uniform(0, 0.3), rng.choice([0.15, 0.95]))
    cornice = wall * rng.uniform(0.6, 1.3)
    columns = max(int((width_m - 0.6) // pitch), 1)
    margin = (width_m - columns * pitch) / 2
    skip = rng.random(columns) < 0.1
    window = 0
    z = ground_floor
    while z + floor_h <= height_m - 0.4:
        row_top = (height_m - z - floor_h) * t
        _rect(img, None, 0, (height_m - z) * t - 3, w, (height_m - z) * t + 1, cornice)
        sill = (floor_h - win_h) * 0.45
        for col in range(columns):
            if skip[col]:
                continue
            x0 = (margin + col * pitch + (pitch - win_w) / 2) * t
            y0 = row_top + sill * t
            _rect(img, None, x0 - 2, y0 - 2, x0 + win_w * t + 2, y0 + win_h * t + 2, frame)
            _rect(img, mask, x0, y0, x0 + win_w * t, y0 + win_h * t, glass, window)
            gy = np.linspace(1.25, 0.75, max(int(win_h * t), 1), dtype=np.float32)[:, None, None]
            y0i, x0i = max(int(y0), 0), max(int(x0), 0)
            block = img[y0i:y0i + len(gy), x0i:int(x0 + win_w * t)]
            block *= gy[:len(block)]
            window += 1
        z += floor_h
    base_top = (height_m - ground_floor) * t
    if tower:
        _rect(img, None, 0, base_top, w, h, wall * 0.7)
    else:
        x = 0.3 * t
        while x < w - 1.2 * t:
            unit = rng.uniform(3.0, 7.0) * t
            if rng.random() < 0.55:  # a shop: sign band, window, awning
                _sign(rng, img, x, base_top + 0.3 * t, min(x + unit, w) - 0.2 * t, base_top + 1.0 * t)
                _rect(img, mask, x + 0.3 * t, base_top + 1.3 * t, min(x + unit, w) - 0.5 * t, h - 0.4 * t,
                      glass * 1.2, window)
                window += 1
            else:  # a door and a poster
                door = _hsv(rng.random(), rng.uniform(0.3, 0.8), rng.uniform(0.2, 0.6))
                _rect(img, None, x + 0.5 * t, h - 2.3 * t, x + 1.6 * t, h, door)
                if rng.random() < 0.6:
                    colour = _hsv(rng.random(), 0.9, 0.9)
                    cv2.ellipse(img, (int(x + 2.6 * t), int(h - 1.4 * t)), (int(0.6 * t), int(0.4 * t)),
                                float(rng.uniform(0, 180)), 0, 360, colour.tolist(), -1)
            x += unit + 0.3 * t
    _rect(img, None, 0, 0, w, 0.35 * t, wall * 0.65)  # parapet
    img += rng.normal(0, 0.025, img.shape).astype(np.float32)
    return img.clip(0, 1), mask


def car(seed: int, width_m: float, height_m: float) -> tuple[np.ndarray, np.ndarray]:
    """A parked car's sides, unrolled around the box: body colour, a window band, wheels."""
    rng = np.random.default_rng(seed)
    t = TEXELS_PER_M
    h, w = max(int(round(height_m * t)), 4), max(int(round(width_m * t)), 4)
    body = _hsv(rng.random(), rng.uniform(0.0, 0.9), rng.uniform(0.15, 0.95))
    img = np.empty((h, w, 3), np.float32)
    img[:] = body
    _rect(img, None, 0, 0.05 * t, w, 0.55 * t, np.array([0.12, 0.14, 0.18], np.float32))
    for x in np.arange(0.6, width_m, 2.2):
        cv2.circle(img, (int(x * t), h - 2), int(0.33 * t), (0.05, 0.05, 0.05), -1)
    img += rng.normal(0, 0.02, img.shape).astype(np.float32)
    return img.clip(0, 1), np.full((h, w), -1, np.int32)


def ground(seed: int) -> np.ndarray:
    """A GROUND_TILE-square asphalt tile: grey grain, patches and cracks (tiles seamlessly)."""
    rng = np.random.default_rng([seed, 7])
    n = GROUND_TILE
    grain = rng.normal(0, 0.05, (n, n)).astype(np.float32)
    coarse = rng.uniform(-1, 1, (8, 8)).astype(np.float32)
    patches = cv2.resize(np.tile(coarse, (3, 3)), (3 * n, 3 * n), interpolation=cv2.INTER_CUBIC)[n:2 * n, n:2 * n]
    tone = 0.36 + grain + 0.05 * patches
    for _ in range(6):
        p = rng.uniform(0, n, 2)
        for _ in range(20):
            q = (p + rng.normal(0, 6, 2))
            cv2.line(tone, tuple(int(v) % n for v in p), tuple(int(v) % n for v in q), 0.22, 1)
            p = q
    return np.repeat(tone.clip(0, 1)[..., None], 3, axis=2) * np.array([1.0, 1.0, 1.03], np.float32)


def sky_clouds(seed: int, cover: float) -> np.ndarray:
    """Cloud density over azimuth (0..2pi, 720 columns) x elevation (0..90 deg, 90 rows), in [0, 1]."""
    rng = np.random.default_rng([seed, 11])
    field = np.zeros((90, 720), np.float32)
    for cells, weight in ((8, 0.6), (24, 0.3), (72, 0.1)):
        coarse = rng.uniform(-1, 1, (max(cells // 8, 2), cells)).astype(np.float32)
        wrapped = np.concatenate([coarse, coarse[:, :3]], 1)
        big = cv2.resize(wrapped, (720 * (cells + 3) // cells, 90), interpolation=cv2.INTER_CUBIC)
        field += weight * big[:, :720]
    return np.clip((field + cover - 0.5) * 2.5, 0, 1)
