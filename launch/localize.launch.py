"""Start vpr_localizer: `ros2 launch vpr_ros localize.launch.py map_path:=/path/to/map`.

Parameters come from `params_file` (default: the installed config/localize.yaml); the launch
arguments below override their namesakes in it. Every other parameter is set in the params file.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

# launch argument -> (default, description); each overrides the parameter of the same name
OVERRIDES = {
    "mode": ("localize", "localize (prebuilt map) or slam (online loop closure)"),
    "map_path": ("", "map directory built with vpr_build_map (required in localize mode)"),
    "image_topic": ("/camera/image_raw", "camera image topic"),
    "image_transport": ("raw", "raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage)"),
    "rerank": ("", "re-ranking matcher, e.g. xfeat-lighterglue (empty: global retrieval only)"),
}


def generate_launch_description() -> LaunchDescription:
    params_file = DeclareLaunchArgument(
        "params_file", default_value=PathJoinSubstitution([FindPackageShare("vpr_ros"), "config", "localize.yaml"]),
        description="ROS 2 parameter file for vpr_localizer")
    arguments = [DeclareLaunchArgument(name, default_value=default, description=description)
                 for name, (default, description) in OVERRIDES.items()]
    node = Node(
        package="vpr_ros", executable="vpr_localizer", name="vpr_localizer", output="screen",
        parameters=[LaunchConfiguration("params_file"), {name: LaunchConfiguration(name) for name in OVERRIDES}])
    return LaunchDescription([params_file, *arguments, node])
