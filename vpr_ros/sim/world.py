"""A procedural street world: a closed route through streets lined with textured buildings.

Everything follows from the seed: the route (a rounded rectangle whose perimeter fits the run), the
buildings along both sides of it (length, setback, height, facade), a skyline of towers behind the
outer side, and per lap a different set of parked cars. The geometry is 2.5D: vertical walls standing
on flat ground, stored as 2D segments with a height and a texture.
"""

from dataclasses import dataclass

import numpy as np

WORLD_DEFAULTS = {
    "street_half_width": 6.0,  # m from the route centre line to the facades
    "corner_radius": 12.0,  # m, radius of the route's corners
    "building_length": (6.0, 18.0),  # m along the street
    "building_height": (5.0, 22.0),  # m
    "setback": (0.0, 1.5),  # m behind the street line
    "gap_probability": 0.35,  # chance of an alley after a building
    "gap_length": (2.0, 6.0),  # m
    "skyline_offset": (28.0, 40.0),  # m from the route, outer side only
    "skyline_height": (20.0, 45.0),  # m
    "skyline_length": (12.0, 30.0),  # m
    "piece_length": 2.0,  # m: facades along curves are split into straight pieces this long
    "car_curb_offset": 4.4,  # m from the route centre to a parked car's centre
    "car_gap": (3.0, 18.0),  # m between parked vehicles along a curb
    "truck_probability": 0.3,  # a parked vehicle is a truck or van rather than a car
    "min_straight": 10.0,  # m: shortest straight of the route
    "repeat_probability": 0.6,  # chance that a building is one of a few repeated designs (row houses)
    "designs": 6,  # repeated designs per world
}
SIDE_LEFT, SIDE_RIGHT = 1, -1
CAR_SIZE = (4.4, 1.8, 1.5)  # length, width, height in m
TRUCK_SIZE = (7.5, 2.4, 3.2)


@dataclass
class Route:
    """A closed rounded-rectangle centre line, counter-clockwise, sampled densely by arc length."""

    s: np.ndarray  # M, arc length of the samples (the last sample closes the loop at `length`)
    xy: np.ndarray  # M x 2
    heading: np.ndarray  # M, unwrapped radians

    @property
    def length(self) -> float:
        return float(self.s[-1])

    @classmethod
    def rounded_rectangle(cls, perimeter: float, aspect: float, radius: float, min_straight: float,
                          step: float = 0.25) -> "Route":
        short = (perimeter - 2 * np.pi * radius) / (2 * (1 + aspect))
        if short < min_straight:  # the run is shorter than the smallest loop: lay out the smallest
            short = min_straight
        straights = (aspect * short, short, aspect * short, short)
        pieces, heading, pos = [], 0.0, np.array([0.0, -radius - short / 2])
        for straight in straights:  # a straight, then a left quarter turn
            n = max(int(np.ceil(straight / step)), 1)
            d = np.linspace(0, straight, n, endpoint=False)
            pieces.append((pos + np.outer(d, [np.cos(heading), np.sin(heading)]), np.full(n, heading)))
            pos = pos + straight * np.array([np.cos(heading), np.sin(heading)])
            centre = pos + radius * np.array([-np.sin(heading), np.cos(heading)])
            n = max(int(np.ceil(np.pi / 2 * radius / step)), 1)
            a = heading + np.linspace(0, np.pi / 2, n, endpoint=False)
            pieces.append((centre + radius * np.stack([np.sin(a), -np.cos(a)], 1), a))
            heading += np.pi / 2
            pos = centre + radius * np.array([np.sin(heading), -np.cos(heading)])
        xy = np.concatenate([p[0] for p in pieces] + [pieces[0][0][:1]])
        headings = np.concatenate([p[1] for p in pieces] + [[2 * np.pi]])
        s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
        return cls(s, xy - xy.mean(axis=0), headings)

    def at(self, s) -> tuple[np.ndarray, np.ndarray]:
        """Positions (N x 2) and headings (N) at arc lengths `s` (wrapped around the loop)."""
        s = np.mod(np.asarray(s, np.float64), self.length)
        xy = np.stack([np.interp(s, self.s, self.xy[:, 0]), np.interp(s, self.s, self.xy[:, 1])], 1)
        return xy, np.interp(s, self.s, self.heading)

    def offset(self, s, lateral) -> np.ndarray:
        """Points `lateral` metres to the left of the route at arc lengths `s` -> N x 2."""
        xy, h = self.at(s)
        return xy + np.asarray(lateral, np.float64)[..., None] * np.stack([-np.sin(h), np.cos(h)], 1)


@dataclass
class Walls:
    """Vertical wall segments: 2D endpoints, height, the texture they show and where on it."""

    a: np.ndarray  # S x 2, start
    b: np.ndarray  # S x 2, end
    height: np.ndarray  # S, m
    texture: np.ndarray  # S, texture id (a building, tower or car)
    u0: np.ndarray  # S, m along the texture where the segment starts
    normal: np.ndarray  # S x 2, unit normal facing the street

    @property
    def length(self) -> np.ndarray:
        return np.linalg.norm(self.b - self.a, axis=1)

    @classmethod
    def concatenate(cls, parts: list["Walls"]) -> "Walls":
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("a", "b", "height", "texture", "u0", "normal")))


@dataclass
class TextureSpec:
    """What a texture id shows: its kind ("facade", "tower", "car"), size in metres and seed."""

    kind: str
    width_m: float
    height_m: float
    seed: int


