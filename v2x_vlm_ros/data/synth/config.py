"""Settings of the synthetic cooperative world (``v2x_vlm_ros.data.synth.generate``).

Everything that changes what is written lives here; the same config and seed always give
byte-identical files. Physical limits are fields too so that tests check against the same
numbers the generator uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

#: Scenario names (a contract: they appear in scenarios.json). Sequences are assigned
#: round-robin in this order; a paired scenario takes two consecutive sequences (``cycle``).
SCENARIOS = ("occluded_crossing", "left_turn", "right_turn", "follow_lead", "straight",
             "hidden_queue", "stop_sign")
#: Scenarios written as twins: the same sequence with the hidden agent(s) ("agent") and
#: without ("twin"), identical otherwise; only the roadside camera can tell them apart
#: until the hazard comes into the ego camera's view.
PAIRED_SCENARIOS = ("occluded_crossing", "hidden_queue")
#: What hides behind the parked truck in ``occluded_crossing`` (class -> probability).
HIDDEN_AGENTS = {"Car": 0.45, "Cyclist": 0.3, "Pedestrian": 0.25}

#: Split pattern applied within each scenario's list of sequences (repeats).
SPLIT_PATTERN = ("train", "val", "train", "test", "train")


@dataclass
class SynthConfig:
    """What to generate. Field comments give units and defaults' rationale."""

    # -- size of the dataset --------------------------------------------------------------
    num_sequences: int = 10  # sequences to write; sequence i gets scenario SCENARIOS[i % 5]
    seed: int = 0  # sequence i draws from np.random.default_rng([seed, i]) only
    duration_s: float = 12.0  # length of each sequence (10 Hz): approach, yield and restart fit
    scenarios: tuple[str, ...] = SCENARIOS  # round-robin order (a subset restricts the mix)
    paired: bool = True  # PAIRED_SCENARIOS as twins (with / without the hidden agent)
    conflict_share: float = 0.7  # hidden crossing agents that cross the ego's path (the rest
    #                              stop at their own line or wait at the kerb: no conflict)
    slowdown_share: float = 0.5  # "straight" sequences with a gentle slow-down of no visible cause
    early_cross_share: float = 0.0  # of the hidden agents that do not conflict, those that cross
    #                                 the ego's road 1-3 s before the ego gets there instead of
    #                                 waiting (moving, seen by the roadside camera, no yield)

    # -- output format --------------------------------------------------------------------
    layout: str = "spd"  # "spd" (V2X-Seq-SPD) or "c" (DAIR-V2X-C), passed to the writer
    image_size: tuple[int, int] = (1920, 1080)  # (width, height) of both cameras' images
    supersample_width: int = 960  # render at least this wide, then shrink by area averaging
    #                               (anti-aliased: an image looks alike at every size)
    jpeg_quality: int = 90  # JPEG quality of every image (1..100)
    side_labels: bool = True  # write vehicle-side label/lidar and label/camera files
    infra_labels: bool = True  # write infrastructure-side labels (world boxes, ego included)
    label_range_m: float = math.inf  # label only agents this close to the ego (or seen by a camera)
    workers: int = 0  # processes rendering sequences in parallel (0: in this process)

    # -- time -----------------------------------------------------------------------------
    start_timestamp_us: int = 1_626_155_123_000_000  # first sequence's first stamp (July 2021)
    sequence_spacing_us: int = 120_000_000  # start of sequence i = start + i * spacing
    frame_period_us: int = 100_000  # 10 Hz on both sides
    stamp_jitter_us: int = 2_000  # uniform +/- jitter of every capture time
    clock_offset_ms: tuple[float, float] = (20.0, 200.0)  # |roadside - vehicle clock|, sign random

    # -- sensors --------------------------------------------------------------------------
    vehicle_hfov_deg: float = 55.0  # ego camera horizontal field of view
    infra_hfov_deg: float = 55.0  # roadside camera horizontal field of view (aimed at the hidden hazards)
    mask_size: tuple[int, int] = (480, 270)  # resolution of the object-id masks (occlusion
    #                                          truth); fixed so labels do not depend on image_size
    min_visible_pixels: int = 6  # at mask_size: fewer visible pixels = not seen by that camera

    # -- motion limits (the ego; tests check the written poses against them) --------------
    accel_limit: float = 3.0  # |longitudinal acceleration| bound, m/s^2
    jerk_limit: float = 4.0  # |longitudinal jerk| bound, m/s^3
    lat_accel_limit: float = 3.0  # |lateral acceleration| bound, m/s^2
    wheelbase_m: float = 2.8  # kinematic bicycle wheelbase
    max_steer_rad: float = 0.55  # steering angle bound (curvature <= tan(max) / wheelbase)
    sim_dt_s: float = 0.01  # internal integration step

    # -- world ----------------------------------------------------------------------------
    background_vehicles: tuple[int, int] = (2, 5)  # moving cars / trucks / buses (min, max)
    parked_vehicles: tuple[int, int] = (0, 2)  # vehicles parked on road shoulders
    pedestrians: tuple[int, int] = (1, 5)  # people walking on sidewalks
    cyclists: tuple[int, int] = (0, 2)  # riders on the shoulders

    # -- descriptions ---------------------------------------------------------------------
    attention_text: bool = False  # add driver-attention text (VLM-E2E): where a careful driver
    #                               should look, written from both cameras (the roadside's too)

    def __post_init__(self):
        self.image_size = tuple(int(v) for v in self.image_size)
        self.mask_size = tuple(int(v) for v in self.mask_size)
        self.scenarios = tuple(self.scenarios)
        if self.layout not in ("spd", "c"):
            raise ValueError(f"layout must be 'spd' or 'c', not {self.layout!r}")
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        if unknown or not self.scenarios:
            raise ValueError(f"unknown scenarios {unknown}; expected a subset of {SCENARIOS}")
        if self.num_sequences < 0 or self.duration_s < 1.0:
            raise ValueError("need num_sequences >= 0 and duration_s >= 1")
        if min(self.image_size) < 16 or min(self.mask_size) < 16:
            raise ValueError("image_size and mask_size must be at least 16 x 16")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be in 1..100")
        for name in ("conflict_share", "slowdown_share", "early_cross_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.supersample_width < 1:
            raise ValueError("supersample_width must be >= 1")

    @classmethod
    def from_dict(cls, values: dict) -> "SynthConfig":
        """Build from a plain mapping (e.g. a YAML section); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        extra = sorted(set(values) - known)
        if extra:
            raise ValueError(f"unknown synth config keys: {extra}")
        return cls(**values)

    @property
    def cycle(self) -> tuple[tuple[str, str | None], ...]:
        """(scenario, variant) of consecutive sequences, repeated: a paired scenario gives
        ("agent") then ("twin"), any other one sequence (variant None)."""
        out = []
        for name in self.scenarios:
            if self.paired and name in PAIRED_SCENARIOS:
                out += [(name, "agent"), (name, "twin")]
            else:
                out.append((name, None))
        return tuple(out)

    def scenario_of(self, index: int) -> str:
        return self.cycle[index % len(self.cycle)][0]

    def variant_of(self, index: int) -> str | None:
        """"agent" / "twin" for the two sequences of a pair, None otherwise."""
        return self.cycle[index % len(self.cycle)][1]

    def draw_index(self, index: int) -> int:
        """Whose random draws sequence ``index`` uses: a twin uses its partner's, so the two
        are the same scene."""
        return index - 1 if self.variant_of(index) == "twin" else index

    def partner_of(self, index: int) -> int | None:
        """The other sequence of a pair (None when unpaired or when it is not generated)."""
        variant = self.variant_of(index)
        other = {"agent": index + 1, "twin": index - 1}.get(variant)
        return other if other is not None and 0 <= other < self.num_sequences else None

    def render_scale(self) -> int:
        """Supersampling factor: images are drawn this many times larger, then shrunk."""
        return max(1, math.ceil(self.supersample_width / self.image_size[0]))


def split_of(config: SynthConfig) -> dict[str, list[int]]:
    """Sequence indices per split, stratified per scenario (``SPLIT_PATTERN`` within each
    scenario's list of scenes); the two sequences of a pair are one scene, in one split."""
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    seen: dict[str, int] = {}
    owner: dict[int, str] = {}
    for i in range(config.num_sequences):
        if config.variant_of(i) == "twin":
            name = owner[i - 1]
        else:
            scenario = config.scenario_of(i)
            k = seen.get(scenario, 0)
            seen[scenario] = k + 1
            name = SPLIT_PATTERN[k % len(SPLIT_PATTERN)]
        owner[i] = name
        out[name].append(i)
    return out


__all__ = ["HIDDEN_AGENTS", "PAIRED_SCENARIOS", "SCENARIOS", "SPLIT_PATTERN", "SynthConfig", "split_of"]
