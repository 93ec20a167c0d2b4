"""Scene descriptions of the ego camera image, written only from what that image shows.

Inputs are what is visible in the ego camera at one instant (objects with enough visible
pixels in the id mask, their class, colour and rough position) plus the road layout in
view. The future, the navigation command, the scenario and anything hidden from the ego
camera never reach ``describe``, and ``BANNED`` words are checked on every output.
Phrasing varies deterministically with a generator passed in.

``attention`` (the synthetic world's ``attention_text`` option, VLM-E2E's driver
attention) adds where a careful driver should look, written from both cameras: the road
users near the junction that the roadside camera sees and the ego camera does not. It
describes the present only (place, moving or standing), never what the ego will do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_CHARS = 299
#: Words a description must never contain (manoeuvres, commands, scenario names).
BANNED = ("turn", "yield", "stop", "straight", "forward", "follow", "lead", "occlu", "crossing",
          "command", "brak", "slow", "wait", "give way", "left_", "right_")

NAMED_COLORS = {  # BGR
    "white": (235, 235, 235), "silver": (192, 192, 196), "black": (45, 45, 50),
    "grey": (95, 95, 100), "red": (45, 45, 185), "blue": (150, 85, 40), "dark blue": (95, 50, 30),
    "beige": (150, 190, 210), "green": (70, 110, 65), "orange": (40, 140, 230),
    "yellow": (40, 190, 230), "light green": (80, 150, 60),
}
NOUNS = {"Car": "car", "Van": "van", "Truck": "truck", "Bus": "bus", "Pedestrian": "pedestrian",
         "Cyclist": "cyclist"}
LIGHT = {
    "clear": ("Clear daylight", "Under a clear sky", "Sunny weather"),
    "hazy": ("Hazy daylight", "Under a hazy sky", "Slightly hazy weather"),
    "overcast": ("Overcast sky", "Under a grey overcast sky", "Dull, overcast light"),
    "low_sun": ("Low evening sun", "Warm, low sunlight", "Late-afternoon light"),
}


@dataclass(frozen=True)
class Seen:
    """A road user visible in the ego image, in the ego LiDAR frame (x ahead, y left)."""

    category: str
    color: tuple  # BGR of its main colour
    x: float
    y: float
    rel_yaw: float  # its heading minus the ego's
    moving: bool
    on_sidewalk: bool = False
    on_shoulder: bool = False


@dataclass(frozen=True)
class View:
    """Everything the description may use."""

    lighting: str
    junction: str  # "ahead", "inside" or "none" (not in view)
    junction_distance: float  # metres to the junction's near crosswalk when "ahead"
    seen: tuple  # Seen, any order
    buildings_left: int
    buildings_right: int
    trees: bool
    roadside_pole: bool
    sign: bool = False  # the red sign at the junction (stop_sign scenario)


def color_name(bgr) -> str:
    return min(NAMED_COLORS, key=lambda k: sum((a - b) ** 2 for a, b in zip(NAMED_COLORS[k], bgr)))


def _distance(d: float) -> str:
    if d < 8.0:
        return "very close"
    step = 5 if d < 50 else 10
    return f"about {int(step * round(d / step))} m away"


def _side(y: float) -> str:
    return "left" if y > 0 else "right"


def _phrase(s: Seen, rng) -> str:
    noun = NOUNS.get(s.category, "vehicle")
    dist = _distance(math.hypot(s.x, s.y))
    if s.category == "Pedestrian":
        where = (f"on the {_side(s.y)} sidewalk" if s.on_sidewalk else f"on the {_side(s.y)}")
        verb = "walking" if s.moving else "standing"
        return f"a pedestrian {verb} {where}, {dist}"
    if s.category == "Cyclist":
        return f"a cyclist on the {_side(s.y)} side of the road, {dist}"
    name = f"{color_name(s.color)} {noun}"
    article = "an" if name[0] in "aeiou" else "a"
    yaw = math.degrees(abs((s.rel_yaw + math.pi) % (2 * math.pi) - math.pi))
    if not s.moving and s.on_shoulder:
        return f"{article} {name} parked at the {_side(s.y)} roadside, {dist}"
    if yaw < 30 and abs(s.y) < 1.9 and s.x > 0:
        options = (f"{article} {name} ahead in our lane, {dist}",
                   f"{article} {name} in front of us in the same lane, {dist}")
        return options[int(rng.integers(len(options)))]
    if yaw > 150 and 0.0 < s.y < 6.0:
        return f"{article} {name} in the oncoming lane, {dist}"
    if 50 < yaw < 130:
        return f"{article} {name} on the cross street to the {_side(s.y)}, {dist}"
    return f"{article} {name} on the {_side(s.y)}, {dist}"


def _join(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def describe(view: View, rng: np.random.Generator) -> str:
    light = LIGHT[view.lighting][int(rng.integers(3))]
    parts = []
    opener = ("{l} over a two-lane urban road with a yellow centre line.",
              "{l}; the ego car drives on a two-lane road, one lane each way.",
              "{l} on a two-lane city road.")
    parts.append(opener[int(rng.integers(len(opener)))].format(l=light))
    if view.junction == "ahead":
        d = view.junction_distance
        dist = "just ahead" if d < 6 else f"about {int(5 * round(d / 5))} m ahead"
        forms = (f"A four-way intersection with zebra crosswalks is {dist}.",
                 f"There is a four-way junction {dist}.",
                 f"The road meets a cross street {dist}.")
        parts.append(forms[int(rng.integers(len(forms)))])
    elif view.junction == "inside":
        parts.append("The ego car is inside a four-way intersection.")
    if view.sign:
        forms = ("A red regulatory sign stands at the left corner of our approach.",
                 "There is a red octagonal sign on the left at the junction.")
        parts.append(forms[int(rng.integers(len(forms)))])
    seen = sorted(view.seen, key=lambda s: math.hypot(s.x, s.y))
    phrases = [_phrase(s, rng) for s in seen[:4]]
    if phrases:
        lead_in = ("Visible: ", "In view: ", "The camera shows ")[int(rng.integers(3))]
        agents = lead_in + _join(phrases) + "."
    else:
        agents = ("No other road users are visible.", "The road ahead is empty.")[int(rng.integers(2))]
    surround = []
    if view.buildings_left and view.buildings_right:
        surround.append("Buildings stand on both sides.")
    elif view.buildings_left or view.buildings_right:
        surround.append(f"Buildings on the {'left' if view.buildings_left else 'right'}.")
    if view.trees:
        surround.append("Trees line the road.")
    if view.roadside_pole:
        surround.append("A camera pole stands at a corner.")
    text = " ".join(parts + [agents] + surround)
    while len(text) > MAX_CHARS and surround:  # drop the least important sentences first
        surround.pop()
        text = " ".join(parts + [agents] + surround)
    while len(text) > MAX_CHARS and len(phrases) > 1:
        phrases.pop()
        agents = lead_in + _join(phrases) + "."
        text = " ".join(parts + [agents])
    check(text)
    return text


def _attention_phrase(s: Seen) -> str:
    noun = NOUNS.get(s.category, "vehicle")
    if s.category not in ("Pedestrian", "Cyclist"):
        noun = f"{color_name(s.color)} {noun}"
    side = "ahead" if abs(s.y) < 3.0 and s.x > 0 else f"on the {_side(s.y)}"
    state = "moving" if s.moving else "standing still"
    return f"a {noun} {side}, {_distance(math.hypot(s.x, s.y))}, {state}"


def attention(view: View, roadside_only: list[Seen], text: str) -> str:
    """``text`` with a driver-attention sentence: where to look, from what the roadside
    camera sees near the junction that the ego camera does not (sentences of ``text`` are
    dropped from the end when the whole would be too long)."""
    near = sorted(roadside_only, key=lambda s: math.hypot(s.x, s.y))[:2]
    if near:
        phrases = _join([_attention_phrase(s) for s in near])
        sentence = f"Attention, seen by the roadside camera: {phrases}."
    elif view.junction in ("ahead", "inside"):
        sentence = "Attention: the roadside camera shows no hidden road user near the junction."
    else:
        return text
    kept = text
    while len(kept) + 1 + len(sentence) > MAX_CHARS and ". " in kept:
        kept = kept[: kept.rstrip(".").rfind(". ") + 1]
    out = (kept + " " + sentence)[:MAX_CHARS]
    check(out)
    return out


def check(text: str) -> None:
    low = text.lower()
    bad = [w for w in BANNED if w in low]
    if bad or len(text) > MAX_CHARS:
        raise ValueError(f"description breaks the rules ({bad}, {len(text)} chars): {text}")
