from glob import glob

from setuptools import find_packages, setup

PACKAGE = "vpr_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml") + glob("config/*.rviz")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="vpr_ros maintainers",
    maintainer_email="maintainers@vpr-ros.dev",
    description="Visual place recognition and loop closure for ROS 2.",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "vpr_doctor = vpr_ros.tools.doctor:main",
            "vpr_demo = vpr_ros.tools.demo:main",
            "vpr_eval = vpr_ros.tools.eval:main",
            "vpr_ros2 = vpr_ros.tools.ros2_cli:main",
            "vpr_build_map = vpr_ros.tools.build_map:main",
            "vpr_merge_maps = vpr_ros.tools.merge_maps:main",
            "vpr_train_uncertainty = vpr_ros.tools.train_uncertainty:main",
            "vpr_localizer = vpr_ros.ros.main:main",
            "vpr_pose_graph = vpr_ros.ros.pose_graph:main",
            "vpr_sim = vpr_ros.tools.sim:main",
            "vpr_export = vpr_ros.tools.export:main",
            "vpr_folder_to_bag = vpr_ros.tools.folder_to_bag:main",
        ],
    },
)
