#!/usr/bin/env bash
# Create .venv (once) and install the package with its test tools and ROS 2. Sourced by
# demo.sh and test.sh so that both quick-start commands work on a fresh machine.
#
# ROS 2 comes from, in this order:
#   1. a sourced ROS 2 (ROS_DISTRO set and `import rclpy` works in $PYTHON, e.g. after
#      `source /opt/ros/jazzy/setup.bash`): the venv sees it (--system-site-packages);
#   2. the ROS 2 Jazzy kit in ../shared/ros2-jazzy (or $ROS2_JAZZY_KIT): rclpy, Fast DDS and
#      the message packages from the package index plus launch, launch_testing and ros2cli;
#   3. otherwise the package index alone (`pip install -e ".[ros]"`): rclpy, Fast DDS and the
#      messages, so the nodes and their tests run; without launch / launch_testing the
#      launch tests are reported as not run (scripts/test.sh under CI fails instead).
# The Jazzy wheels need CPython 3.11 on Linux x86_64; elsewhere ROS 2 is left out (said below).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
KIT=${ROS2_JAZZY_KIT:-$PWD/../shared/ros2-jazzy}

if [ -n "${ROS_DISTRO:-}" ] && "$PY" -c "import rclpy" >/dev/null 2>&1; then
  ros=system
elif ! "$PY" -c 'import sys, platform; sys.exit(sys.version_info[:2] != (3, 11) or platform.machine() != "x86_64")'; then
  ros=none
  echo "bootstrap: $("$PY" -V 2>&1) on $(uname -m): the ROS 2 Jazzy wheels need CPython 3.11 on x86_64;" \
       "installing without ROS 2 (node and launch tests will be reported as not run)" >&2
elif [ -f "$KIT/install.sh" ]; then
  ros=kit
else
  ros=index
fi

if [ ! -x .venv/bin/python ]; then
  if [ "$ros" = system ]; then
    "$PY" -m venv --system-site-packages .venv
  else
    "$PY" -m venv .venv
  fi
fi
# Only reinstall when setup.py or the ROS 2 source changed since the last install.
stamp=.venv/.v2x_vlm_ros-installed
want="ros=$ros kit=$( [ "$ros" = kit ] && cat "$KIT"/requirements-*.txt "$KIT"/install.sh | cksum | cut -d' ' -f1 )"
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch first, pinned: the local CPU build (a looser pin pulls the CUDA packages);
  # setuptools < 80 because colcon-core requires it (torch would pull a newer one)
  .venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION:-2.13.0}" "setuptools<80"
  case "$ros" in
    index) .venv/bin/python -m pip install --quiet -e ".[test,ros]" ;;
    *) .venv/bin/python -m pip install --quiet -e ".[test]" ;;
  esac
  if [ "$ros" = kit ]; then
    # the pinned index wheels + launch, launch_testing, ros2cli (offline wheels); checks itself
    bash "$KIT/install.sh" .venv >/dev/null || { echo "bootstrap: $KIT/install.sh failed" >&2; exit 1; }
  fi
  echo "$want" > "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
echo "bootstrap: ROS 2 from: $ros" >&2
