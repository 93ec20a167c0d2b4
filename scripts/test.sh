#!/usr/bin/env bash
# The test command (README quick start, and exactly what .ci/run calls):
# style check, colcon build of the ROS 2 package, every test through colcon test, and the
# test results. ament lint tests (marked "linter") need a ROS 2 install and are deselected.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bootstrap.sh

echo "== flake8"
flake8 v2x_vlm_ros test setup.py

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
for exe in vehicle_node roadside_node v2x-vlm; do
  test -x "$ws/install/v2x_vlm_ros/lib/v2x_vlm_ros/$exe" || { echo "missing lib/v2x_vlm_ros/$exe"; exit 1; }
done
test -f "$ws/install/v2x_vlm_ros/share/ament_index/resource_index/packages/v2x_vlm_ros" \
  || { echo "missing ament index marker"; exit 1; }

echo "== colcon test"
colcon --log-base "$ws/log" test --paths . --build-base "$ws/build" --install-base "$ws/install" \
  --event-handlers console_direct+ --pytest-args -m "not linter" -p no:cacheprovider
colcon test-result --test-result-base "$ws/build" --all --verbose
