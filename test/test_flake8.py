"""ament_flake8, as a ROS 2 workspace runs it (marked ``linter``).

ament_flake8 is only available in a ROS 2 install, so scripts/test.sh deselects the
``linter`` marker and runs plain flake8 with the same configuration (setup.cfg) instead;
this test itself has not been run here.
"""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.flake8
@pytest.mark.linter
def test_flake8():
    from ament_flake8.main import main_with_errors  # only in a ROS 2 install

    rc, errors = main_with_errors(argv=["--config", str(ROOT / "setup.cfg"), str(ROOT / "v2x_vlm_ros"),
                                        str(ROOT / "test")])
    assert rc == 0, "Found %d code style errors / warnings:\n" % len(errors) + "\n".join(errors)
