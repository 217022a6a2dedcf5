"""Render camera frames of a StreetWorld: per-column ray casting against the walls, floor casting for
the ground, a sky with clouds, sun shading, a light carried by the robot (headlights at night), haze and
fog, snow on the ground and on roofs, then camera effects (exposure, white balance, gamma, pitch and
roll as an exact rotation homography, raindrops on the lens, blur, sensor noise).

A pinhole camera with no distortion. Poses are (x, y, z, yaw, pitch, roll) of the camera body in the
world (x forward, y left, z up; rotation Rz(yaw) Ry(pitch) Rx(roll), so positive pitch looks down).
"""

from collections import OrderedDict
from dataclasses import dataclass, field

import cv2
import numpy as np

from vpr_ros.sim import textures
from vpr_ros.sim.world import StreetWorld, TextureSpec, Walls

BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # columns: optical x, y, z
MAX_LAYERS = 3  # walls drawn per image column, nearest first (the others show through alleys and above roofs)
VIEW_RANGE_M = 160.0
TEXTURE_CACHE = 256


@dataclass
class Appearance:
    """Lighting, weather and camera response of one lap."""

    name: str = "day"
    sun_azimuth_deg: float = 35.0
    sun_elevation_deg: float = 45.0
    ambient: float = 0.6
    diffuse: float = 0.55
    sky_top: tuple = (0.25, 0.45, 0.85)
    sky_horizon: tuple = (0.75, 0.85, 0.95)
    cloud_cover: float = 0.3
    cloud_colour: tuple = (0.95, 0.95, 0.97)
    haze: tuple = (0.78, 0.84, 0.92)
    fog_m: float = 500.0  # distance at which haze reaches 63 %
    exposure: float = 1.0
    white_balance: tuple = (1.0, 1.0, 1.0)
    gamma: float = 1.0  # > 1 darkens mid-tones
    lit_windows: float = 0.03  # fraction of windows lit from inside
    lit_colour: tuple = (1.0, 0.82, 0.5)
    repaint: float = 0.0  # fraction of buildings and cars repainted (tinted) since the first lap
    blur_sigma: float = 0.0  # px
    noise_sigma: float = 1.5  # grey levels
    seed: int = 0  # lit windows and clouds
    headlight: float = 0.0  # light carried by the robot: added brightness at 0 m, falling with distance
    headlight_m: float = 8.0  # ... to half at this distance
    snow: float = 0.0  # share of the ground covered white, and of roofs' top band
    snow_band_m: float = 1.2  # height of the snow band along each wall's top
    ground_tint: tuple = (1.0, 1.0, 1.0)  # season colour of the ground (grass, leaves, mud)
    raindrops: int = 0  # drops on the lens per frame (each a blurred, brightened disc)


