"""The node's outgoing messages, built from the core's finished results (core/pipeline/results.py): place
hypotheses, loop closures, the localized pose, RViz markers and diagnostics. Nothing is computed here: the
constraint and the pose come as the core answered them. No node state: each function takes what it needs."""

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Pose, PoseWithCovarianceStamped, Quaternion
from std_msgs.msg import ColorRGBA, Float64MultiArray, Header
from visualization_msgs.msg import Marker, MarkerArray

from vpr_ros.core.pipeline.results import FrameResult
from vpr_ros.ros.convert import ns_to_stamp
from vpr_ros.ros.health import ERROR, OK, WARN

NAN = float("nan")
LEVELS = {OK: DiagnosticStatus.OK, WARN: DiagnosticStatus.WARN, ERROR: DiagnosticStatus.ERROR}
MARKER_SIZE_M = 0.5


def loop_methods(loop_closure_type) -> dict[str, int]:
    """LoopConstraint's method names -> LoopClosure's METHOD_* constants."""
    return {"global_descriptor": loop_closure_type.METHOD_GLOBAL_DESCRIPTOR,
            "fundamental": loop_closure_type.METHOD_FUNDAMENTAL,
            "homography": loop_closure_type.METHOD_HOMOGRAPHY, "essential": loop_closure_type.METHOD_ESSENTIAL,
            "pnp_depth": loop_closure_type.METHOD_PNP_DEPTH}


def pose_msg(pose7) -> Pose:
    """(x, y, z, qx, qy, qz, qw) -> geometry_msgs/Pose."""
    p = Pose()
    p.position.x, p.position.y, p.position.z = (float(v) for v in pose7[:3])
    p.orientation = Quaternion(x=float(pose7[3]), y=float(pose7[4]), z=float(pose7[5]), w=float(pose7[6]))
    return p


def hypotheses_msg(msgs, header, result: FrameResult, vpr_map, map_frame: str, backend: str, robot_id: str = ""):
    """vpr_ros_interfaces/PlaceHypotheses of one processed frame."""
    out = msgs.PlaceHypotheses()
    out.header = header
    out.query_id, out.robot_id, out.search_scope = result.frame_id, robot_id, result.search_scope
    if vpr_map is not None:
        out.map_name, out.map_size = vpr_map.name, len(vpr_map)
        out.searched_frames = len(vpr_map) if result.search_frames is None else result.search_frames
        out.descriptor = vpr_map.descriptor.preset
    out.map_frame_id, out.backend = map_frame, backend
    out.query_uncertainty = result.query_uncertainty
    for place in result.places:
        h, v = place.hypothesis, place.verification
        item = msgs.PlaceHypothesis()
        item.map_key, item.map_stamp = h.key, ns_to_stamp(h.stamp_ns)
        item.session_id, item.robot_id = h.session, h.robot
        item.has_pose = h.pose is not None
        if h.pose is not None:
            item.map_pose = pose_msg(h.pose)
        item.has_gps = h.gps is not None
        item.latitude, item.longitude, item.altitude = h.gps if h.gps is not None else (NAN, NAN, NAN)
        item.rank, item.global_rank, item.global_similarity = place.rank, h.rank, h.similarity
        item.sequence_score, item.sequence_length = place.sequence_score, place.sequence_length
        item.rerank_score, item.verified, item.match_count = place.rerank_score, place.verified, place.match_count
        item.inlier_count = v.inlier_count if v is not None else 0
        item.inlier_ratio = v.inlier_ratio if v is not None else NAN
        item.verification_note = "" if place.verified else place.note
        item.query_uncertainty = result.query_uncertainty
        item.map_uncertainty, item.pair_likelihood = place.map_uncertainty, place.pair_likelihood
        item.probability = place.probability
        out.hypotheses.append(item)
    out.timing = [msgs.StageTiming(stage=stage, ms=float(ms)) for stage, ms in result.timings_ms.items()]
    return out


def loop_msg(msgs, header, result: FrameResult, vpr_map, robot_id: str = "", session_id: str = ""):
    """vpr_ros_interfaces/LoopClosure of the accepted hypothesis and its constraint (result.constraint)."""
    place, constraint = result.loop, result.constraint
    out = msgs.LoopClosure()
    # relative_pose is T_query_match in the query camera's optical frame: the image's frame names it, the map
    # its own camera's (a slam map's frames came from the query camera)
    out.header = Header(stamp=header.stamp, frame_id=header.frame_id)
    camera = vpr_map.camera if vpr_map is not None else None
    out.match_frame_id = camera.frame_id if camera is not None and camera.frame_id else header.frame_id
    out.query_key = result.map_key if result.map_key is not None else result.frame_id
    out.query_stamp = header.stamp
    out.match_key, out.match_stamp = place.hypothesis.key, ns_to_stamp(place.hypothesis.stamp_ns)
    out.map_name = vpr_map.name if vpr_map is not None else ""
    out.robot_id, out.session_id = robot_id, session_id
    out.match_session_id, out.match_robot_id = place.hypothesis.session, place.hypothesis.robot
    out.probability, out.global_similarity = place.probability, place.hypothesis.similarity
    out.inlier_count = constraint.inlier_count
    out.method = loop_methods(msgs.LoopClosure).get(constraint.method, msgs.LoopClosure.METHOD_GLOBAL_DESCRIPTOR)
    out.method_detail = constraint.detail
    x, y, z, w = (float(v) for v in constraint.rotation_xyzw)
    out.relative_pose.orientation = Quaternion(x=x, y=y, z=z, w=w)
    out.relative_pose.position = Point(x=float(constraint.translation[0]), y=float(constraint.translation[1]),
                                       z=float(constraint.translation[2]))
    out.translation_scale_known, out.scale_note = constraint.scale_known, constraint.scale_note
    out.covariance = constraint.covariance.ravel().tolist()
    return out


