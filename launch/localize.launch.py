"""Start vpr_localizer: `ros2 launch vpr_ros localize.launch.py params_file:=my.yaml [map_path:=...]`.

The params file (default: the installed config/localize.yaml) is the configuration. A launch argument
overrides its namesake parameter only when given; left out, the file's value holds. `rerank:=off`
turns re-ranking off. `namespace:=robot1` starts it in a namespace (one per robot: its topics and services
move under it, and its robot_id defaults to it; the shipped file's `/**/vpr_localizer` key still applies).
`fastdds_shm:=false` keeps Fast DDS's default transports (see
vpr_ros/ros/launch_args.py, where this logic lives and is tested).
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from vpr_ros.ros.launch_args import OVERRIDES, fastdds_environment, parameter_overrides


def _node(context):
    params_file = LaunchConfiguration("params_file").perform(context)
    given = {name: LaunchConfiguration(name).perform(context) for name in OVERRIDES}
    overrides = parameter_overrides(given)
    profile = PathJoinSubstitution([FindPackageShare("vpr_ros"), "config", "fastdds_shm.xml"]).perform(context)
    env = fastdds_environment(LaunchConfiguration("fastdds_shm").perform(context), dict(os.environ), profile)
    namespace = LaunchConfiguration("namespace").perform(context).strip("/")
    return [Node(package="vpr_ros", executable="vpr_localizer", name="vpr_localizer", output="screen",
                 namespace=namespace or None,
                 parameters=[params_file, overrides] if overrides else [params_file],
                 additional_env=env or None)]


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
        *[DeclareLaunchArgument(name, default_value="", description=description)
          for name, description in OVERRIDES.items()],
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_node)])