APPEARANCES = {
    "day": Appearance(),
    "dusk": Appearance("dusk", sun_azimuth_deg=230.0, sun_elevation_deg=8.0, ambient=0.45, diffuse=0.45,
                       sky_top=(0.22, 0.25, 0.45), sky_horizon=(0.95, 0.6, 0.4), cloud_cover=0.55,
                       cloud_colour=(0.7, 0.5, 0.5), haze=(0.75, 0.6, 0.55), fog_m=150.0, exposure=0.7,
                       white_balance=(1.12, 1.0, 0.85), gamma=1.6, lit_windows=0.5, repaint=0.3, blur_sigma=1.2,
                       noise_sigma=8.0, seed=1),
    "night": Appearance("night", sun_azimuth_deg=0.0, sun_elevation_deg=-10.0, ambient=0.07, diffuse=0.0,
                        sky_top=(0.01, 0.015, 0.04), sky_horizon=(0.06, 0.06, 0.09), cloud_cover=0.3,
                        cloud_colour=(0.08, 0.08, 0.1), haze=(0.04, 0.04, 0.06), fog_m=90.0, exposure=1.7,
                        white_balance=(1.05, 1.0, 0.9), gamma=1.3, lit_windows=0.45, lit_colour=(1.0, 0.8, 0.45),
                        repaint=0.1, blur_sigma=0.8, noise_sigma=12.0, seed=3, headlight=0.9, headlight_m=9.0),
    "rain": Appearance("rain", sun_azimuth_deg=150.0, sun_elevation_deg=40.0, ambient=0.55, diffuse=0.08,
                       sky_top=(0.45, 0.47, 0.5), sky_horizon=(0.62, 0.63, 0.65), cloud_cover=1.0,
                       cloud_colour=(0.5, 0.5, 0.53), haze=(0.6, 0.61, 0.63), fog_m=70.0, exposure=1.0,
                       white_balance=(0.95, 1.0, 1.08), gamma=1.1, lit_windows=0.15, repaint=0.1, blur_sigma=0.9,
                       noise_sigma=5.0, seed=4, ground_tint=(0.55, 0.57, 0.62), raindrops=14),
    "fog": Appearance("fog", sun_azimuth_deg=100.0, sun_elevation_deg=30.0, ambient=0.7, diffuse=0.05,
                      sky_top=(0.78, 0.79, 0.8), sky_horizon=(0.82, 0.82, 0.83), cloud_cover=1.0,
                      cloud_colour=(0.8, 0.8, 0.81), haze=(0.8, 0.8, 0.81), fog_m=28.0, exposure=1.0,
                      white_balance=(1.0, 1.0, 1.02), gamma=1.0, lit_windows=0.08, repaint=0.1, blur_sigma=0.6,
                      noise_sigma=3.0, seed=5),
    "snow": Appearance("snow", sun_azimuth_deg=200.0, sun_elevation_deg=15.0, ambient=0.7, diffuse=0.3,
                       sky_top=(0.55, 0.62, 0.75), sky_horizon=(0.85, 0.87, 0.9), cloud_cover=0.7,
                       cloud_colour=(0.85, 0.86, 0.88), haze=(0.85, 0.87, 0.9), fog_m=140.0, exposure=0.9,
                       white_balance=(0.95, 1.0, 1.1), gamma=1.0, lit_windows=0.1, repaint=0.2, blur_sigma=0.4,
                       noise_sigma=3.0, seed=6, snow=0.85, ground_tint=(0.9, 0.85, 0.7)),
    "overcast": Appearance("overcast", sun_azimuth_deg=120.0, sun_elevation_deg=60.0, ambient=0.75, diffuse=0.1,
                           sky_top=(0.6, 0.62, 0.66), sky_horizon=(0.8, 0.8, 0.82), cloud_cover=0.95,
                           cloud_colour=(0.7, 0.7, 0.72), haze=(0.72, 0.73, 0.75), fog_m=120.0, exposure=1.1,
                           white_balance=(0.95, 1.0, 1.08), gamma=0.9, lit_windows=0.1, repaint=0.25, blur_sigma=0.5,
                           noise_sigma=4.0, seed=2),
}