def localized_pose_msg(header, result: FrameResult, map_frame: str) -> PoseWithCovarianceStamped:
    """The localised pose (result.localized): the query camera's metric pose in the map when the loop closure
    is metric and the map knows its camera's mounting, else the accepted hypothesis's map pose."""
    pose = PoseWithCovarianceStamped()
    pose.header.stamp, pose.header.frame_id = header.stamp, map_frame
    pose.pose.pose = pose_msg(result.localized.pose)
    pose.pose.covariance = result.localized.covariance.ravel().tolist()
    return pose


def frame_messages(msgs, header, result: FrameResult, vpr_map, map_frame: str, backend: str, robot_id: str,
                   session_id: str, topics: set[str], query_pose) -> dict[str, object]:
    """The messages of one processed frame for the `topics` the node publishes, by name: "hypotheses" and
    "loop_closure" (vpr_ros_interfaces, `msgs`), "loop_closure_detection", "pose" (vpr/pose) and "markers"
    (`query_pose`: the query's marker, when its pose is in the map frame); nothing is built for another."""
    out = {}
    if "hypotheses" in topics:
        out["hypotheses"] = hypotheses_msg(msgs, header, result, vpr_map, map_frame, backend, robot_id)
    if result.loop is not None:
        if "loop_closure" in topics:
            out["loop_closure"] = loop_msg(msgs, header, result, vpr_map, robot_id, session_id)
        if "loop_closure_detection" in topics:
            out["loop_closure_detection"] = Float64MultiArray(data=[result.stamp_ns * 1e-9,
                                                                    result.loop.hypothesis.stamp_ns * 1e-9])
        if "pose" in topics and result.localized is not None:
            out["pose"] = localized_pose_msg(header, result, map_frame)
    if "markers" in topics and result.places:
        out["markers"] = markers_msg(header, result, map_frame, query_pose)
    return out


def _sphere(ns: str, marker_id: int, header, pose7, color: ColorRGBA) -> Marker:
    marker = Marker(ns=ns, id=marker_id, type=Marker.SPHERE, action=Marker.ADD)
    marker.header = header
    marker.pose = pose_msg(pose7)
    marker.scale.x = marker.scale.y = marker.scale.z = MARKER_SIZE_M
    marker.color = color
    return marker


def markers_msg(header, result: FrameResult, map_frame: str, query_pose) -> MarkerArray:
    """The best hypothesis (green when accepted, yellow otherwise); when the query's pose is in the map frame,
    the query and a line to its match; and each accepted loop closure as an edge that stays (namespace
    vpr_loop_edges, one id per frame) from the query (its odometry in the map frame, else its metric pose) to
    the matched map frame."""
    markers = MarkerArray()
    best = result.places[0]
    if best.hypothesis.pose is None:
        return markers
    frame_header = Header(stamp=header.stamp, frame_id=map_frame)
    color = ColorRGBA(r=0.1 if result.loop is not None else 1.0, g=0.9, b=0.1, a=0.9)
    match = _sphere("vpr_match", 0, frame_header, best.hypothesis.pose, color)
    markers.markers.append(match)
    if query_pose is not None:
        markers.markers.append(_sphere("vpr_query", 2, frame_header, query_pose,
                                       ColorRGBA(r=0.2, g=0.4, b=1.0, a=0.9)))
        link = Marker(ns="vpr_link", id=1, type=Marker.LINE_LIST, action=Marker.ADD)
        link.header = frame_header
        link.pose.orientation.w = 1.0
        link.scale.x = 0.05
        link.color = color
        link.points = [Point(x=float(query_pose[0]), y=float(query_pose[1]), z=float(query_pose[2])),
                       match.pose.position]
        markers.markers.append(link)
    edge_from = query_pose if query_pose is not None else (
        result.localized.pose if result.localized is not None and result.localized.metric else None)
    if result.loop is not None and result.loop.hypothesis.pose is not None and edge_from is not None:
        # every accepted loop closure stays drawn: one marker per frame id, no lifetime (RViz keeps them)
        edge = Marker(ns="vpr_loop_edges", id=int(result.frame_id), type=Marker.LINE_LIST, action=Marker.ADD)
        edge.header = frame_header
        edge.pose.orientation.w = 1.0
        edge.scale.x = 0.03
        edge.color = ColorRGBA(r=1.0, g=0.3, b=0.8, a=0.8)
        edge.points = [Point(x=float(edge_from[0]), y=float(edge_from[1]), z=float(edge_from[2])),
                       pose_msg(result.loop.hypothesis.pose).position]
        markers.markers.append(edge)
    return markers


def diagnostics_msg(name: str, hardware_id: str, level: str, message: str, values: dict, stamp) -> DiagnosticArray:
    """One DiagnosticStatus (level one of health's OK, WARN, ERROR) with its key-value pairs."""
    status = DiagnosticStatus(name=name, hardware_id=hardware_id, level=LEVELS[level], message=message)
    status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
    out = DiagnosticArray(status=[status])
    out.header.stamp = stamp
    return out
