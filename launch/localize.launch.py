"""Start vpr_localizer: `ros2 launch vpr_ros localize.launch.py params_file:=my.yaml [map_path:=...]`.

The params file (default: the installed config/localize.yaml) is the configuration. A launch argument
overrides its namesake parameter only when given; left out, the file's value holds. `rerank:=off`
turns re-ranking off. `namespace:=robot1` starts it in a namespace (one per robot: its topics and services
move under it, and its robot_id defaults to it; the shipped file's `/**/vpr_localizer` key still applies).
`fastdds_shm:=false` keeps Fast DDS's default transports. `pose_graph:=true` also starts the reference
pose-graph back-end vpr_pose_graph (params: `pose_graph_params_file`, default the installed
config/pose_graph.yaml; it takes `odom_topic` when given) in the same namespace (see
vpr_ros/ros/launch_args.py, where this logic lives and is tested). `autostart:=false` leaves the node
unconfigured for a lifecycle manager (Nav2's). `rviz:=true` also starts RViz2 with config/vpr.rviz (or
`rviz_config`); it names the topics without a namespace.
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from vpr_ros.ros.launch_args import (OVERRIDES, fastdds_environment, flag_value, parameter_overrides,
                                     pose_graph_overrides)


def _node(context):
    params_file = LaunchConfiguration("params_file").perform(context)
    given = {name: LaunchConfiguration(name).perform(context) for name in OVERRIDES}
    overrides = parameter_overrides(given)
    profile = PathJoinSubstitution([FindPackageShare("vpr_ros"), "config", "fastdds_shm.xml"]).perform(context)
    env = fastdds_environment(LaunchConfiguration("fastdds_shm").perform(context), dict(os.environ), profile)
    namespace = LaunchConfiguration("namespace").perform(context).strip("/")
    nodes = [Node(package="vpr_ros", executable="vpr_localizer", name="vpr_localizer", output="screen",
                  namespace=namespace or None,
                  parameters=[params_file, overrides] if overrides else [params_file],
                  additional_env=env or None)]
    if flag_value("pose_graph", LaunchConfiguration("pose_graph").perform(context)):
        graph_file = LaunchConfiguration("pose_graph_params_file").perform(context)
        graph_overrides = pose_graph_overrides(given)
        nodes.append(Node(package="vpr_ros", executable="vpr_pose_graph", name="vpr_pose_graph", output="screen",
                          namespace=namespace or None,
                          parameters=[graph_file, graph_overrides] if graph_overrides else [graph_file],
                          additional_env=env or None))
    if flag_value("rviz", LaunchConfiguration("rviz").perform(context)):  # needs a display and rviz2
        nodes.append(Node(package="rviz2", executable="rviz2", name="vpr_rviz", output="screen",
                          arguments=["-d", LaunchConfiguration("rviz_config").perform(context)]))
    return nodes


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument(
            "params_file", default_value=PathJoinSubstitution([FindPackageShare("vpr_ros"), "config", "localize.yaml"]),
            description="ROS 2 parameter file for vpr_localizer"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the node (one per robot sharing a map; empty: none)"),
        DeclareLaunchArgument(
            "fastdds_shm", default_value="true",
            description="Fast DDS with a 32 MB shared-memory segment for images (config/fastdds_shm.xml), unless "
                        "FASTDDS_DEFAULT_PROFILES_FILE is set or another RMW is selected"),
        DeclareLaunchArgument("pose_graph", default_value="false",
                              description="also start vpr_pose_graph, the reference pose-graph back-end"),
        DeclareLaunchArgument(
            "pose_graph_params_file",
            default_value=PathJoinSubstitution([FindPackageShare("vpr_ros"), "config", "pose_graph.yaml"]),
            description="ROS 2 parameter file for vpr_pose_graph"),
        DeclareLaunchArgument("rviz", default_value="false",
                              description="also start RViz2 with rviz_config (camera image, matches, loop-closure "
                                          "edges, vpr/pose, relocalizations, the corrected trajectory)"),
        DeclareLaunchArgument(
            "rviz_config", default_value=PathJoinSubstitution([FindPackageShare("vpr_ros"), "config", "vpr.rviz"]),
            description="RViz2 configuration for rviz:=true"),
        *[DeclareLaunchArgument(name, default_value="", description=description)
          for name, description in OVERRIDES.items()],
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_node)])