@dataclass
class Camera:
    """Pinhole intrinsics of the rendered images."""

    width: int = 640
    height: int = 480
    hfov_deg: float = 90.0

    def __post_init__(self):
        if not (16 <= self.width <= 8192 and 16 <= self.height <= 8192):
            raise ValueError(f"image size must be 16..8192 pixels a side, got {self.width}x{self.height}")
        if not 20.0 <= self.hfov_deg <= 150.0:
            raise ValueError(f"hfov_deg must lie in [20, 150], got {self.hfov_deg}")

    @property
    def focal(self) -> float:
        return 0.5 * self.width / np.tan(np.radians(self.hfov_deg) / 2)

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.focal, 0, (self.width - 1) / 2], [0, self.focal, (self.height - 1) / 2], [0, 0, 1]])


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rz(yaw) Ry(pitch) Rx(roll)."""
    cz, sz, cy, sy, cx, sx = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return rz @ ry @ rx


@dataclass
class _Scene:
    walls: Walls
    specs: list[TextureSpec]
    mid: np.ndarray = field(init=False)
    radius: np.ndarray = field(init=False)

    def __post_init__(self):
        self.mid = (self.walls.a + self.walls.b) / 2
        self.radius = self.walls.length / 2


class Renderer:
    """Renders frames of one world; caches textures (with mip levels) across frames and laps."""

    def __init__(self, world: StreetWorld, camera: Camera):
        self.world, self.camera = world, camera
        self._textures: OrderedDict = OrderedDict()
        self._ground = self._mips(np.clip(textures.ground(world.seed) * 255, 0, 255).astype(np.uint8), 6)
        self._clouds: dict[tuple, np.ndarray] = {}

    @staticmethod
    def _mips(image: np.ndarray, levels: int) -> list[np.ndarray]:
        out = [image]
        while len(out) < levels and min(out[-1].shape[:2]) >= 4:
            out.append(cv2.resize(out[-1], (out[-1].shape[1] // 2, out[-1].shape[0] // 2), interpolation=cv2.INTER_AREA))
        return out

    def _texture(self, tid: int, spec: TextureSpec, look: Appearance) -> list[np.ndarray]:
        key = (tid, spec.seed, look.seed, look.lit_windows, look.repaint)
        if key in self._textures:
            self._textures.move_to_end(key)
            return self._textures[key]
        if spec.kind == "car":
            rgb, mask = textures.car(spec.seed, spec.width_m, spec.height_m)
        else:
            rgb, mask = textures.facade(spec.seed, spec.width_m, spec.height_m, tower=spec.kind == "tower")
        change = np.random.default_rng([tid, spec.seed, look.seed, 5])
        if change.random() < look.repaint:
            rgb[mask < 0] *= change.uniform(0.55, 1.35, 3).astype(np.float32)
        windows = int(mask.max()) + 1
        if windows and look.lit_windows > 0:
            lit = np.random.default_rng([spec.seed, look.seed, 3]).random(windows) < look.lit_windows
            on = (mask >= 0) & lit[np.maximum(mask, 0)]
            rgb[on] = np.asarray(look.lit_colour, np.float32) * rgb[on].mean(axis=1, keepdims=True).clip(0.5, 1) * 1.6
        mips = self._mips((rgb.clip(0, 1) * 255).astype(np.uint8), 5)
        self._textures[key] = mips
        if len(self._textures) > TEXTURE_CACHE:
            self._textures.popitem(last=False)
        return mips

    def _cloud_field(self, look: Appearance) -> np.ndarray:
        key = (look.seed, look.cloud_cover)
        if key not in self._clouds:
            self._clouds[key] = textures.sky_clouds(self.world.seed * 31 + look.seed, look.cloud_cover)
        return self._clouds[key]

    def render(self, pose: tuple[float, float, float, float, float, float], look: Appearance,
               extra: tuple[Walls, list[TextureSpec]] | None = None, rng: np.random.Generator | None = None,
               with_depth: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """One frame at `pose` (x, y, z, yaw, pitch, roll) -> H x W x 3 uint8 RGB; `with_depth`: also its
        exact depth, H x W float32, the optical-axis distance (m) of what each pixel shows (inf: sky)."""
        x, y, z, yaw, pitch, roll = (float(v) for v in pose)
        if not np.isfinite([x, y, z, yaw, pitch, roll]).all() or z <= 0.05:
            raise ValueError(f"camera pose must be finite with z > 0.05 m, got {pose}")
        cam = self.camera
        f = cam.focal
        tilt = abs(pitch) + abs(roll)
        margin = int(np.ceil(f * np.tan(min(tilt, 0.5)) * 1.5)) + 2 if tilt > 0 else 0
        width, height = cam.width + 2 * margin, cam.height + 2 * margin
        cx, cy = (width - 1) / 2, (height - 1) / 2
        lateral = (cx - np.arange(width)) / f  # left of the optical axis, per column
        fwd, left = np.array([np.cos(yaw), np.sin(yaw)]), np.array([-np.sin(yaw), np.cos(yaw)])
        rays = fwd[None] + lateral[:, None] * left[None]  # W x 2, forward component 1: t is the depth
        canvas = self._sky(look, yaw, lateral, height, cy, f)
        depth = np.full((height, width), np.inf, np.float32)  # forward distance in the level camera
        self._draw_ground(canvas, depth, look, x, y, z, rays, cy, f, lateral)
        scenes = [_Scene(self.world.walls, self.world.textures)]
        if extra is not None and len(extra[0].a):
            scenes.append(_Scene(extra[0], self.world.textures + extra[1]))
        self._draw_walls(canvas, depth, look, np.array([x, y]), z, rays, scenes, cy, f)
        image = self._camera_effects(canvas, look, pitch, roll, margin, rng)
        return (image, self._tilted_depth(depth, pitch, roll, margin)) if with_depth else image

    def _sky(self, look, yaw, lateral, height, cy, f) -> np.ndarray:
        rows = np.arange(height)
        elevation = np.arctan2(cy - rows[:, None], f * np.sqrt(1 + lateral[None] ** 2))  # H x W
        blend = np.sqrt(np.clip(elevation / (np.pi / 2), 0, 1))[..., None]
        sky = (1 - blend) * np.asarray(look.sky_horizon, np.float32) + blend * np.asarray(look.sky_top, np.float32)
        clouds = self._cloud_field(look)
        azimuth = np.mod(yaw + np.arctan(lateral), 2 * np.pi)
        ci = (azimuth / (2 * np.pi) * clouds.shape[1]).astype(int) % clouds.shape[1]
        ri = np.clip(np.degrees(elevation), 0, 89).astype(int)
        density = clouds[ri, ci[None]][..., None] * (elevation > 0)[..., None]
        return ((1 - density) * sky + density * np.asarray(look.cloud_colour, np.float32)).astype(np.float32)

    def _light(self, look: Appearance, normal: np.ndarray | None) -> np.ndarray | float:
        az, el = np.radians(look.sun_azimuth_deg), np.radians(look.sun_elevation_deg)
        if normal is None:  # the ground
            return look.ambient + look.diffuse * np.sin(el)
        sun = np.array([np.cos(az), np.sin(az)]) * np.cos(el)
        return look.ambient + look.diffuse * np.clip(normal @ sun, 0, None)

    @staticmethod
    def _headlight(look: Appearance, depth: np.ndarray, lateral: np.ndarray) -> np.ndarray | float:
        """Brightness the robot's own light adds at `depth` metres and `lateral` (tan of the ray's angle): a
        cone of about 35 degrees half-width, falling to half at headlight_m."""
        if look.headlight <= 0:
            return 0.0
        cone = np.exp(-(lateral / 0.7) ** 2)
        return look.headlight * cone / (1 + (depth / look.headlight_m) ** 2)

    def _draw_ground(self, canvas, depth_buffer, look, x, y, z, rays, cy, f, lateral) -> None:
        height = canvas.shape[0]
        rows = np.arange(int(np.floor(cy)) + 1, height)
        if not len(rows):
            return
        depth = f * z / (rows - cy)  # per row
        texels = textures.GROUND_TEXELS_PER_M
        level = np.clip(np.floor(np.log2(np.maximum(texels * depth / f, 1.0))), 0, len(self._ground) - 1).astype(int)
        light, haze = self._light(look, None), np.asarray(look.haze, np.float32)
        for lv in np.unique(level):
            sel = rows[level == lv]
            d = depth[level == lv][:, None]
            gx, gy = x + d * rays[None, :, 0], y + d * rays[None, :, 1]
            tile = self._ground[lv]
            scale = texels / 2 ** lv
            colour = tile[(gy * scale).astype(np.int64) % tile.shape[0], (gx * scale).astype(np.int64) % tile.shape[1]]
            colour = colour.astype(np.float32) / 255 * np.asarray(look.ground_tint, np.float32)
            if look.snow > 0:  # patches of snow where the ground texture's own pattern is light enough
                cover = np.clip((colour.mean(axis=-1, keepdims=True) - (0.6 - 0.6 * look.snow)) * 8, 0, 1) * look.snow
                colour = colour * (1 - cover) + 0.93 * cover
            fog = (1 - np.exp(-d / look.fog_m))[..., None]
            lit = light + self._headlight(look, d, lateral[None])[..., None] if look.headlight > 0 else light
            canvas[sel] = (colour * lit) * (1 - fog) + haze * fog
            depth_buffer[sel] = d

    def _draw_walls(self, canvas, depth_buffer, look, p, z, rays, scenes, cy, f) -> None:
        height, width = canvas.shape[:2]
        hits = []  # per scene: (depth W x L, segment W x L)
        for scene in scenes:
            near = np.flatnonzero(np.linalg.norm(scene.mid - p, axis=1) - scene.radius < VIEW_RANGE_M)
            if not len(near):
                continue
            a, e = scene.walls.a[near], scene.walls.b[near] - scene.walls.a[near]
            ap = a - p
            denom = rays[:, :1] * e[None, :, 1] - rays[:, 1:] * e[None, :, 0]
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (ap[None, :, 0] * e[None, :, 1] - ap[None, :, 1] * e[None, :, 0]) / denom
                u = (ap[None, :, 0] * rays[:, 1:] - ap[None, :, 1] * rays[:, :1]) / denom
            valid = (np.abs(denom) > 1e-9) & (t > 0.2) & (u >= 0) & (u <= 1)
            t = np.where(valid, t, np.inf)
            k = min(MAX_LAYERS, len(near))
            order = np.argpartition(t, k - 1, axis=1)[:, :k] if len(near) > k else np.tile(np.arange(len(near)), (width, 1))
            hits.append((scene, near, t, u, order))
        if not hits:
            return
        # merge the scenes' nearest hits: (depth, scene index, segment index, u) per column and layer
        cols = np.arange(width)[:, None]
        depth = np.concatenate([h[2][cols, h[4]] for h in hits], 1)
        uu = np.concatenate([h[3][cols, h[4]] for h in hits], 1)
        seg = np.concatenate([h[1][h[4]] for h in hits], 1)
        which = np.concatenate([np.full(h[4].shape, i) for i, h in enumerate(hits)], 1)
        order = np.argsort(depth, axis=1)[:, :MAX_LAYERS]
        light_per_scene = [self._light(look, h[0].walls.normal) for h in hits]
        haze = np.asarray(look.haze, np.float32)
        for layer in range(order.shape[1] - 1, -1, -1):  # farthest first: nearer walls paint over
            pick = order[:, layer]
            t = depth[np.arange(width), pick]
            ok = np.isfinite(t)
            if not ok.any():
                continue
            s_idx, sc_idx, u = seg[np.arange(width), pick], which[np.arange(width), pick], uu[np.arange(width), pick]
            for sc in np.unique(sc_idx[ok]):
                scene = hits[sc][0]
                in_scene = ok & (sc_idx == sc)
                walls = scene.walls
                tids = walls.texture[s_idx[in_scene]]
                for tid in np.unique(tids):
                    columns = np.flatnonzero(in_scene)[tids == tid]
                    segs = s_idx[columns]
                    tc, uc = t[columns], u[columns]
                    wall_h = walls.height[segs]
                    mips = self._texture(int(tid), scene.specs[tid], look)
                    texel = textures.TEXELS_PER_M
                    level = np.clip(np.floor(np.log2(np.maximum(texel * tc / f, 1.0))), 0, len(mips) - 1).astype(int)
                    top = np.clip(np.floor(cy - f * (wall_h - z) / tc), 0, height - 1).astype(int)
                    bottom = np.clip(np.ceil(cy + f * z / tc), 0, height).astype(int)
                    r0, r1 = top.min(), bottom.max()
                    if r1 <= r0:
                        continue
                    rows = np.arange(r0, r1)[:, None]
                    z_world = z - (rows - cy) * tc[None] / f  # R x C
                    inside = (z_world >= 0) & (z_world <= wall_h[None])
                    along = walls.u0[segs] + uc * walls.length[segs]
                    shade = light_per_scene[sc][segs][None, :, None]
                    if look.headlight > 0:
                        ray_lateral = ((width - 1) / 2 - columns) / f
                        shade = shade + np.asarray(self._headlight(look, tc, ray_lateral))[None, :, None]
                    fog = (1 - np.exp(-tc / look.fog_m))[None, :, None]
                    for lv in np.unique(level):
                        in_level = level == lv
                        img = mips[lv]
                        scale = texel / 2 ** lv
                        tr = np.clip(((wall_h[None, in_level] - z_world[:, in_level]) * scale).astype(np.int64),
                                     0, img.shape[0] - 1)
                        tcol = np.clip((along[in_level] * scale).astype(np.int64), 0, img.shape[1] - 1)
                        colour = img[tr, np.broadcast_to(tcol[None], tr.shape)].astype(np.float32) / 255
                        if look.snow > 0:  # the top band of every wall: roofs and ledges under snow
                            band = (z_world[:, in_level] > wall_h[None, in_level] - look.snow_band_m)[..., None]
                            colour = np.where(band, colour * (1 - look.snow) + 0.95 * look.snow, colour)
                        colour = colour * shade[:, in_level] * (1 - fog[:, in_level]) + haze * fog[:, in_level]
                        m = inside[:, in_level]
                        rr, cc = np.nonzero(m)
                        canvas[r0 + rr, columns[in_level][cc]] = colour[rr, cc]
                        depth_buffer[r0 + rr, columns[in_level][cc]] = tc[in_level][cc]

    @staticmethod
    def _raindrops(image: np.ndarray, look: Appearance, rng: np.random.Generator) -> np.ndarray:
        """Drops on the lens: discs where the scene shows strongly blurred and a little brighter."""
        height, width = image.shape[:2]
        smeared = cv2.GaussianBlur(image, (0, 0), max(width, height) / 60) * 1.08 + 0.03
        mask = np.zeros((height, width), np.float32)
        for _ in range(look.raindrops):
            r = float(rng.uniform(0.01, 0.045)) * width
            centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
            axes = (max(int(r), 1), max(int(r * rng.uniform(0.7, 1.3)), 1))
            cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), 2.0)[..., None]
        return image * (1 - mask) + np.clip(smeared, 0, 1) * mask

    def _tilt_homography(self, pitch, roll, margin) -> tuple[np.ndarray, np.ndarray]:
        """The rotation from the output camera to the level camera the canvas was drawn in (optical axes),
        and the homography from output pixels to canvas pixels."""
        cam = self.camera
        relative = BODY_FROM_OPTICAL.T @ rotation(0.0, pitch, roll) @ BODY_FROM_OPTICAL
        k_canvas = cam.K.copy()
        k_canvas[0, 2] += margin
        k_canvas[1, 2] += margin
        return relative, k_canvas @ relative @ np.linalg.inv(cam.K)

    def _tilted_depth(self, depth: np.ndarray, pitch, roll, margin) -> np.ndarray:
        """The level camera's forward distances -> the output camera's optical-axis depth per output pixel
        (nearest canvas pixel: depth is never blended across an edge)."""
        if not margin:
            return depth
        relative, homography = self._tilt_homography(pitch, roll, margin)
        f = self.camera.focal
        height, width = depth.shape
        cx, cy = (width - 1) / 2, (height - 1) / 2
        u, v = np.meshgrid((np.arange(width) - cx) / f, (np.arange(height) - cy) / f)
        with np.errstate(invalid="ignore"):  # inf * 0 in the sky
            # X_level = relative X_out, so the output camera's z is relative[:, 2] . X_level
            z_out = depth * (relative[0, 2] * u + relative[1, 2] * v + relative[2, 2])
        z_out = np.where(np.isfinite(depth), z_out, np.inf).astype(np.float32)
        return cv2.warpPerspective(z_out, homography, (self.camera.width, self.camera.height),
                                   flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)

    def _camera_effects(self, canvas, look, pitch, roll, margin, rng) -> np.ndarray:
        image = canvas * (look.exposure * np.asarray(look.white_balance, np.float32))
        image = np.clip(image, 0, 1) ** look.gamma
        cam = self.camera
        if margin:
            _, homography = self._tilt_homography(pitch, roll, margin)  # output pixel -> canvas pixel
            image = cv2.warpPerspective(image, homography, (cam.width, cam.height),
                                        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        if look.raindrops > 0:
            image = self._raindrops(image, look, rng if rng is not None else np.random.default_rng(0))
        if look.blur_sigma > 0:
            image = cv2.GaussianBlur(image, (0, 0), look.blur_sigma)
        image = image * 255
        if look.noise_sigma > 0:
            rng = rng if rng is not None else np.random.default_rng(0)
            image = image + rng.normal(0, look.noise_sigma, image.shape).astype(np.float32)
        return np.clip(image + 0.5, 0, 255).astype(np.uint8)
