"""An incremental pose graph (GTSAM's iSAM2) over body keyframes from odometry, closed by the node's loop
closures and, in localize mode, anchored by its localised poses.

- Keyframes: odometry poses (x y z qx qy qz qw in the odometry frame) at least `keyframe_distance_m`,
  `keyframe_rotation_deg` or `keyframe_interval_s` apart; consecutive ones are joined by a between factor of
  the odometry increment, its covariance the difference of the messages' pose covariances (a wheel
  odometry's accumulated covariance), or the drift model when they carry none. An odometry pose that jumps
  (faster than `max_speed_mps`) is refused; when the next `jump_reset_after` poses agree with each other
  and not with the graph, the odometry was reset: the chain goes on through a loose factor.
- A loop closure (LoopClosure: T_query_match in the query camera frame, 6 x 6 covariance) becomes a
  between factor on the keyframes nearest its query and match stamps (within `max_stamp_offset_s`, else
  refused with the reason), moved to those keyframes along the odometry and carried into the body frame
  with the camera's mounting (factors.body_relative).
- A localised pose (vpr/pose, a metric fix in the map frame with its covariance) is a prior on the
  keyframe nearest its stamp.

How a false closure is kept out, and why the kernel alone cannot (docs/posegraph.md has the measurements):
a robust kernel in the edge's own sigmas cannot tell a false closure from a true one after a long drift,
because both disagree with the odometry by many sigmas (the odometry covariance is a random walk; real drift
is systematic). What separates them is agreement between closures over a short span of odometry, where
drift is small: a closure enters the graph once `support` other closures whose query keyframes lie within
`consistency_window_m` of travel agree with it (each pair's loop query -> query' -> match' -> match, with
odometry between neighbours, composes to the identity within the pair's covariances and a drift allowance of
`consistency_sigma_per_m` of that span). A wrong pair rarely agrees with its neighbours; a run of look-alikes
that agree with one another is what the kernel (in the edge's own sigmas, on the now-corrected graph) is
for. Fixes are absolute: they need no support, only the kernel.

Direction-only closures (the scale unknown, translation a unit vector) are skipped and counted by default
(`direction_only="skip"`); "rotation" uses their rotation alone (the message's translation variance is
huge already, so the factor constrains no translation).
"""

import bisect
from dataclasses import dataclass, field

import gtsam
import numpy as np

from vpr_ros.core.matching.transforms import pose7
from vpr_ros.core.posegraph.factors import (ROS_TO_GTSAM, body_fix, body_relative, pose_matrix,
                                            world_covariance_to_right)
from vpr_ros.core.posegraph.settings import GraphCounts, GraphSettings

CHAIN_KEYS = 1 << 32  # keys per chain: chain i's keyframe k is the variable i * CHAIN_KEYS + k


@dataclass
class _Chain:
    """One robot's (or session's) odometry keyframes."""

    name: str
    base: int  # its first key
    stamps: list[int] = field(default_factory=list)
    odometry: list[np.ndarray] = field(default_factory=list)  # the odometry's own pose of each keyframe, 4 x 4
    covariance: list = field(default_factory=list)  # each keyframe's odometry pose covariance (gtsam order) or None
    travelled: list[float] = field(default_factory=list)  # odometry path length at each keyframe (m)
    last: tuple | None = None  # the newest accepted odometry (stamp, 4 x 4 pose, covariance or None)
    jumped: list = field(default_factory=list)

    def key(self, index: int) -> int:
        return self.base + index


@dataclass
class _Closure:
    query: tuple[_Chain, int]  # (chain, keyframe index)
    match: tuple[_Chain, int]
    body: np.ndarray  # 4 x 4 X_query^-1 X_match between the keyframes
    covariance: np.ndarray  # 6 x 6, gtsam order
    added: bool = False
    scale: float = 0.0  # its kernel's scale now (whitened units)
    factor: int = -1  # its factor's index in iSAM2 (-1: not yet there)

    @property
    def keys(self) -> tuple[int, int]:
        return self.query[0].key(self.query[1]), self.match[0].key(self.match[1])


