"""ROS 2 in the tests: what is installed, isolation, in-process nodes, node processes.

- ``missing(kind)``: ROS 2 tests need rclpy (``"rclpy"``), launch tests also need the
  launch / launch_testing / ros2cli kit and this package installed by colcon
  (``"launch"``). When one is missing, conftest.py does not collect test_ros_*.py /
  test_launch_*.py and lists each as "NOT RUN" with the reason; when
  ``V2X_VLM_REQUIRE_ROS=1`` (CI) they are collected anyway and ``require`` at their top
  raises, so a missing ROS 2 fails the run. (Other tests call ``require`` inside a test or
  fixture, where it skips, "NOT RUN", or fails the same way.)
- Isolation: the session runs on one ``ROS_DOMAIN_ID`` (scripts/test.sh picks a random
  one, conftest.py one from the process id otherwise) with
  ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``; every in-process test has its own rclpy
  context, and every process a test starts is stopped by PID (its whole process group).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = os.environ.get("V2X_VLM_REQUIRE_ROS") == "1"
#: `v2x-vlm` of this checkout, whatever is on PATH
V2X_VLM = [sys.executable, "-c", "import sys; from v2x_vlm_ros.cli import main; sys.exit(main())"]


def missing(kind: str) -> str | None:
    try:
        import rclpy  # noqa: F401
    except ImportError as exc:
        return f"ROS 2 (rclpy) is not installed: {exc}"
    if kind == "launch":
        try:
            import launch_ros  # noqa: F401
            import launch_testing  # noqa: F401
            import ros2cli  # noqa: F401
        except ImportError as exc:
            return (f"launch / launch_testing / ros2cli are not installed ({exc}); "
                    f"bash ../shared/ros2-jazzy/install.sh .venv installs them")
        try:
            from ament_index_python.packages import get_package_prefix

            prefix = Path(get_package_prefix("v2x_vlm_ros"))
        except Exception as exc:  # PackageNotFoundError, or AMENT_PREFIX_PATH unset
            return f"v2x_vlm_ros is not installed by colcon ({exc}); scripts/test.sh builds it"
        if not (prefix / "lib" / "v2x_vlm_ros" / "vehicle_node").exists():
            return f"{prefix}/lib/v2x_vlm_ros/vehicle_node is missing; scripts/test.sh builds it"
    return None


def require(kind: str = "rclpy") -> None:
    """Skip the calling module ("NOT RUN: ...") or, under V2X_VLM_REQUIRE_ROS=1, fail it."""
    reason = missing(kind)
    if reason is None:
        return
    if REQUIRED:
        raise RuntimeError(f"V2X_VLM_REQUIRE_ROS=1 but {reason}")
    pytest.skip(f"NOT RUN: {reason}", allow_module_level=True)


def sample_bag() -> Path:
    """data/sample as a bag, written by `v2x-vlm bag` once per content of data/sample (kept in
    the temp folder between runs: it takes a while and never changes with the code)."""
    import hashlib
    import shutil
    import tempfile

    digest = hashlib.sha256()
    for path in sorted((ROOT / "data/sample").rglob("*")):
        if path.is_file():
            digest.update(f"{path.relative_to(ROOT)} {path.stat().st_size}\n".encode())
            if path.suffix == ".json":
                digest.update(path.read_bytes())
    target = Path(tempfile.gettempdir()) / f"v2x_vlm_sample_bag_{digest.hexdigest()[:16]}"
    if not (target / "metadata.yaml").exists():
        partial = target.with_name(target.name + f".partial{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run([*V2X_VLM, "bag", str(ROOT / "data/sample"), str(partial), "--storage", "mcap",
                        "--quiet"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        try:
            partial.rename(target)
        except OSError:  # another run made it meanwhile
            shutil.rmtree(partial, ignore_errors=True)
    return target


def include_v2x_vlm_launch(**arguments: str):
    """An IncludeLaunchDescription of the installed ``v2x_vlm.launch.py`` with ``arguments``
    (launch arguments are strings), for launch_testing descriptions."""
    import launch.actions
    from ament_index_python.packages import get_package_share_directory
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    share = Path(get_package_share_directory("v2x_vlm_ros"))
    return launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(share / "launch" / "v2x_vlm.launch.py")),
        launch_arguments=arguments.items())


def bag_ego_frames(bag: Path) -> int:
    """How many ego images a bag holds (what a player publishes)."""
    from v2x_vlm_ros.tools import bag as bagfile

    return len(bagfile.read_bag(bag, [bagfile.EGO_IMAGE]).get(bagfile.EGO_IMAGE, []))


def domain_id() -> int:
    return int(os.environ["ROS_DOMAIN_ID"])


def wait_until(predicate, timeout_s: float = 10.0, step_s: float = 0.02, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class RosSession:
    """An rclpy context with the nodes' executor (``ros.process.NodeExecutor``, a
    MultiThreadedExecutor) spinning on a thread."""

    def __init__(self):
        import rclpy
        from rclpy.context import Context
        from rclpy.signals import SignalHandlerOptions

        from v2x_vlm_ros.ros.process import NodeExecutor

        self.rclpy = rclpy
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id(),
                   signal_handler_options=SignalHandlerOptions.NO)
        self.executor = NodeExecutor(num_threads=4, context=self.context)
        self.nodes: list = []
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except (ExternalShutdownException, KeyboardInterrupt):
            pass

    def add(self, node):
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def node(self, name: str, **kwargs):
        return self.add(self.rclpy.create_node(name, context=self.context, **kwargs))

    def close(self):
        for node in self.nodes:
            if hasattr(node, "close"):
                node.close(2.0)
        self.executor.shutdown(timeout_sec=2.0)
        for node in self.nodes:
            node.destroy_node()
        self.rclpy.try_shutdown(context=self.context)
        self._thread.join(5.0)


@contextmanager
def ros_session():
    session = RosSession()
    try:
        yield session
    finally:
        session.close()


class Collector:
    """Messages received on a topic (thread-safe list)."""

    def __init__(self, node, msg_type, topic: str, qos=10):
        self.messages: list = []
        self._lock = threading.Lock()
        self.subscription = node.create_subscription(msg_type, topic, self._on, qos)

    def _on(self, msg):
        with self._lock:
            self.messages.append(msg)

    def __len__(self):
        with self._lock:
            return len(self.messages)


def ros_env(**extra) -> dict:
    env = dict(os.environ)
    env.update({"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "PYTHONUNBUFFERED": "1"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


class NodeProcess:
    """A process in its own process group (stopped by PID), output captured to a file."""

    def __init__(self, cmd: list[str], log: Path, ignore_sigint: bool = False, env: dict | None = None):
        self.cmd, self.log = cmd, log
        self._out = open(log, "w")

        def setup():
            os.setsid()
            # a non-interactive shell starts `cmd &` with SIGINT ignored; default: as a terminal does
            signal.signal(signal.SIGINT, signal.SIG_IGN if ignore_sigint else signal.SIG_DFL)

        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT, cwd=ROOT,
                                     env=env or ros_env(), preexec_fn=setup)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        if not self._out.closed:
            self._out.flush()
        return self.log.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout_s: float = 60.0) -> None:
        wait_until(lambda: text in self.output() or self.proc.poll() is not None, timeout_s, 0.05,
                   f"{text!r} in the output of {' '.join(self.cmd)}")
        assert text in self.output(), \
            f"process ended ({self.proc.returncode}) before {text!r}:\n{self.output()}"

    def signal(self, sig: int, group: bool = False) -> None:
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)

    def wait(self, timeout_s: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{' '.join(self.cmd)} did not end within {timeout_s} s:\n{self.output()}")

    def kill(self) -> None:
        """Stop the whole process group (whatever the test left running)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self._out.close()


def python_node(module_code: str, log: Path, ros_args: list[str] = (), **kwargs) -> NodeProcess:
    """A Python process running ``module_code`` (which ends by calling a node's main)."""
    return NodeProcess([sys.executable, "-c", module_code, "--ros-args", *ros_args], log, **kwargs)
