"""Drawing one person (or an occluder) onto a camera's canvas: anti-aliased shapes, a pose and a
viewpoint per image."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from reidnet.datatools.synthetic.camera import Camera
from reidnet.datatools.synthetic.people import EYES, MOUTH, OCCLUDER_COLOURS, VIEWS, Identity, pick


class Painter:
    """Anti-aliased shapes blended onto a float canvas, each computed only inside its box."""

    def __init__(self, canvas: np.ndarray):
        self.canvas = canvas
        self.height, self.width = canvas.shape[:2]
        self.ys, self.xs = _pixel_centres(self.height, self.width)

    def _window(self, top: float, bottom: float, left: float, right: float):
        y0, y1 = max(0, int(top) - 1), min(self.height, int(bottom) + 2)
        x0, x1 = max(0, int(left) - 1), min(self.width, int(right) + 2)
        if y0 >= y1 or x0 >= x1:
            return None
        return (slice(y0, y1), slice(x0, x1)), self.ys[y0:y1], self.xs[:, x0:x1]

    def _blend(self, window, coverage: np.ndarray, colour) -> None:
        """Coverage is the signed distance (pixels) inside the shape's edge: a 1-pixel soft ramp."""
        coverage += 0.5
        alpha = np.minimum(np.maximum(coverage, 0.0, out=coverage), 1.0, out=coverage)
        region = self.canvas[window]
        region += alpha[..., None] * (colour - region)

    def ellipse(self, cy: float, cx: float, ry: float, rx: float, colour) -> None:
        found = self._window(cy - ry, cy + ry, cx - rx, cx + rx)
        if found is None:
            return
        window, ys, xs = found
        norm = np.sqrt(((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2)
        self._blend(window, (1.0 - norm) * min(rx, ry), _colour_at(colour, ys, xs))

    def capsule(
        self, a: tuple[float, float], b: tuple[float, float], ra: float, rb: float, colour
    ) -> None:
        """A limb: segment a->b (y, x) thickened to radius ra at a and rb at b."""
        (ay, ax), (by, bx) = a, b
        r = max(ra, rb)
        found = self._window(min(ay, by) - r, max(ay, by) + r, min(ax, bx) - r, max(ax, bx) + r)
        if found is None:
            return
        window, ys, xs = found
        dy, dx = by - ay, bx - ax
        t = np.clip(((ys - ay) * dy + (xs - ax) * dx) / max(dy * dy + dx * dx, 1e-6), 0.0, 1.0)
        distance = np.sqrt((ys - ay - t * dy) ** 2 + (xs - ax - t * dx) ** 2)
        self._blend(window, ra + t * (rb - ra) - distance, _colour_at(colour, ys, xs))

    def trapezoid(
        self,
        top: float,
        bottom: float,
        cx: float,
        half_top: float,
        half_bottom: float,
        colour,
        radius: float = 0.0,
    ) -> None:
        """A torso, skirt or bag: horizontal edges, straight sides, optionally rounded corners."""
        half = max(half_top, half_bottom)
        found = self._window(top, bottom, cx - half, cx + half)
        if found is None:
            return
        window, ys, xs = found
        half_at = half_top + (half_bottom - half_top) * np.clip((ys - top) / (bottom - top), 0, 1)
        inside_x = half_at - np.abs(xs - cx)
        inside_y = np.minimum(ys - top, bottom - ys)
        qx, qy = radius - inside_x, radius - inside_y
        outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
        distance = outside + np.minimum(np.maximum(qx, qy), 0) - radius
        self._blend(window, -distance, _colour_at(colour, ys, xs))


@lru_cache(maxsize=16)
def _pixel_centres(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    ys = np.arange(height, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(width, dtype=np.float32)[None, :] + 0.5
    return ys, xs


def _colour_at(colour, ys: np.ndarray, xs: np.ndarray):
    """A fixed RGB, or a pattern: a function of the window's pixel coordinates."""
    return colour(ys, xs) if callable(colour) else colour


def _garment(identity: Identity, cx: float, top: float, person_height: float):
    """The upper garment's colour: solid, or a stripe/check field anchored to the body."""
    if identity.pattern == "solid":
        return identity.upper
    period = identity.stripe_period * person_height
    first, second = identity.upper, identity.upper_second

    def field(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        rows = np.floor((ys - top) / period) % 2
        cols = np.floor((xs - cx) / period) % 2
        if identity.pattern == "horizontal":
            mask = rows * np.ones_like(cols)
        elif identity.pattern == "vertical":
            mask = cols * np.ones_like(rows)
        else:
            mask = (rows + cols) % 2
        return np.where(mask[..., None] > 0, second, first)

    return field


@dataclass(frozen=True)
class _Pose:
    """Where the person stands in this image and how: pixels, plus a viewpoint."""

    view: str
    facing: int  # side view: +1 walks right, -1 left
    cx: float
    top: float
    height: float
    stride: float  # leg spread, fraction of height
    swing: float  # arm swing, fraction of height


def _random_pose(
    identity: Identity, scene: Camera, rng: np.random.Generator, size, misframed: bool
) -> _Pose:
    image_height, image_width = size
    height = image_height * scene.scale * identity.height * rng.uniform(0.97, 1.03)
    height = min(height, 0.98 * image_height)
    cx = image_width * (0.5 + scene.x_bias + rng.uniform(-0.06, 0.06))
    top = (image_height - height) * rng.uniform(0.3, 0.7)
    if misframed:  # a detector's bad box: the person too big and off-centre
        height *= rng.uniform(1.5, 2.3)
        cx = image_width * rng.uniform(-0.1, 1.1)
        top = image_height * rng.uniform(-0.6, 0.1)
    view = VIEWS[int(rng.choice(3, p=[0.35, 0.35, 0.3]))]
    return _Pose(
        view=view,
        facing=int(rng.choice([-1, 1])),
        cx=float(cx),
        top=float(top),
        height=float(height),
        stride=float(rng.uniform(0.0, 0.12 if view == "side" else 0.05)),
        swing=float(rng.uniform(-0.06, 0.06)),
    )


def draw_person(
    painter: Painter,
    identity: Identity,
    scene: Camera,
    rng: np.random.Generator,
    misframed: bool,
) -> None:
    pose = _random_pose(identity, scene, rng, (painter.height, painter.width), misframed)
    h = pose.height
    side = pose.view == "side"
    head_h = 0.135 * identity.head * h
    shoulder_y = pose.top + head_h + 0.02 * h
    foot_y = pose.top + h - 0.02 * h
    hip_y = foot_y - identity.legs * h
    shoulder = 0.12 * h * identity.width * (0.62 if side else 1.0)
    waist = shoulder * 0.82
    if identity.backpack is not None and side:
        back = -pose.facing
        painter.trapezoid(
            shoulder_y + 0.02 * h,
            hip_y - 0.06 * h,
            pose.cx + back * shoulder * 1.25,
            0.05 * h,
            0.05 * h,
            identity.backpack,
            radius=0.02 * h,
        )
    _draw_legs(painter, identity, pose, hip_y, foot_y, waist)
    _draw_arms(painter, identity, pose, shoulder_y, hip_y, shoulder, behind=True)
    if identity.hair_length == "long" and pose.view != "back":
        painter.trapezoid(
            pose.top + 0.4 * head_h,
            shoulder_y + 0.08 * h,
            pose.cx,
            0.45 * head_h,
            0.5 * head_h,
            identity.hair,
            radius=0.02 * h,
        )
    garment = _garment(identity, pose.cx, shoulder_y, h)
    painter.trapezoid(
        shoulder_y, hip_y + 0.03 * h, pose.cx, shoulder, waist, garment, radius=0.035 * h
    )
    _draw_accessories(painter, identity, pose, shoulder_y, hip_y, shoulder)
    _draw_arms(painter, identity, pose, shoulder_y, hip_y, shoulder, behind=False)
    _draw_head(painter, identity, pose, head_h, shoulder_y)


def _draw_legs(
    painter: Painter, identity: Identity, pose: _Pose, hip_y: float, foot_y: float, waist: float
) -> None:
    h = pose.height
    radius = 0.05 * h * math.sqrt(identity.width)
    spread = pose.stride * h
    if pose.view == "side":
        hips = (pose.cx, pose.cx)
        feet = (pose.cx - spread, pose.cx + spread)
    else:
        hips = (pose.cx - 0.5 * waist, pose.cx + 0.5 * waist)
        feet = (hips[0] - spread, hips[1] + spread)
    covered = {"trousers": 1.0, "shorts": 0.35, "skirt": 0.0}[identity.lower_shape]
    for hip_x, foot_x in zip(hips, feet, strict=True):
        knee_y = hip_y + covered * (foot_y - hip_y)
        knee_x = hip_x + covered * (foot_x - hip_x)
        if covered < 1.0:
            painter.capsule(
                (hip_y, hip_x), (foot_y, foot_x), radius * 0.8, radius * 0.65, identity.skin
            )
        if covered > 0.0:
            painter.capsule(
                (hip_y, hip_x),
                (knee_y, knee_x),
                radius,
                radius * (0.85 if covered == 1.0 else 0.95),
                identity.lower,
            )
        shoe_x = foot_x + (0.03 * h * pose.facing if pose.view == "side" else 0.0)
        painter.ellipse(
            foot_y,
            shoe_x,
            0.025 * h,
            radius * (1.4 if pose.view == "side" else 1.0),
            identity.shoes,
        )
    if identity.lower_shape == "skirt":
        painter.trapezoid(
            hip_y - 0.02 * h,
            hip_y + 0.2 * h,
            pose.cx,
            waist,
            waist * 1.45,
            identity.lower,
            radius=0.01 * h,
        )
    else:
        painter.trapezoid(
            hip_y - 0.02 * h,
            hip_y + 0.07 * h,
            pose.cx,
            waist,
            waist,
            identity.lower,
            radius=0.01 * h,
        )


def _draw_arms(
    painter: Painter,
    identity: Identity,
    pose: _Pose,
    shoulder_y: float,
    hip_y: float,
    shoulder: float,
    behind: bool,
) -> None:
    """Front/back: both arms at the body sides. Side: the far arm behind, the near one in front."""
    h = pose.height
    radius = 0.035 * h * math.sqrt(identity.width)
    hand_y = hip_y + 0.04 * h
    if pose.view == "side":
        sign = -1.0 if behind else 1.0
        arms = [(pose.cx, pose.cx + sign * pose.swing * h * 1.5)]
    elif behind:
        return
    else:
        arms = [
            (pose.cx + sign * shoulder * 0.92, pose.cx + sign * (shoulder + radius * 0.5))
            for sign in (-1.0, 1.0)
        ]
    elbow_t = 1.0 if identity.long_sleeves else 0.45
    for shoulder_x, hand_x in arms:
        start, end = (shoulder_y + radius, shoulder_x), (hand_y, hand_x)
        painter.capsule(start, end, radius, radius * 0.8, identity.skin)
        sleeve_end = (
            start[0] + elbow_t * (end[0] - start[0]),
            start[1] + elbow_t * (end[1] - start[1]),
        )
        painter.capsule(start, sleeve_end, radius * 1.05, radius * 0.9, identity.upper)
        painter.ellipse(end[0], end[1], radius * 0.75, radius * 0.7, identity.skin)


def _draw_accessories(
    painter: Painter,
    identity: Identity,
    pose: _Pose,
    shoulder_y: float,
    hip_y: float,
    shoulder: float,
) -> None:
    h = pose.height
    if identity.backpack is not None:
        if pose.view == "back":
            painter.trapezoid(
                shoulder_y + 0.02 * h,
                hip_y - 0.03 * h,
                pose.cx,
                shoulder * 0.75,
                shoulder * 0.8,
                identity.backpack,
                radius=0.025 * h,
            )
        elif pose.view == "front":
            for sign in (-1.0, 1.0):
                x = pose.cx + sign * shoulder * 0.55
                painter.capsule(
                    (shoulder_y, x), (hip_y - 0.08 * h, x), 0.012 * h, 0.012 * h, identity.backpack
                )
        else:
            x = pose.cx - pose.facing * shoulder * 0.3
            painter.capsule(
                (shoulder_y, x),
                (hip_y - 0.1 * h, x - pose.facing * 0.02 * h),
                0.013 * h,
                0.013 * h,
                identity.backpack,
            )
    if identity.bag is not None:
        side = identity.bag_side if pose.view != "back" else -identity.bag_side
        if pose.view == "side":
            side = pose.facing * 0.2
        strap_top = (shoulder_y + 0.01 * h, pose.cx - side * shoulder * 0.6)
        bag_x = pose.cx + side * shoulder * 1.05
        painter.capsule(strap_top, (hip_y, bag_x), 0.01 * h, 0.01 * h, identity.bag)
        painter.trapezoid(
            hip_y - 0.02 * h,
            hip_y + 0.08 * h,
            bag_x,
            0.06 * h,
            0.065 * h,
            identity.bag,
            radius=0.015 * h,
        )


def _draw_head(
    painter: Painter, identity: Identity, pose: _Pose, head_h: float, shoulder_y: float
) -> None:
    h = pose.height
    cy = pose.top + head_h / 2
    ry, rx = head_h / 2, head_h * 0.4
    painter.capsule(
        (cy + ry * 0.6, pose.cx),
        (shoulder_y + 0.01 * h, pose.cx),
        rx * 0.45,
        rx * 0.5,
        identity.skin,
    )
    painter.ellipse(cy, pose.cx, ry, rx, identity.skin)
    if pose.view == "back":
        painter.ellipse(cy - ry * 0.05, pose.cx, ry * 1.02, rx * 1.05, identity.hair)
        if identity.hair_length != "short":
            length = 0.1 * h if identity.hair_length == "long" else 0.03 * h
            painter.trapezoid(
                cy, cy + ry + length, pose.cx, rx * 0.95, rx * 0.85, identity.hair, radius=0.01 * h
            )
    elif pose.view == "side":
        back_x = pose.cx - pose.facing * rx * 0.35
        painter.ellipse(cy - ry * 0.15, back_x, ry * 0.9, rx * 0.8, identity.hair)
        eye_x = pose.cx + pose.facing * rx * 0.55
        painter.ellipse(cy - ry * 0.05, eye_x, ry * 0.1, rx * 0.1, EYES)
    else:
        painter.ellipse(cy - ry * 0.55, pose.cx, ry * 0.5, rx * 1.02, identity.hair)
        for sign in (-1.0, 1.0):
            painter.ellipse(cy - ry * 0.05, pose.cx + sign * rx * 0.38, ry * 0.1, rx * 0.13, EYES)
        painter.ellipse(cy + ry * 0.45, pose.cx, ry * 0.06, rx * 0.3, MOUTH)
    if identity.hat is not None:
        painter.trapezoid(
            cy - ry * 1.15,
            cy - ry * 0.45,
            pose.cx,
            rx * 0.95,
            rx * 1.05,
            identity.hat,
            radius=0.01 * h,
        )
        brim_x = pose.cx + (pose.facing * rx * 0.4 if pose.view == "side" else 0.0)
        painter.trapezoid(cy - ry * 0.55, cy - ry * 0.4, brim_x, rx * 1.3, rx * 1.3, identity.hat)


def draw_occluder(painter: Painter, rng: np.random.Generator) -> None:
    """Something between the camera and the person: a bench, a car, a bin, another body part."""
    height, width = painter.height, painter.width
    colour = pick(rng, OCCLUDER_COLOURS) * np.float32(rng.uniform(0.8, 1.2))
    if rng.random() < 0.6:
        top = height * (1 - rng.uniform(0.15, 0.4))
        left, right = sorted((rng.uniform(-0.3, 1.3, size=2) * width).tolist())
        right = max(right, left + 0.4 * width)
        painter.trapezoid(
            top,
            height + 4,
            (left + right) / 2,
            (right - left) / 2,
            (right - left) / 2,
            colour,
            radius=2.0,
        )
    else:
        span = width * rng.uniform(0.2, 0.4)
        cx = -2 + span / 2 if rng.random() < 0.5 else width + 2 - span / 2
        top = height * rng.uniform(-0.1, 0.5)
        painter.trapezoid(top, height + 4, cx, span / 2 + 2, span / 2 + 2, colour, radius=2.0)
