"""Building the runtime pieces from settings, shared by the nodes and replay.

``make_engine`` is where an inference backend is chosen (``runtime.backends``): a request
for one that cannot run here falls back along tensorrt -> inductor -> eager and says so in
the returned note, which the caller logs (never a crash for an unavailable backend). It
warms the engine up before returning, so a node reports ready only once the first frame
will not pay for lazy set-up or compilation.
"""

from __future__ import annotations

from pathlib import Path

from v2x_vlm_ros.runtime.describer import ThreadedDescriber
from v2x_vlm_ros.runtime.backends import BACKENDS
from v2x_vlm_ros.runtime.engine import EngineOptions, PlannerEngine
from v2x_vlm_ros.runtime.refine import RefineConfig, Refiner

DEMO_MODEL = "synthetic-student"


def default_model_dir() -> str:
    """The demo model installed with the package (share/v2x_vlm_ros/models/...), or the
    source tree's when running from a checkout."""
    try:
        from ament_index_python.packages import get_package_share_directory  # ROS 2 installs only

        installed = Path(get_package_share_directory("v2x_vlm_ros")) / "models" / DEMO_MODEL
        if installed.is_dir():
            return str(installed)
    except (ImportError, LookupError):
        pass
    return str(Path(__file__).resolve().parents[2] / "models" / DEMO_MODEL)


def make_engine(model_dir, device: str = "cpu", backend: str = "eager",
                refine: RefineConfig | None = RefineConfig(), engines: EngineOptions | None = None,
                warm_up: int = 0, token_choice: str | None = None) -> tuple[PlannerEngine, str]:
    """(engine, note): the planning step for ``model_dir`` and a line saying which backend
    runs (and why, when it is not the requested one). ``warm_up``: blank frames run first;
    ``token_choice``: how plan tokens are chosen, None or "": the model's own."""
    from v2x_vlm_ros.model.modeling import load_model

    unknown = backend not in BACKENDS
    refiner = Refiner(refine) if refine is not None and refine.enabled else None
    engine = PlannerEngine(load_model(model_dir, device), device, refiner,
                           backend="eager" if unknown else backend, engines=engines,
                           token_choice=token_choice or None)
    if unknown:
        engine.backend.requested = backend
        engine.backend.notes.append(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if warm_up:
        engine.warm_up(warm_up)
    return engine, engine.backend.line()


def make_describer(model_dir, device: str, cache, rate_hz: float, deadline_s: float) -> ThreadedDescriber:
    from v2x_vlm_ros.model.describer import SceneDescriber

    describer = SceneDescriber(model_dir, device=device)
    return ThreadedDescriber(lambda image: describer.describe([image])[0], cache, rate_hz, deadline_s)