class StreetWorld:
    """The static world of a seed and perimeter; `cars(lap_seed)` adds a lap's parked cars."""

    def __init__(self, seed: int, perimeter: float, conf: dict | None = None):
        self.conf = {**WORLD_DEFAULTS, **(conf or {})}
        self.seed = seed
        rng = np.random.default_rng([seed, 0])
        c = self.conf
        self.route = Route.rounded_rectangle(perimeter, float(rng.uniform(1.0, 2.0)), c["corner_radius"],
                                             c["min_straight"])
        self.textures: list[TextureSpec] = []
        parts = []
        for side in (SIDE_LEFT, SIDE_RIGHT):
            parts += self._street_side(rng, side)
        parts += self._skyline(rng)
        self.walls = Walls.concatenate(parts)

    def _texture(self, kind: str, width_m: float, height_m: float, rng) -> int:
        self.textures.append(TextureSpec(kind, width_m, height_m, int(rng.integers(2**31))))
        return len(self.textures) - 1

    def _facade(self, s0: float, s1: float, lateral: float, height: float, texture: int) -> Walls:
        """A facade following the route from s0 to s1 at a lateral offset, as straight pieces."""
        n = max(int(np.ceil((s1 - s0) / self.conf["piece_length"])), 1)
        points = self.route.offset(np.linspace(s0, s1, n + 1), np.full(n + 1, lateral))
        a, b = points[:-1], points[1:]
        lengths = np.linalg.norm(b - a, axis=1)
        u0 = np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
        direction = (b - a) / np.maximum(lengths, 1e-9)[:, None]
        normal = np.stack([-direction[:, 1], direction[:, 0]], 1) * (-np.sign(lateral))  # towards the route
        return Walls(a, b, np.full(n, height), np.full(n, texture), u0, normal)

    def _street_side(self, rng, side: int) -> list[Walls]:
        c, parts, s = self.conf, [], float(rng.uniform(0, 3))
        end = self.route.length
        designs = [(int(d.integers(2**31)), float(d.uniform(*c["building_length"])), float(d.uniform(*c["building_height"])))
                   for d in [np.random.default_rng([self.seed, 5, i]) for i in range(c["designs"])]]
        while s < end - 2.0:
            seed = None
            if rng.random() < c["repeat_probability"]:  # the same design as elsewhere: perceptual aliasing
                seed, length, height = designs[int(rng.integers(len(designs)))]
            else:
                length, height = float(rng.uniform(*c["building_length"])), float(rng.uniform(*c["building_height"]))
            length = min(length, end - s)
            lateral = side * (c["street_half_width"] + float(rng.uniform(*c["setback"])))
            walls = self._facade(s, s + length, lateral, height, len(self.textures))
            self._texture("facade", float(walls.length.sum()), height, rng)
            if seed is not None:
                self.textures[-1].seed = seed
            parts.append(walls)
            s += length
            if rng.random() < c["gap_probability"]:
                s += float(rng.uniform(*c["gap_length"]))
        return parts

    def _skyline(self, rng) -> list[Walls]:
        c, parts, s = self.conf, [], 0.0
        while s < self.route.length - 5.0:
            length = min(float(rng.uniform(*c["skyline_length"])), self.route.length - s)
            lateral = -float(rng.uniform(*c["skyline_offset"]))  # right of a counter-clockwise route: outside
            height = float(rng.uniform(*c["skyline_height"]))
            walls = self._facade(s, s + length, lateral, height, len(self.textures))
            self._texture("tower", float(walls.length.sum()), height, rng)
            parts.append(walls)
            s += length + float(rng.uniform(4.0, 15.0))
        return parts

    def cars(self, lap_seed: int) -> tuple[Walls, list[TextureSpec]]:
        """A lap's parked cars along both curbs: box walls, and their texture specs (ids after the world's)."""
        rng = np.random.default_rng([self.seed, 1, lap_seed])
        c, parts, specs = self.conf, [], []
        for side in (SIDE_LEFT, SIDE_RIGHT):
            s = float(rng.uniform(*c["car_gap"]))
            while s < self.route.length - TRUCK_SIZE[0]:
                length, width, height = TRUCK_SIZE if rng.random() < c["truck_probability"] else CAR_SIZE
                (centre,), (heading,) = self.route.offset([s], [side * c["car_curb_offset"]]), self.route.at([s])[1]
                f, l = np.array([np.cos(heading), np.sin(heading)]), np.array([-np.sin(heading), np.cos(heading)])
                corners = [centre + sx * length / 2 * f + sy * width / 2 * l
                           for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
                tid = len(self.textures) + len(specs)
                specs.append(TextureSpec("car", 2 * (length + width), height, int(rng.integers(2**31))))
                a = np.array(corners)
                b = np.roll(a, -1, axis=0)
                edge = np.linalg.norm(b - a, axis=1)
                d = (b - a) / edge[:, None]
                normal = np.stack([d[:, 1], -d[:, 0]], 1)  # outward for a counter-clockwise box
                parts.append(Walls(a, b, np.full(4, height), np.full(4, tid),
                                   np.concatenate([[0.0], np.cumsum(edge)[:-1]]), normal))
                s += length + float(rng.uniform(*c["car_gap"]))
        if not parts:
            empty = np.zeros((0, 2))
            return Walls(empty, empty, np.zeros(0), np.zeros(0, int), np.zeros(0), empty), specs
        return Walls.concatenate(parts), specs
