"""``python -m v2x_vlm_ros.cli`` (and ``torchrun -m v2x_vlm_ros.cli``) runs the command."""

import sys

from v2x_vlm_ros.cli import main

sys.exit(main())
