#!/usr/bin/env bash
# The test command (README quick start, and exactly what .ci/run calls):
# style check, colcon build of the ROS 2 package, every test through colcon test (node tests
# under real rclpy + Fast DDS, launch tests through the colcon-installed package), and the
# test results. ament lint tests (marked "linter") need ament_* packages and are deselected.
# ROS 2 isolation: one random ROS_DOMAIN_ID per run, discovery on this host only, logs in
# a temporary folder. V2X_VLM_REQUIRE_ROS=1 (set by .ci/run): a missing ROS 2 fails the run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bootstrap.sh
if [ "${CI:-}" = true ]; then export V2X_VLM_REQUIRE_ROS=1; fi
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$((RANDOM % 100 + 1))}
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_LOG_DIR=${ROS_LOG_DIR:-$(mktemp -d -t v2x_vlm_roslog.XXXXXX)}
echo "== ROS 2: ROS_DOMAIN_ID=$ROS_DOMAIN_ID, require=${V2X_VLM_REQUIRE_ROS:-0}"

echo "== flake8"
flake8 v2x_vlm_ros test setup.py launch

echo "== colcon build"
ws=.colcon
rm -rf "$ws/build" "$ws/install" "$ws/log"
colcon --log-base "$ws/log" build --paths . --build-base "$ws/build" --install-base "$ws/install"
colcon list --paths .
share="$ws/install/v2x_vlm_ros/share/v2x_vlm_ros"
for f in package.xml launch/v2x_vlm.launch.py launch/replay.launch.py config/v2x_vlm.rviz \
         config/vehicle_node.param.yaml config/roadside_node.param.yaml models; do
  test -e "$share/$f" || { echo "missing share/v2x_vlm_ros/$f"; exit 1; }
done
for exe in vehicle_node vehicle_lifecycle_node roadside_node v2x-vlm; do
  test -x "$ws/install/v2x_vlm_ros/lib/v2x_vlm_ros/$exe" || { echo "missing lib/v2x_vlm_ros/$exe"; exit 1; }
done
test -f "$ws/install/v2x_vlm_ros/share/ament_index/resource_index/packages/v2x_vlm_ros" \
  || { echo "missing ament index marker"; exit 1; }

echo "== colcon test"
colcon --log-base "$ws/log" test --paths . --build-base "$ws/build" --install-base "$ws/install" \
  --event-handlers console_direct+ --pytest-args -m "not linter" -p no:cacheprovider
colcon test-result --test-result-base "$ws/build" --all --verbose