@dataclass
class _Fix:
    at: tuple[_Chain, int]  # (chain, keyframe index)
    pose: np.ndarray  # 4 x 4, the keyframe's pose in the map
    covariance: np.ndarray  # 6 x 6, gtsam's right-perturbed tangent
    scale: float = 0.0
    factor: int = -1

    @property
    def key(self) -> int:
        return self.at[0].key(self.at[1])


class PoseGraph:
    """Body keyframes X_i = T_world_body_i from odometry, optimised with loop closures and fixes (iSAM2).

    One chain of keyframes per robot or session (`chain`, "" for a single robot): the first chain to give
    odometry anchors the map frame at its first pose; a later chain starts free (a weak prior,
    `GraphSettings.free_start_sigma`) until closures between the chains (inter-session, inter-robot) place it.
    Every add_* method returns "" when it took its input, else why not (also counted in `counts.refused`):
    nothing given to it raises, except a programming error."""

    def __init__(self, settings: GraphSettings | None = None):
        self.settings = settings or GraphSettings()
        params = gtsam.ISAM2Params()
        # robust weights are recomputed at relinearisation: every update while a kernel is annealing (update()),
        # every 10th otherwise (iSAM2's default)
        params.setFactorization("QR")  # Cholesky called free or weakly held chains indeterminate (1 mm floors beside 10 m)
        self.isam = gtsam.ISAM2(params)
        self._new_closures: list[tuple[int, _Closure | _Fix]] = []  # (position in self._factors, closure or fix)
        self.counts = GraphCounts()
        self._chains: dict[str, _Chain] = {}
        self._closures: list[_Closure] = []  # waiting for support, or able to support a new one, or annealing
        self._in_graph: list[_Closure] = []  # the closures in the graph, in the order they entered
        self._fixes: list[_Fix] = []
        self._waiting: list[tuple] = []  # (method, args, (stamp, chain) needed) of closures and fixes ahead of odometry
        self._factors, self._values = gtsam.NonlinearFactorGraph(), gtsam.Values()
        self._estimate_cache: gtsam.Values | None = gtsam.Values()  # every variable's estimate, None: stale

    def __len__(self) -> int:
        return sum(len(c.stamps) for c in self._chains.values())

    def chains(self) -> list[str]:
        return list(self._chains)

    def _chain(self, name: str, create: bool = False) -> _Chain | None:
        if name not in self._chains and create:
            self._chains[name] = _Chain(name, len(self._chains) * CHAIN_KEYS)
        return self._chains.get(name)

    # ---- odometry -----------------------------------------------------------------------------
    def add_odometry(self, stamp_ns: int, pose, covariance: np.ndarray | None = None, chain: str = "") -> str:
        """An odometry pose (x y z qx qy qz qw of the body in the odometry frame) and its pose covariance
        (6 x 6, geometry_msgs order; None or zeros: the drift model) of a chain (robot, session). Becomes a
        keyframe when it is far enough from the last one."""
        self.counts.odometry += 1
        try:
            pose = np.asarray(pose, np.float64).reshape(7)
            matrix = pose_matrix(pose)
        except (ValueError, IndexError) as exc:
            return self.counts.refuse(f"unusable odometry pose: {exc}", "bad odometry")
        if (not np.isfinite(pose).all() or not np.isfinite(matrix).all()
                or abs(np.linalg.norm(pose[3:]) - 1.0) > 0.05):
            return self.counts.refuse("odometry pose is not finite or its quaternion is not a rotation", "bad odometry")
        covariance = self._odometry_covariance_of(covariance)
        c = self._chain(chain, create=True)
        if c.last is not None:
            last_stamp, last, _ = c.last
            if stamp_ns <= last_stamp:
                return self.counts.refuse(f"odometry stamp {stamp_ns} is not after the last one's {last_stamp}",
                                          "odometry out of order")
            speed = np.linalg.norm(matrix[:3, 3] - last[:3, 3]) / ((stamp_ns - last_stamp) * 1e-9)
            if speed > self.settings.max_speed_mps:
                return self._jump(c, stamp_ns, matrix, covariance, speed)
        c.jumped.clear()
        c.last = (int(stamp_ns), matrix, covariance)
        if not c.stamps or self._is_keyframe(c, stamp_ns, matrix):
            self._add_keyframe(c, stamp_ns, matrix, covariance)
        self._retry_waiting()
        return ""

    def _wait(self, method, args: tuple, *needs: tuple[int, str]) -> str | None:
        """None when the odometry covers every (stamp, chain) in needs; "" after queueing the call when one is
        ahead of its chain's odometry (or its chain has none yet) by at most wait_s of the newest odometry;
        the refusal when it is further ahead. Queued calls are retried as odometry comes (_retry_waiting)."""
        now = max((c.last[0] for c in self._chains.values() if c.last is not None), default=None)
        ahead = [(stamp, chain) for stamp, chain in needs
                 if (c := self._chains.get(chain)) is None or c.last is None or stamp > c.last[0]]
        if not ahead:
            return None
        stamp = max(s for s, _ in ahead)
        if now is not None and stamp > now + self.settings.wait_s * 1e9:
            what = "closure" if method == self.add_loop else "fix"
            return self.counts.refuse(f"the {what} is stamped {(stamp - now) * 1e-9:.2f} s after the newest odometry "
                                      f"(from the future; wait_s {self.settings.wait_s:g})", f"{what} from the future")
        self._waiting.append((method, args, needs))
        if len(self._waiting) > self.settings.max_waiting:
            self._waiting.pop(0)
            self.counts.refuse("too many closures and fixes waiting for odometry", "waited too long")
        return ""

    def _retry_waiting(self) -> None:
        """Give the queued closures and fixes whose odometry has come (or waited longer than wait_s) their turn."""
        if not self._waiting:
            return
        now = max(c.last[0] for c in self._chains.values() if c.last is not None)
        waiting, self._waiting = self._waiting, []
        for method, args, needs in waiting:
            covered = all((c := self._chains.get(chain)) is not None and c.last is not None and stamp <= c.last[0]
                          for stamp, chain in needs)
            if covered:
                method(*args)
            elif now > max(s for s, _ in needs) + self.settings.wait_s * 1e9:
                missing = [chain for stamp, chain in needs if chain not in self._chains]
                self.counts.refuse(f"no odometry of {missing[0]!r} came" if missing else
                                   "its odometry did not come within wait_s", "waited too long")
            else:
                self._waiting.append((method, args, needs))

    def _jump(self, c: _Chain, stamp_ns: int, matrix: np.ndarray, covariance, speed: float) -> str:
        """An odometry pose too far from the last: refused, unless the last few agree (then a reset)."""
        previous = c.jumped[-1] if c.jumped else None
        agrees = previous is not None and (np.linalg.norm(matrix[:3, 3] - previous[1][:3, 3])
                                           / max((stamp_ns - previous[0]) * 1e-9, 1e-9)) <= self.settings.max_speed_mps
        c.jumped = (c.jumped if agrees else []) + [(int(stamp_ns), matrix)]
        if len(c.jumped) < max(self.settings.jump_reset_after, 1):
            return self.counts.refuse(f"odometry jumped ({speed:.1f} m/s > max_speed_mps "
                                      f"{self.settings.max_speed_mps:g})", "odometry jumped")
        c.jumped = []  # the odometry was reset: go on from here through a loose factor
        c.last = (int(stamp_ns), matrix, covariance)
        self.counts.resets += 1
        self._add_keyframe(c, stamp_ns, matrix, covariance, loose=True)
        return ""

    def _is_keyframe(self, c: _Chain, stamp_ns: int, matrix: np.ndarray) -> bool:
        s = self.settings
        step = np.linalg.inv(c.odometry[-1]) @ matrix
        angle = np.degrees(np.arccos(np.clip((np.trace(step[:3, :3]) - 1) / 2, -1.0, 1.0)))
        return (np.linalg.norm(step[:3, 3]) >= s.keyframe_distance_m or angle >= s.keyframe_rotation_deg
                or (stamp_ns - c.stamps[-1]) * 1e-9 >= s.keyframe_interval_s)

    def _add_keyframe(self, c: _Chain, stamp_ns: int, matrix: np.ndarray, covariance, loose: bool = False) -> None:
        key = c.key(len(c.stamps))
        if not c.stamps:
            first = c.base == 0 and self.settings.anchor == "first_pose"  # the map frame: the first chain's start
            s = self.settings
            noise = (gtsam.noiseModel.Isotropic.Sigma(6, s.first_pose_sigma) if first else
                     gtsam.noiseModel.Diagonal.Sigmas(np.array([s.free_start_rotation_sigma] * 3 + [s.free_start_sigma] * 3)))
            self._factors.add(gtsam.PriorFactorPose3(key, gtsam.Pose3(matrix), noise))
            self._values.insert(key, gtsam.Pose3(matrix))
            travelled = 0.0
        else:
            increment = np.linalg.inv(c.odometry[-1]) @ matrix
            if loose:  # after a reset the odometry frame moved, not the robot: an unknown step near standstill
                increment = np.eye(4)
                increment_covariance = np.diag([1.0 ** 2] * 3 + [10.0 ** 2] * 3)
            else:
                increment_covariance = self._increment_covariance(increment, c.covariance[-1], covariance)
            self._factors.add(gtsam.BetweenFactorPose3(key - 1, key, gtsam.Pose3(increment),
                                                       gtsam.noiseModel.Gaussian.Covariance(increment_covariance)))
            self._values.insert(key, self._pose(key - 1).compose(gtsam.Pose3(increment)))
            travelled = c.travelled[-1] + (0.0 if loose else float(np.linalg.norm(increment[:3, 3])))
        c.stamps.append(int(stamp_ns))
        c.odometry.append(matrix)
        c.covariance.append(covariance)
        c.travelled.append(travelled)
        self.counts.keyframes += 1

    # ---- closures and fixes -------------------------------------------------------------------
    def add_loop(self, query_stamp_ns: int, match_stamp_ns: int, relative_pose, covariance,
                 camera_in_body: np.ndarray | None = None, scale_known: bool = True, query_chain: str = "",
                 match_chain: str | None = None) -> str:
        """A LoopClosure (relative_pose: T_query_match as 4 x 4 or x y z qx qy qz qw in the query camera's
        optical frame; covariance 6 x 6 as published; camera_in_body: T_body_camera, identity when None)
        between a keyframe of query_chain and one of match_chain (None: the same chain; another: an
        inter-session or inter-robot closure). It enters the graph once supported (GraphSettings.support);
        returns "" when taken (in the graph or waiting), else why it was refused."""
        if not scale_known and self.settings.direction_only == "skip":
            return self.counts.refuse("direction-only closure (scale unknown) skipped", "direction-only")
        match_chain = query_chain if match_chain is None else match_chain
        args = (query_stamp_ns, match_stamp_ns, relative_pose, covariance, camera_in_body, scale_known, query_chain,
                match_chain)
        wait = self._wait(self.add_loop, args, (query_stamp_ns, query_chain), (match_stamp_ns, match_chain))
        if wait is not None:
            return wait
        query, why = self._keyframe(query_stamp_ns, "query", query_chain)
        match, why_match = self._keyframe(match_stamp_ns, "match", match_chain)
        if why or why_match:
            why = why or why_match
            return self.counts.refuse(why, "closure from the future" if "future" in why else
                                      "closure without keyframe" if "yet" in why else "closure stamp offset")
        if query == match:
            return self.counts.refuse("query and match are the same keyframe")
        try:
            relative = np.asarray(relative_pose, np.float64)
            relative = relative if relative.shape == (4, 4) else pose_matrix(relative)
            covariance = np.asarray(covariance, np.float64).reshape(6, 6)
            if not np.isfinite(covariance).all() or np.linalg.eigvalsh((covariance + covariance.T) / 2).min() <= 0:
                raise ValueError("its covariance is not finite and positive definite")
            body, body_covariance = body_relative(relative, covariance,
                                                  np.eye(4) if camera_in_body is None else camera_in_body)
            body = (self._at_keyframe(*query, query_stamp_ns) @ body
                    @ np.linalg.inv(self._at_keyframe(*match, match_stamp_ns)))
        except (ValueError, np.linalg.LinAlgError) as exc:
            return self.counts.refuse(f"unusable closure: {exc}", "unusable closure")
        closure = _Closure(query, match, body, body_covariance)
        partners = [c for c in self._closures if self._agree(closure, c)]
        self._closures.append(closure)
        self._forget_old_closures(closure)
        if len(partners) >= self.settings.support:
            for c in [closure, *partners]:
                if not c.added:
                    self._add_closure(c)
            self.update()
        self.counts.waiting = sum(not c.added for c in self._closures)
        return ""

    def add_fix(self, stamp_ns: int, pose, covariance, camera_in_body: np.ndarray | None = None,
                chain: str = "") -> str:
        """A localised pose in the map frame (vpr/pose; covariance 6 x 6 over the world position and rotation
        about the world axes) as a prior on the chain's nearest keyframe: the body's pose, or the camera's when
        camera_in_body (T_body_camera) is given (vpr/pose is the camera's). Returns "" or why it was refused."""
        wait = self._wait(self.add_fix, (stamp_ns, pose, covariance, camera_in_body, chain), (stamp_ns, chain))
        if wait is not None:
            return wait
        at, why = self._keyframe(stamp_ns, "fix", chain)
        if why:
            return self.counts.refuse(why, "fix from the future" if "future" in why else "fix without keyframe")
        try:
            covariance = np.asarray(covariance, np.float64).reshape(6, 6)
            if not np.isfinite(covariance).all() or np.linalg.eigvalsh((covariance + covariance.T) / 2).min() <= 0:
                raise ValueError("its covariance is not finite and positive definite")
            if camera_in_body is None:
                pose = pose_matrix(pose)
            else:
                pose, covariance = body_fix(pose, covariance, camera_in_body)
            if not np.isfinite(pose).all():
                raise ValueError("not finite")
            pose = pose @ np.linalg.inv(self._at_keyframe(*at, stamp_ns))  # the pose of the keyframe itself
            fix = _Fix(at, pose, world_covariance_to_right(pose, covariance))
            gtsam.noiseModel.Gaussian.Covariance(fix.covariance)  # raises on a covariance it cannot factor
        except (ValueError, IndexError, np.linalg.LinAlgError, RuntimeError) as exc:
            return self.counts.refuse(f"unusable fix: {exc}", "unusable fix")
        s, (chain, index) = self.settings, at
        error = gtsam.Pose3.Logmap(gtsam.Pose3(fix.pose).inverse().compose(self._pose(fix.key)))
        whitened = float(np.sqrt(error @ np.linalg.solve(fix.covariance, error)))
        anchored = any(f.at[0] is chain and abs(chain.travelled[f.at[1]] - chain.travelled[index]) <= s.consistency_window_m
                       for f in self._fixes[-50:])
        # as for closures: the first fix after a stretch without one meets the odometry's whole drift
        fix.scale = s.kernel_sigmas if anchored else max(s.kernel_sigmas, s.kernel_entry * whitened)
        self._add_fix_factor(fix)
        self._fixes.append(fix)
        self.counts.fixes += 1
        self.update()
        return ""

    def _add_fix_factor(self, fix: _Fix) -> None:
        noise = self._robust(gtsam.noiseModel.Gaussian.Covariance(fix.covariance), fix.scale)
        self._new_closures.append((self._factors.size(), fix))
        self._factors.add(gtsam.PriorFactorPose3(fix.key, gtsam.Pose3(fix.pose), noise))

    def update(self) -> None:
        """Optimise what was added since the last update (iSAM2), one annealing step of the closures' kernels
        with it."""
        remove = self._anneal() if self._factors.size() or self._values.size() else []
        if self._factors.size() == 0 and self._values.size() == 0:
            return
        result = self.isam.update(self._factors, self._values, remove, None, None, None, bool(remove))
        indices = list(result.getNewFactorsIndices())
        for position, closure in self._new_closures:
            closure.factor = indices[position]
        self._new_closures = []
        self._factors, self._values = gtsam.NonlinearFactorGraph(), gtsam.Values()
        self._estimate_cache = None  # computed when asked for (all of it costs O(keyframes))

    def _anneal(self) -> list[int]:
        """Closures in the graph whose kernel is still wider than kernel_sigmas get it narrowed (their factor
        replaced); returns the factor indices to remove."""
        s, remove = self.settings, []
        if s.kernel == "none":
            return remove
        for closure in self._closures:
            if closure.factor >= 0 and closure.scale > s.kernel_sigmas:
                remove.append(closure.factor)
                closure.scale = max(s.kernel_sigmas, closure.scale * s.kernel_anneal)
                self._add_factor(closure)
        for fix in self._fixes[-50:]:
            if fix.factor >= 0 and fix.scale > s.kernel_sigmas:
                remove.append(fix.factor)
                fix.scale = max(s.kernel_sigmas, fix.scale * s.kernel_anneal)
                self._add_fix_factor(fix)
        return remove

    # ---- outputs ------------------------------------------------------------------------------
    def stamps(self, chain: str = "") -> np.ndarray:
        c = self._chain(chain)
        return np.asarray(c.stamps if c else [], np.int64)

    def trajectory(self, chain: str = "") -> np.ndarray:
        """N x 7 (x y z qx qy qz qw): the chain's keyframes' optimised poses in the map frame."""
        self.update()
        c = self._chain(chain)
        keys = [c.key(i) for i in range(len(c.stamps))] if c else []
        return np.array([_pose7(self._estimate.atPose3(key).matrix()) for key in keys]).reshape(-1, 7)

    def correction(self, chain: str = "") -> np.ndarray:
        """4 x 4 T_map_odom of a chain at its newest keyframe: where the optimisation puts its odometry frame
        (identity before its first keyframe)."""
        c = self._chain(chain)
        if c is None or not c.stamps:
            return np.eye(4)
        self.update()
        newest = len(c.stamps) - 1
        return self._estimate.atPose3(c.key(newest)).matrix() @ np.linalg.inv(c.odometry[newest])

    def closure_edges_by_stamp(self) -> list[tuple[int, int, float]]:
        """(query keyframe stamp, match keyframe stamp, whitened error) of every closure in the graph: its error
        against the optimised poses in its own standard deviations (above 3 x kernel_sigmas the kernel gives it
        less than a tenth of its weight: the graph disagrees with it)."""
        self.update()
        out = []
        for closure in self._in_graph:
            (qc, qi), (mc, mi) = closure.query, closure.match
            out.append((qc.stamps[qi], mc.stamps[mi], self._whitened_error(closure, self._estimate)))
        return out

    def downweighted(self) -> int:
        """Closures in the graph whose error is above 3 x kernel_sigmas (the kernel all but ignores them)."""
        if self.settings.kernel == "none":
            return 0
        return sum(error > 3 * self.settings.kernel_sigmas for _, _, error in self.closure_edges_by_stamp())

    def _whitened_error(self, closure: "_Closure", values) -> float:
        query, match = closure.keys
        at = (lambda key: values.atPose3(key)) if values is not None else self._pose
        predicted = at(query).inverse().compose(at(match))
        error = gtsam.Pose3.Logmap(gtsam.Pose3(closure.body).inverse().compose(predicted))
        return float(np.sqrt(error @ np.linalg.solve(closure.covariance, error)))

    # ---- helpers ------------------------------------------------------------------------------
    def _add_closure(self, closure: _Closure) -> None:
        """Into the graph, its kernel wide enough for its error against the graph as it stands."""
        whitened = self._whitened_error(closure, None)
        s, (chain, index) = self.settings, closure.query
        anchored = any(c.query[0] is chain and c.match[0] is closure.match[0]
                       and abs(chain.travelled[index] - chain.travelled[c.query[1]]) <= s.consistency_window_m
                       for c in self._in_graph[-50:])
        # the first closures of a revisit meet the graph's whole drift: they enter with a wide kernel that then
        # narrows; later ones meet a graph those corrected, and a tight kernel
        closure.scale = s.kernel_sigmas if anchored else max(s.kernel_sigmas, s.kernel_entry * whitened)
        self._add_factor(closure)
        closure.added = True
        self._in_graph.append(closure)
        self.counts.closures += 1

    def _add_factor(self, closure: _Closure) -> None:
        noise = self._robust(gtsam.noiseModel.Gaussian.Covariance(closure.covariance), closure.scale)
        self._new_closures.append((self._factors.size(), closure))
        self._factors.add(gtsam.BetweenFactorPose3(*closure.keys, gtsam.Pose3(closure.body), noise))

    def _agree(self, a: _Closure, b: _Closure) -> bool:
        """Whether two closures with nearby queries describe the same loop: query_a -> query_b (odometry),
        query_b -> match_b (b), match_b -> match_a (odometry) composes to a's own closure."""
        if a.query[0] is not b.query[0] or a.match[0] is not b.match[0]:
            return False
        s, (qc, qa), (mc, ma), qb, mb = self.settings, a.query, a.match, b.query[1], b.match[1]
        span_q, span_m = abs(qc.travelled[qa] - qc.travelled[qb]), abs(mc.travelled[ma] - mc.travelled[mb])
        if span_q > s.consistency_window_m or span_q + span_m > 2 * s.consistency_window_m:
            return False
        predicted = ((np.linalg.inv(qc.odometry[qa]) @ qc.odometry[qb]) @ b.body
                     @ (np.linalg.inv(mc.odometry[mb]) @ mc.odometry[ma]))
        error = gtsam.Pose3.Logmap(gtsam.Pose3(a.body).inverse().compose(gtsam.Pose3(predicted)))
        span = span_q + span_m
        drift = np.diag([(0.1 * s.consistency_sigma_per_m * span + 1e-3) ** 2] * 3
                        + [(s.consistency_sigma_per_m * span + 0.02) ** 2] * 3)
        innovation = a.covariance + b.covariance + drift
        return float(error @ np.linalg.solve(innovation, error)) <= s.consistency_chi2

    def _forget_old_closures(self, newest: _Closure) -> None:
        """Keep only closures that can still support a new one (their queries within the window of travel of
        the newest one's, on its chain) or are still annealing."""
        chain, index = newest.query
        horizon = chain.travelled[index] - self.settings.consistency_window_m
        self._closures = [c for c in self._closures if c.query[0] is not chain or c.query[0].travelled[c.query[1]] >= horizon
                          or (c.added and c.scale > self.settings.kernel_sigmas)]  # still annealing

    def _pose(self, key: int) -> gtsam.Pose3:
        if self._values.exists(key):
            return self._values.atPose3(key)
        if self._estimate_cache is not None:
            return self._estimate_cache.atPose3(key)
        return self.isam.calculateEstimatePose3(key)  # one variable: cheap

    @property
    def _estimate(self) -> gtsam.Values:
        if self._estimate_cache is None:
            self._estimate_cache = self.isam.calculateEstimate()
        return self._estimate_cache

    def _keyframe(self, stamp_ns: int, what: str, chain: str) -> tuple[tuple[_Chain, int] | None, str]:
        """The chain's keyframe nearest a stamp, or why there is none (keyframing the newest odometry when the
        stamp lies after the newest keyframe)."""
        c = self._chain(chain)
        if c is None or not c.stamps:
            return None, "no odometry keyframe yet" + (f" of {chain!r}" if chain else "")
        newest = c.last[0]
        if stamp_ns > newest + self.settings.max_stamp_offset_s * 1e9:
            return None, (f"the {what} stamp is {(stamp_ns - newest) * 1e-9:.2f} s after the newest odometry "
                          "(from the future)")
        if stamp_ns > c.stamps[-1] and newest > c.stamps[-1]:
            self._add_keyframe(c, *c.last)  # the odometry since the newest keyframe
        at = bisect.bisect_left(c.stamps, stamp_ns)
        nearest = min((i for i in (at - 1, at) if 0 <= i < len(c.stamps)), key=lambda i: abs(c.stamps[i] - stamp_ns))
        offset = abs(c.stamps[nearest] - stamp_ns) * 1e-9
        if offset > self.settings.max_stamp_offset_s:
            return None, (f"the {what} stamp is {offset:.2f} s away from every keyframe (max_stamp_offset_s "
                          f"{self.settings.max_stamp_offset_s:g})")
        return (c, nearest), ""

    @staticmethod
    def _at_keyframe(c: _Chain, index: int, stamp_ns: int) -> np.ndarray:
        """T from the keyframe's body to the body at stamp_ns, along the odometry (interpolated between the
        keyframes around the stamp): a closure or fix between stamps is moved onto the keyframes."""
        if stamp_ns == c.stamps[index]:
            return np.eye(4)
        at = bisect.bisect_left(c.stamps, stamp_ns)
        if at == 0 or at >= len(c.stamps):
            return np.eye(4)
        a, b = at - 1, at
        w = (stamp_ns - c.stamps[a]) / (c.stamps[b] - c.stamps[a])
        step = gtsam.Pose3(np.linalg.inv(c.odometry[a]) @ c.odometry[b])
        between = c.odometry[a] @ gtsam.Pose3.Expmap(w * gtsam.Pose3.Logmap(step)).matrix()
        return np.linalg.inv(c.odometry[index]) @ between

    def _odometry_covariance_of(self, covariance) -> np.ndarray | None:
        if covariance is None:
            return None
        covariance = np.asarray(covariance, np.float64).reshape(6, 6)
        if not np.isfinite(covariance).all() or not covariance.any():
            return None
        return covariance[np.ix_(ROS_TO_GTSAM, ROS_TO_GTSAM)]

    def _increment_covariance(self, increment: np.ndarray, before, after) -> np.ndarray:
        """Covariance (gtsam order) of an odometry increment: what the messages' accumulated covariance grew by
        (its diagonal, at least the floor), else the drift model."""
        s, distance = self.settings, float(np.linalg.norm(increment[:3, 3]))
        floor = s.odometry_sigma_floor ** 2
        if before is not None and after is not None:
            grown = np.maximum(np.diag(after) - np.diag(before), floor)
            return np.diag(grown)
        rotation = max(s.odometry_yaw_sigma_per_m * distance, s.odometry_sigma_floor)
        translation = max(s.odometry_sigma_per_m * distance, s.odometry_sigma_floor)
        return np.diag([rotation ** 2] * 3 + [translation ** 2] * 3)

    def _robust(self, noise, scale: float | None = None):
        k = scale or self.settings.kernel_sigmas
        if self.settings.kernel == "cauchy":
            return gtsam.noiseModel.Robust.Create(gtsam.noiseModel.mEstimator.Cauchy.Create(k), noise)
        if self.settings.kernel == "huber":
            return gtsam.noiseModel.Robust.Create(gtsam.noiseModel.mEstimator.Huber.Create(k), noise)
        return noise


def _pose7(matrix: np.ndarray) -> np.ndarray:
    return pose7(matrix[:3, :3], matrix[:3, 3])
