"""ament_python package that also installs with pip (``pip install -e .``)."""

import os

from setuptools import find_packages, setup

PACKAGE = "v2x_vlm_ros"

#: ROS 2 Jazzy from the Python package index (CPython 3.11, Linux x86_64), exact versions:
#: `pip install -e ".[ros]"`. scripts/bootstrap.sh installs the whole pinned closure plus
#: launch, launch_testing and ros2cli from ../shared/ros2-jazzy when that kit is there.
ROS_JAZZY = [
    "ros-jazzy-rclpy==7.1.6",
    "ros-jazzy-rmw-fastrtps-cpp==8.4.3",
    "ros-jazzy-ament-index-python==1.8.1",
    "ros-jazzy-std-msgs==5.3.6",
    "ros-jazzy-geometry-msgs==5.3.6",
    "ros-jazzy-sensor-msgs==5.3.6",
    "ros-jazzy-nav-msgs==5.3.6",
    "ros-jazzy-visualization-msgs==5.3.6",
    "ros-jazzy-diagnostic-msgs==5.3.6",
    "ros-jazzy-rcl-interfaces==2.0.3",
    "ros-jazzy-rosgraph-msgs==2.0.3",
    "ros-jazzy-lifecycle-msgs==2.0.3",
]


def tree(folder):
    """(install dir, files) pairs for every file under ``folder``, keeping sub-folders."""
    out = []
    for dirpath, _, filenames in os.walk(folder):
        files = [os.path.join(dirpath, f) for f in filenames]
        if files:
            out.append((os.path.join("share", PACKAGE, dirpath), files))
    return out


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    # UniV2X's split and label-update files, used by the univ2x evaluation protocol
    package_data={f"{PACKAGE}.data": ["univ2x/*.json.gz", "univ2x/SOURCES.md"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *tree("launch"),
        *tree("config"),
        *tree("models"),
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "PyYAML>=6",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        # torch: install the CPU build first (scripts/bootstrap.sh pins torch==2.13.0);
        # an unpinned torch pulls gigabytes of CUDA packages
        "torch>=2.4",
        "transformers>=5.0,<6",
        "safetensors>=0.4",
        "tokenizers>=0.20",
        "Pillow>=10",
        "rosbags>=0.10",
        "mcap>=1.1",
        "mcap-ros2-support>=0.5",
    ],
    extras_require={
        # pytest < 9: launch_testing's pytest plugin breaks collection under pytest 9
        "test": ["pytest>=7,<9", "hypothesis>=6", "flake8>=6", "colcon-common-extensions>=0.3"],
        "ros": ROS_JAZZY,
    },
    zip_safe=True,
    maintainer="v2x_vlm_ros maintainers",
    maintainer_email="maintainers@v2x-vlm-ros.org",
    description="V2X-VLM cooperative end-to-end planner for ROS 2",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "v2x-vlm = v2x_vlm_ros.cli:main",
            # ROS 2 nodes (need rclpy): ros2 run v2x_vlm_ros vehicle_node (vehicle_lifecycle_node: managed)
            # (ros.entry handles SIGINT / SIGTERM before importing anything heavy)
            "vehicle_node = v2x_vlm_ros.ros.entry:vehicle_node",
            "vehicle_lifecycle_node = v2x_vlm_ros.ros.entry:vehicle_lifecycle_node",
            "roadside_node = v2x_vlm_ros.ros.entry:roadside_node",
        ],
    },
)
