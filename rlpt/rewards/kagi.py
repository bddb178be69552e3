"""KAGI keypoint affordance rewards (Lee et al., arXiv 2407.10341): waypoints from keypoints, dense progress rewards.

Pipeline:
  1. a `KeypointProposer` turns the scene (top-down and side views, camera models) into a `KeypointPlan`: ordered
     3-D waypoints w_1..w_K, each tracked by the end-effector ("ee") or the manipulated object ("object");
     `OracleKeypointProposer` reads the simulator (with controlled corruption), `VLMKeypointProposer` asks a
     chat VLM with MOKA-style marks (labelled candidate dots, a lettered grid, height lines);
  2. `KeypointProgressReward` scores states against the plan (the bounded dense reward or its potential-based
     form); `SuccessOverrideReward` replaces it by the success reward wherever a success model fires.

Pixels follow `TabletopEnv.camera_intrinsics`: (u = column, v = row), origin at the top-left corner of the
top-left pixel, so pixel (row i, column j) has its centre at (j + 0.5, i + 0.5). Extrinsics are world -> camera
(4x4, OpenCV: x right, y down, z forward). World z is up; the table top is at z = 0.
"""

from __future__ import annotations

import copy
import inspect
import io
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rlpt.errors import ConfigError, RewardModelError
from rlpt.rewards.base import RewardModel, RewardOutput, RewardQuery
from rlpt.utils import atomic_write, write_json

log = logging.getLogger(__name__)

TRACKS = ("ee", "object")
# Slices of TabletopEnv.state() (see rlpt.envs.tabletop.env.STATE_KEYS): ee pos 0:3, block pos 4:7, target 11:14.
TABLETOP_POSITIONS: dict[str, slice] = {"ee": slice(0, 3), "object": slice(4, 7)}
_TABLETOP_GRIPPER, _TABLETOP_TARGET = 3, slice(11, 14)


# ============================================================================================ geometry
@dataclass(frozen=True)
class PinholeCamera:
    """A pinhole camera: `K` (3, 3) in pixels, `extrinsics` (4, 4) world -> camera (OpenCV), image `size` (H, W)."""

    K: np.ndarray
    extrinsics: np.ndarray
    size: tuple[int, int]

    def __post_init__(self) -> None:
        K, E = np.asarray(self.K, float), np.asarray(self.extrinsics, float)
        if K.shape != (3, 3) or E.shape != (4, 4) or not (np.all(np.isfinite(K)) and np.all(np.isfinite(E))):
            raise ConfigError(f"PinholeCamera: K must be finite (3, 3) and extrinsics finite (4, 4); got {K.shape}, "
                              f"{E.shape}")
        if not np.allclose(E[:3, :3] @ E[:3, :3].T, np.eye(3), atol=1e-5) or abs(np.linalg.det(K)) < 1e-12:
            raise ConfigError("PinholeCamera: the extrinsics rotation is not orthonormal or K is singular")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "extrinsics", E)
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))

    @classmethod
    def from_env(cls, env: Any, camera: str, size: int | tuple[int, int]) -> PinholeCamera:
        """The camera `camera` of an env with `camera_intrinsics` / `camera_extrinsics` (e.g. TabletopEnv)."""
        hw = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
        return cls(env.camera_intrinsics(camera, hw), env.camera_extrinsics(camera), hw)

    @property
    def position(self) -> np.ndarray:
        """The camera centre in world coordinates (3,)."""
        R, t = self.extrinsics[:3, :3], self.extrinsics[:3, 3]
        return -R.T @ t

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> pixel coordinates (N, 2) (u, v); NaN for points behind the camera."""
        p = np.asarray(points, float).reshape(-1, 3)
        pc = p @ self.extrinsics[:3, :3].T + self.extrinsics[:3, 3]
        uvw = pc @ self.K.T
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = uvw[:, :2] / uvw[:, 2:3]
        uv[pc[:, 2] <= 0] = np.nan
        return uv

    def rays(self, uv: np.ndarray) -> np.ndarray:
        """Unit world directions (N, 3) of the rays from `position` through pixel coordinates `uv` (N, 2)."""
        uv = np.asarray(uv, float).reshape(-1, 2)
        d_cam = np.c_[uv, np.ones(len(uv))] @ np.linalg.inv(self.K).T
        d = d_cam @ self.extrinsics[:3, :3]  # camera -> world rotation is R^T
        return d / np.linalg.norm(d, axis=1, keepdims=True)


def pixel_round(uv: np.ndarray) -> np.ndarray:
    """Snap continuous pixel coordinates (N, 2) to the centres of the pixels that contain them."""
    return np.floor(np.asarray(uv, float)) + 0.5


def lift_to_plane(uv: np.ndarray, camera: PinholeCamera, height: float | np.ndarray = 0.0) -> np.ndarray:
    """World points (N, 3) where the rays through `uv` (N, 2) meet the horizontal plane z = `height` (scalar or (N,)).

    Raises RewardModelError(reason="out_of_bounds") for rays parallel to the plane or meeting it behind the camera.
    """
    d = camera.rays(uv)
    o = camera.position
    h = np.broadcast_to(np.asarray(height, float), (len(d),))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (h - o[2]) / d[:, 2]
    if not np.all(np.isfinite(t) & (t > 0)):
        raise RewardModelError(f"lift_to_plane: pixels {np.asarray(uv).tolist()} do not see the plane z={h.tolist()}",
                               reason="out_of_bounds")
    return o + t[:, None] * d


def _closest_params(p0: np.ndarray, u: np.ndarray, q0: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parameters (s, t) of the closest points p0 + s u, q0 + t v of two families of lines (rows)."""
    w0 = p0 - q0
    a, b, c = (u * u).sum(1), (u * v).sum(1), (v * v).sum(1)
    d, e = (u * w0).sum(1), (v * w0).sum(1)
    den = a * c - b * b
    if np.any(den < 1e-9 * a * c):
        raise RewardModelError("lifting: the two viewing lines are (nearly) parallel", reason="out_of_bounds")
    return (b * e - c * d) / den, (a * e - b * d) / den


def lift_height(xy: np.ndarray, uv: np.ndarray, camera: PinholeCamera) -> np.ndarray:
    """Heights (N,) on the vertical lines through world `xy` (N, 2) closest to the rays through `uv` (N, 2) of
    `camera` (a side view): a top-view (x, y) combined with a side-view pixel."""
    xy = np.asarray(xy, float).reshape(-1, 2)
    p0 = np.c_[xy, np.zeros(len(xy))]
    up = np.tile([0.0, 0.0, 1.0], (len(xy), 1))
    d = camera.rays(uv)
    s, _ = _closest_params(p0, up, np.broadcast_to(camera.position, d.shape), d)
    return s


def lift_two_views(uv_a: np.ndarray, camera_a: PinholeCamera, uv_b: np.ndarray, camera_b: PinholeCamera) -> np.ndarray:
    """Triangulate world points (N, 3): the midpoints of the closest points of the rays through `uv_a` in
    `camera_a` (e.g. the top view) and `uv_b` in `camera_b` (e.g. the side view)."""
    da, db = camera_a.rays(uv_a), camera_b.rays(uv_b)
    if len(da) != len(db):
        raise ConfigError(f"lift_two_views: {len(da)} pixels in view a but {len(db)} in view b")
    oa, ob = np.broadcast_to(camera_a.position, da.shape), np.broadcast_to(camera_b.position, db.shape)
    s, t = _closest_params(oa, da, ob, db)
    return 0.5 * (oa + s[:, None] * da + ob + t[:, None] * db)


# =============================================================================================== scenes
@dataclass
class SceneContext:
    """What a proposer sees: cameras, object poses, the task and (lazily rendered) images.

    cameras: view name -> camera ("top" required; "side" for heights).
    poses: object name -> (position (3,), quaternion w x y z (4,)), as `TabletopEnv.object_poses()`.
    workspace: (low (3,), high (3,)) end-effector box in metres (the scale of noise, the region of the grid).
    images: view name -> uint8 (H, W, 3); missing views are rendered with `renderer(view, size)` on first use.
    """

    cameras: dict[str, PinholeCamera]
    poses: dict[str, tuple[np.ndarray, np.ndarray]]
    workspace: tuple[np.ndarray, np.ndarray]
    instruction: str = ""
    task: str = ""
    images: dict[str, np.ndarray] = field(default_factory=dict)
    renderer: Callable[[str, tuple[int, int]], np.ndarray] | None = None

    def camera(self, view: str) -> PinholeCamera:
        if view not in self.cameras:
            raise ConfigError(f"SceneContext: no {view!r} camera; have {sorted(self.cameras)}")
        return self.cameras[view]

    def image(self, view: str) -> np.ndarray:
        """The view's image, rendered on first use."""
        if view not in self.images:
            if self.renderer is None:
                raise ConfigError(f"SceneContext: no {view!r} image and no renderer")
            self.images[view] = np.array(self.renderer(view, self.camera(view).size), dtype=np.uint8)
        return self.images[view]

    def position(self, name: str) -> np.ndarray:
        if name not in self.poses:
            raise ConfigError(f"SceneContext: no pose for {name!r}; have {sorted(self.poses)}")
        return np.asarray(self.poses[name][0], float)


def scene_from_env(env: Any, size: int = 256, views: Sequence[str] = ("top", "side")) -> SceneContext:
    """The current scene of a TabletopEnv-like env (`object_poses`, `camera_*`, `render_camera`, `task`)."""
    from rlpt.envs.tabletop.env import WORKSPACE_HIGH, WORKSPACE_LOW

    base = getattr(env, "unwrapped", env)
    cams = {v: PinholeCamera.from_env(base, v, size) for v in views}
    poses = {k: (np.array(p, float), np.array(q, float)) for k, (p, q) in base.object_poses().items()}
    task = getattr(base, "task", None)
    return SceneContext(cams, poses, (WORKSPACE_LOW.copy(), WORKSPACE_HIGH.copy()),
                        str(getattr(task, "instruction", "")), str(getattr(base, "task_name", "")),
                        renderer=lambda view, hw: base.render_camera(view, hw))


# Poses in TabletopEnv.state(): name -> (position slice, quaternion slice or None: the identity).
TABLETOP_POSES: dict[str, tuple[slice, slice | None]] = {"block": (slice(4, 7), slice(7, 11)),
                                                         "target": (slice(11, 14), None)}


@dataclass
class RecordedScenes:
    """The scenes of recorded episodes, whose simulator state is gone: `base`'s cameras, workspace and task with
    the object poses read from a state vector (`poses`: name -> (position slice, quaternion slice or None)).
    The scenes have no images, so only proposers that need none (the oracle) can plan on them."""

    base: SceneContext
    poses: Mapping[str, tuple[slice, slice | None]] = field(default_factory=lambda: dict(TABLETOP_POSES))

    def at(self, state: np.ndarray) -> SceneContext:
        """The scene whose objects are where `state` (D,) puts them."""
        s = np.asarray(state, float).reshape(-1)
        poses = {name: (s[p].copy(), np.array([1.0, 0.0, 0.0, 0.0]) if q is None else s[q].copy())
                 for name, (p, q) in self.poses.items()}
        return SceneContext(self.base.cameras, poses, self.base.workspace, self.base.instruction, self.base.task,
                            renderer=self._no_image)

    @staticmethod
    def _no_image(view: str, size: tuple[int, int]) -> np.ndarray:
        raise ConfigError(f"a recorded scene has no {view!r} image for a keypoint proposer to look at: relabel "
                          "recorded demonstrations with the oracle proposer, or keep reward.offline=success")


def as_scene(context: Any, size: int = 256) -> SceneContext:
    """`context` itself when it is a SceneContext, else `scene_from_env(context, size)`."""
    if isinstance(context, SceneContext):
        return context
    if hasattr(getattr(context, "unwrapped", context), "object_poses"):
        return scene_from_env(context, size)
    raise ConfigError(f"keypoint proposer: expected a SceneContext or a TabletopEnv-like env; got {type(context)}")


def _yaw(quat: np.ndarray) -> float:
    w, x, y, z = np.asarray(quat, float)
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


# ================================================================================================ plans
@dataclass(frozen=True)
class KeypointPlan:
    """Ordered waypoints for the progress reward.

    waypoints: (K, 3) world positions w_1..w_K.
    tracks: per waypoint, "ee" (reached by the end-effector) or "object" (by the manipulated object).
    labels: per waypoint, what it came from (e.g. "P3", "c2@high", "contact"), for logs.
    pixels: (K, 2) top-view pixel coordinates of the waypoints, or None.
    """

    waypoints: np.ndarray
    tracks: tuple[str, ...]
    labels: tuple[str, ...] = ()
    pixels: np.ndarray | None = None
    source: str = ""
    instruction: str = ""

    def __post_init__(self) -> None:
        w = np.asarray(self.waypoints, float)
        if w.ndim != 2 or w.shape[1] != 3 or len(w) < 1 or not np.all(np.isfinite(w)):
            raise ConfigError(f"KeypointPlan: waypoints must be finite (K >= 1, 3); got {w.shape}")
        if len(self.tracks) != len(w) or any(t not in TRACKS for t in self.tracks):
            raise ConfigError(f"KeypointPlan: tracks must be {len(w)} of {list(TRACKS)}; got {self.tracks}")
        labels = tuple(self.labels) or tuple(f"w{i + 1}" for i in range(len(w)))
        if len(labels) != len(w):
            raise ConfigError(f"KeypointPlan: {len(labels)} labels for {len(w)} waypoints")
        object.__setattr__(self, "waypoints", w)
        object.__setattr__(self, "tracks", tuple(self.tracks))
        object.__setattr__(self, "labels", labels)
        if self.pixels is not None:
            object.__setattr__(self, "pixels", np.asarray(self.pixels, float).reshape(len(w), 2))

    def __len__(self) -> int:
        return len(self.waypoints)

    def to_json(self) -> dict[str, Any]:
        return {"waypoints": np.round(self.waypoints, 4).tolist(), "tracks": list(self.tracks),
                "labels": list(self.labels), "source": self.source, "instruction": self.instruction,
                "pixels": None if self.pixels is None else np.round(self.pixels, 1).tolist()}


class KeypointProposer(Protocol):
    """Makes a plan for the current scene: `propose(scene or env) -> KeypointPlan`; raises RewardModelError."""

    def propose(self, context: Any) -> KeypointPlan: ...


class OracleKeypointProposer:
    """Waypoints from the simulator's ground truth, read back through the image path, optionally corrupted.

    push: [contact point behind the block w.r.t. the goal direction ("ee"), the block's centre ("ee": the pusher
    passes where the block was, i.e. the block has moved), the goal at block height ("object")].
    pick-place: [block centre (grasp, "ee"), above the block, above the goal, the goal ("object")].
    Each point is projected into the top and side views, snapped to pixel centres and triangulated back (or lifted
    to its true height when there is no side view). Then:
      noise: Gaussian noise with std `noise * (high - low)` of the scene's workspace, per axis (no clipping);
      wrong_contact: the first waypoint is put on the wrong side of the block (mirrored through its centre
      for push; for pick-place beside the block at the same offset, on the goal side).
    """

    def __init__(self, task: str | None = None, *, noise: float = 0.0, wrong_contact: bool = False,
                 rng: np.random.Generator | int | None = None, contact_offset: float = 0.04,
                 lift_height: float = 0.08, object_name: str = "block", target_name: str = "target",
                 image_size: int = 256) -> None:
        if noise < 0:
            raise ConfigError(f"OracleKeypointProposer: noise must be >= 0; got {noise}")
        self.task, self.noise, self.wrong_contact = task, float(noise), bool(wrong_contact)
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self.contact_offset, self.lift_height = float(contact_offset), float(lift_height)
        self.object_name, self.target_name, self.image_size = object_name, target_name, int(image_size)

    def ground_truth(self, scene: SceneContext) -> KeypointPlan:
        """The exact (uncorrupted, not pixel-snapped) waypoints; `wrong_contact` applies."""
        task = (self.task or scene.task).removesuffix("-reset")
        b, t = scene.position(self.object_name), scene.position(self.target_name)
        goal = np.array([t[0], t[1], b[2]])
        u = np.r_[goal[:2] - b[:2], 0.0]
        u /= max(float(np.linalg.norm(u)), 1e-9)
        side = b + u * self.contact_offset  # the contact point on the goal side (the wrong one for a push)
        if task == "push":
            pts = [side if self.wrong_contact else b - u * self.contact_offset, b, goal]
            return KeypointPlan(np.array(pts), ("ee", "ee", "object"), ("contact", "block", "goal"), None, "oracle")
        if task == "pick-place":
            up = np.array([0.0, 0.0, self.lift_height - b[2]])
            pts = [side if self.wrong_contact else b, b + up, goal + up, goal]
            return KeypointPlan(np.array(pts), ("ee", "object", "object", "object"),
                                ("grasp", "above_block", "above_goal", "goal"), None, "oracle")
        raise ConfigError(f"OracleKeypointProposer: no oracle for task {task!r}; expected 'push' or 'pick-place'")

    def propose(self, context: Any) -> KeypointPlan:
        """The plan for `context` (a SceneContext or a TabletopEnv)."""
        scene = as_scene(context, self.image_size)
        gt = self.ground_truth(scene)
        top = scene.camera("top")
        px = pixel_round(top.project(gt.waypoints))
        if "side" in scene.cameras:
            side = scene.camera("side")
            pts = lift_two_views(px, top, pixel_round(side.project(gt.waypoints)), side)
        else:
            pts = lift_to_plane(px, top, gt.waypoints[:, 2])
        if self.noise > 0:
            low, high = (np.asarray(x, float) for x in scene.workspace)
            pts = pts + self.rng.normal(size=pts.shape) * self.noise * (high - low)
        return KeypointPlan(pts, gt.tracks, gt.labels, top.project(pts), "oracle", scene.instruction)


# ======================================================================================== VLM proposer
class ChatClient(Protocol):
    """A chat VLM (e.g. rlpt.rewards.http_vlm.OpenAIChatClient); raises RewardModelError(reason=...) on failure."""

    def chat(self, prompt: str, images: Sequence[np.ndarray] = (), *, temperature: float = 0.0,
             max_tokens: int = 256, system: str | None = None) -> str: ...


# The answer schema (keys of the JSON object the VLM returns).
ANSWER_SCHEMA = {
    "grasp_keypoint": "label P<i>: where the gripper first touches or grasps the object (tracked by the gripper)",
    "target_keypoint": "label Q<j>: where the object should end up (tracked by the object)",
    "pre_contact_tile": "grid tile (e.g. 'c3') the object passes through before the target, or null",
    "pre_contact_height": "height line name for the pre-contact tile, or null",
    "post_contact_tile": "grid tile the object moves through after reaching the target, or null",
    "post_contact_height": "height line name for the post-contact tile, or null",
}
_ROLES = ("grasp", "pre_contact", "target", "post_contact")  # waypoint order
_ROLE_TRACK = {"grasp": "ee", "pre_contact": "object", "target": "object", "post_contact": "object"}
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S | re.I)
_REFUSAL = re.compile(r"\b(I can(?:'|no)t|I cannot|I won't|I'm sorry|I am sorry|I'm unable|I am unable|"
                      r"unable to (?:help|assist|comply)|as an AI)\b", re.I)
_TILE = re.compile(r"^([a-z])\s*([0-9]+)$")


@dataclass
class Annotation:
    """The marked images and what the marks mean.

    top, side: annotated uint8 images (side is None without a side camera).
    keypoints: label ("P1".., "Q1"..) -> (pixel centre (2,), world point (3,) lifted from that pixel).
    grid_rect: (u0, v0, u1, v1) of the grid in the top view; grid: (columns, rows).
    heights: height line name -> world z.
    """

    top: np.ndarray
    side: np.ndarray | None
    keypoints: dict[str, tuple[np.ndarray, np.ndarray]]
    grid_rect: tuple[float, float, float, float]
    grid: tuple[int, int]
    heights: dict[str, float]
    top_camera: PinholeCamera

    def tile_center(self, tile: str) -> np.ndarray:
        """Top-view pixel centre of a tile like "c3" (column letter, row number from 1)."""
        m = _TILE.match(tile.strip().lower())
        cols, rows = self.grid
        if not m or not (0 <= ord(m.group(1)) - 97 < cols and 1 <= int(m.group(2)) <= rows):
            raise RewardModelError(f"unknown grid tile {tile!r} (columns a-{chr(96 + cols)}, rows 1-{rows})",
                                   reason="out_of_bounds")
        c, r = ord(m.group(1)) - 97, int(m.group(2)) - 1
        u0, v0, u1, v1 = self.grid_rect
        return np.array([u0 + (c + 0.5) * (u1 - u0) / cols, v0 + (r + 0.5) * (v1 - v0) / rows])


@dataclass
class KeypointPick:
    """One waypoint chosen in a VLM answer: its label ("P3", "c2@high"), top-view pixel (2,) and world point (3,)."""

    label: str
    pixel: np.ndarray
    point: np.ndarray


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _draw_dots(img: np.ndarray, marks: Mapping[str, np.ndarray], fill: tuple[int, int, int],
               center: np.ndarray | None = None) -> np.ndarray:
    """Labelled dots (black-outlined, `fill` colour) at pixel coordinates; labels sit radially outward from
    `center` (below a dot at the centre)."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(np.ascontiguousarray(img))
    draw = ImageDraw.Draw(im)
    h = img.shape[0]
    r, font = max(2, h // 100), _font(max(9, h // 28))
    for p in marks.values():
        x, y = int(np.floor(p[0])), int(np.floor(p[1]))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=(0, 0, 0))
    for label, p in marks.items():
        off = np.asarray(p, float) - (p if center is None else center)
        n = float(np.linalg.norm(off))
        off = off / n if n > 1e-6 else np.array([0.0, 1.0])
        x0, y0, x1, y1 = draw.textbbox((0, 0), label, font=font)
        tw, th = x1 - x0, y1 - y0
        c = np.asarray(p, float) + off * (r + 0.5 * max(tw, th) + 1)
        draw.text((c[0] - tw / 2 - x0, c[1] - th / 2 - y0), label, fill=fill, font=font, stroke_width=1,
                  stroke_fill=(0, 0, 0))
    return np.asarray(im)


class VLMKeypointProposer:
    """MOKA/KAGI mark-based prompting: a chat VLM picks keypoints, tiles and heights on marked images.

    The top view gets candidate dots P1..Pn on the object (its centre and `n_contour` points on its square contour,
    `contour_margin` outside it), Q1..Qm on the target (its centre and `n_target_ring` points `target_ring` m away),
    and a `grid` (columns a.., rows 1..) over the workspace; the side view gets horizontal lines at `heights`
    (name -> world z of the object's centre). The answer (see `ANSWER_SCHEMA`) becomes waypoints
    [grasp ("ee"), pre-contact, target, post-contact ("object")]: dots are lifted to the object's height, tiles to
    their height line. Malformed or invalid answers are re-asked (`retries` extra queries); with `samples` > 1,
    that many valid answers are combined by taking, per waypoint, the medoid (optional waypoints are kept when most
    answers have them). With `output_dir`, each call saves the marked views, the plan drawn on the top view and
    the prompt/answers/plan as JSON (`kagi_<n>_*`).
    """

    def __init__(self, client: ChatClient, *, image_size: int = 512, grid: tuple[int, int] = (5, 5),
                 heights: Mapping[str, float] | None = None, n_contour: int = 8, contour_margin: float = 0.01,
                 object_half: float = 0.02, n_target_ring: int = 4, target_ring: float = 0.03, retries: int = 2,
                 samples: int = 1, temperature: float | None = None, max_tokens: int = 512,
                 system: str | None = None, object_name: str = "block", target_name: str = "target",
                 output_dir: str | Path | None = None) -> None:
        if not hasattr(client, "chat"):
            raise ConfigError(f"VLMKeypointProposer: client must have a chat() method; got {type(client).__name__}")
        if samples < 1 or retries < 0 or not (1 <= grid[0] <= 26 and 1 <= grid[1] <= 26):
            raise ConfigError(f"VLMKeypointProposer: need samples >= 1, retries >= 0, 1..26 grid cells per side; got "
                              f"samples={samples}, retries={retries}, grid={grid}")
        self.client, self.image_size, self.grid = client, int(image_size), (int(grid[0]), int(grid[1]))
        self.heights = dict(heights or {"low": 0.02, "mid": 0.06, "high": 0.10})
        if not self.heights:
            raise ConfigError("VLMKeypointProposer: heights must name at least one line")
        self.n_contour, self.contour_margin = int(n_contour), float(contour_margin)
        self.object_half = float(object_half)
        self.n_target_ring, self.target_ring = int(n_target_ring), float(target_ring)
        self.retries, self.samples = int(retries), int(samples)
        self.temperature = (0.0 if samples == 1 else 0.7) if temperature is None else float(temperature)
        self.max_tokens, self.system = int(max_tokens), system
        self.object_name, self.target_name = object_name, target_name
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.calls = 0
        self.failures: Counter[str] = Counter()
        try:  # a client that takes `seed` gets distinct seeds per sample (so caches do not repeat one answer)
            self._seeded = "seed" in inspect.signature(client.chat).parameters
        except (TypeError, ValueError):
            self._seeded = False

    # ------------------------------------------------------------------------------------ marks
    def _candidates(self, scene: SceneContext) -> tuple[np.ndarray, np.ndarray, float]:
        pos, quat = scene.poses.get(self.object_name, (None, None))
        if pos is None or self.target_name not in scene.poses:
            raise ConfigError(f"VLMKeypointProposer: the scene needs poses {self.object_name!r} and "
                              f"{self.target_name!r}; has {sorted(scene.poses)}")
        b, yaw = np.asarray(pos, float), _yaw(quat)
        ang = 2 * np.pi * np.arange(self.n_contour) / max(self.n_contour, 1)
        sq = np.c_[np.cos(ang), np.sin(ang)]
        sq /= np.abs(sq).max(1, keepdims=True)  # onto the unit square's boundary
        c, s = np.cos(yaw), np.sin(yaw)
        ring = sq @ np.array([[c, s], [-s, c]]) * (self.object_half + self.contour_margin)
        obj = np.vstack([b, np.c_[b[:2] + ring, np.full(len(ring), b[2])]])
        t = scene.position(self.target_name)
        ang = 2 * np.pi * np.arange(self.n_target_ring) / max(self.n_target_ring, 1)
        tgt = np.vstack([t, np.c_[t[:2] + self.target_ring * np.c_[np.cos(ang), np.sin(ang)],
                                  np.full(len(ang), t[2])]])
        return obj, tgt, float(b[2])

    def annotate(self, context: Any) -> Annotation:
        """Render and mark the views of `context` (a SceneContext or a TabletopEnv)."""
        from PIL import Image, ImageDraw

        scene = as_scene(context, self.image_size)
        top = scene.camera("top")
        obj, tgt, z_obj = self._candidates(scene)
        keypoints: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        centres = {"P": top.project(obj[:1])[0], "Q": top.project(tgt[:1])[0]}
        h, w = top.size
        for prefix, pts in (("P", obj), ("Q", tgt)):
            uv = pixel_round(top.project(pts))
            inside = np.all(np.isfinite(uv), 1) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
            if not inside.any():
                raise RewardModelError(f"VLMKeypointProposer: no {prefix} candidate is inside the top view",
                                       reason="out_of_bounds")
            lifted = lift_to_plane(uv[inside], top, z_obj)  # targets: where the object's centre should be
            for i, (p, q) in enumerate(zip(uv[inside], lifted, strict=True)):
                keypoints[f"{prefix}{i + 1}"] = (p, q)
        # grid over the workspace's table-level footprint
        low, high = (np.asarray(x, float) for x in scene.workspace)
        corners = np.array([[x, y, 0.0] for x in (low[0], high[0]) for y in (low[1], high[1])])
        cuv = top.project(corners)
        if not np.all(np.isfinite(cuv)):
            raise RewardModelError("VLMKeypointProposer: the workspace is not in the top view", reason="out_of_bounds")
        rect = (*np.clip(cuv.min(0), 0, [w - 1, h - 1]), *np.clip(cuv.max(0), 0, [w - 1, h - 1]))
        rect = tuple(float(x) for x in rect)
        img = scene.image("top")
        for prefix, colour in (("P", (255, 220, 0)), ("Q", (0, 200, 255))):
            marks = {k: p for k, (p, _) in keypoints.items() if k[0] == prefix}
            img = _draw_dots(img, marks, colour, centres[prefix])
        im = Image.fromarray(img)
        draw, font = ImageDraw.Draw(im), _font(max(9, h // 22))
        cols, rows = self.grid
        u0, v0, u1, v1 = rect
        for i in range(cols + 1):
            x = u0 + i * (u1 - u0) / cols
            draw.line([(x, v0), (x, v1)], fill=(255, 255, 255), width=1)
        for j in range(rows + 1):
            y = v0 + j * (v1 - v0) / rows
            draw.line([(u0, y), (u1, y)], fill=(255, 255, 255), width=1)
        for i in range(cols):
            draw.text((u0 + (i + 0.4) * (u1 - u0) / cols, max(0.0, v0 - h // 20)), chr(97 + i), fill=(255, 255, 255),
                      font=font, stroke_width=1, stroke_fill=(0, 0, 0))
        for j in range(rows):
            draw.text((max(0.0, u0 - w // 24), v0 + (j + 0.3) * (v1 - v0) / rows), str(j + 1), fill=(255, 255, 255),
                      font=font, stroke_width=1, stroke_fill=(0, 0, 0))
        side_img = None
        if "side" in scene.cameras:
            side = scene.camera("side")
            sim = Image.fromarray(np.ascontiguousarray(scene.image("side")))
            sdraw = ImageDraw.Draw(sim)
            y_obj = float(obj[0, 1])
            for name, z in self.heights.items():
                (a, b) = side.project(np.array([[low[0], y_obj, z], [high[0], y_obj, z]]))
                if np.all(np.isfinite([a, b])):
                    sdraw.line([tuple(a), tuple(b)], fill=(255, 255, 0), width=1)
                    sdraw.text((min(a[0], b[0]), min(a[1], b[1]) - side.size[0] // 18), name, fill=(255, 255, 0),
                               font=font, stroke_width=1, stroke_fill=(0, 0, 0))
            side_img = np.asarray(sim)
        return Annotation(np.asarray(im), side_img, keypoints, rect, self.grid, dict(self.heights), top)

    # ---------------------------------------------------------------------------------- prompt
    def prompt(self, instruction: str, annotation: Annotation) -> str:
        """The question for the VLM (the images go with it: top view, then side view)."""
        cols, rows = annotation.grid
        p = [k for k in annotation.keypoints if k[0] == "P"]
        q = [k for k in annotation.keypoints if k[0] == "Q"]
        heights = ", ".join(f'"{k}"' for k in annotation.heights)
        schema = "\n".join(f'  "{k}": {v}' for k, v in ANSWER_SCHEMA.items())
        return (
            f"You plan the motion of a robot arm with a two-finger gripper. Task: {instruction or 'see the images'}.\n"
            f"Image 1 is a top-down view. Yellow dots {p[0]}..{p[-1]} are candidate points on the object to move; "
            f"blue dots {q[0]}..{q[-1]} are candidate points on the target location. A {cols}x{rows} grid covers "
            f"the workspace: columns a-{chr(96 + cols)} from left to right, rows 1-{rows} from top to bottom "
            "(a tile is named like 'c3').\n"
            f"Image 2 is a side view with horizontal height lines named {heights}.\n"
            "The gripper first touches the object at the grasp keypoint; the object then moves through the "
            "pre-contact tile (at its height) to the target keypoint, then through the post-contact tile. Use null "
            "for tiles (and their heights) the motion does not need, e.g. both for a push along the table.\n"
            "Think briefly step by step, then give one JSON object with these keys:\n"
            f"{schema}\n"
            f"Allowed labels: {', '.join(p + q)}. Allowed heights: {heights}."
        )

    # ----------------------------------------------------------------------------------- parsing
    def parse(self, text: str, annotation: Annotation) -> dict[str, KeypointPick]:
        """The waypoint picks (role -> label, top-view pixel, world point) of one answer.

        Raises RewardModelError: "empty" (no text), "refusal" (declines, no JSON), "malformed" (no JSON object or
        wrong keys/types), "out_of_bounds" (unknown label, tile or height).
        """
        ans = _extract_json(text)
        picks: dict[str, KeypointPick] = {}
        for role, prefix in (("grasp", "P"), ("target", "Q")):
            raw = ans.get(f"{role}_keypoint")
            if not isinstance(raw, str | int) or isinstance(raw, bool) or not str(raw).strip():
                raise RewardModelError(f"VLM answer: {role}_keypoint must be a label like {prefix}1; got {raw!r}",
                                       reason="malformed")
            label = re.sub(r"[\s\[\]()'\"]", "", str(raw)).upper()
            if label.isdigit():
                label = prefix + label
            if not label.startswith(prefix) or label not in annotation.keypoints:
                raise RewardModelError(f"VLM answer: unknown {role}_keypoint {raw!r}", reason="out_of_bounds")
            pixel, point = annotation.keypoints[label]
            picks[role] = KeypointPick(label, pixel, point)
        for role in ("pre_contact", "post_contact"):
            tile, height = ans.get(f"{role}_tile"), ans.get(f"{role}_height")
            if tile is None or (isinstance(tile, str) and tile.strip().lower() in ("", "none", "null")):
                continue
            if not isinstance(tile, str):
                raise RewardModelError(f"VLM answer: {role}_tile must be a tile name or null; got {tile!r}",
                                       reason="malformed")
            if not isinstance(height, str) or not height.strip():
                raise RewardModelError(f"VLM answer: {role}_height is required with a tile; got {height!r}",
                                       reason="malformed")
            name = height.strip().lower()
            if name not in annotation.heights:
                raise RewardModelError(f"VLM answer: unknown {role}_height {height!r}; allowed "
                                       f"{sorted(annotation.heights)}", reason="out_of_bounds")
            pixel = annotation.tile_center(tile)
            point = lift_to_plane(pixel[None], annotation.top_camera, annotation.heights[name])[0]
            picks[role] = KeypointPick(f"{tile.strip().lower()}@{name}", pixel, point)
        return picks

    # ----------------------------------------------------------------------------------- propose
    def propose(self, context: Any) -> KeypointPlan:
        """Ask the VLM (with retries / samples) and return the plan; raises RewardModelError with the last reason."""
        scene = as_scene(context, self.image_size)
        ann = self.annotate(scene)
        prompt = self.prompt(scene.instruction, ann)
        images = [ann.top] + ([] if ann.side is None else [ann.side])
        answers: list[str] = []
        reasons: list[str] = []
        valid: list[dict[str, KeypointPick]] = []
        for attempt in range(self.samples + self.retries):
            if len(valid) >= self.samples:
                break
            kwargs: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens,
                                      "system": self.system}
            if self._seeded and self.samples > 1:
                kwargs["seed"] = attempt
            try:
                text = self.client.chat(prompt, images, **kwargs)
                answers.append(text)
                valid.append(self.parse(text, ann))
                reasons.append("")
            except RewardModelError as err:
                reasons.append(err.reason)
                self.failures[err.reason] += 1
                log.info("VLMKeypointProposer: answer rejected (%s): %s", err.reason, err)
        self.calls += 1
        plan = None if not valid else self._combine(valid, scene.instruction)
        if self.output_dir is not None:
            self._save(scene, ann, prompt, answers, reasons, plan)
        if plan is None:
            raise RewardModelError(f"VLMKeypointProposer: no valid plan in {len(reasons)} answers (reasons: "
                                   f"{', '.join(reasons)})", reason=reasons[-1] or "malformed")
        return plan

    @staticmethod
    def _combine(valid: list[dict[str, KeypointPick]], instruction: str) -> KeypointPlan:
        picks: list[KeypointPick] = []
        tracks: list[str] = []
        for role in _ROLES:
            have = [v[role] for v in valid if role in v]
            if not have or 2 * len(have) < len(valid):  # optional waypoints: kept when at least half have them
                continue
            pts = np.array([p.point for p in have])
            dist = np.linalg.norm(pts[:, None] - pts[None], axis=-1).sum(1)
            picks.append(have[int(np.argmin(dist))])  # the medoid
            tracks.append(_ROLE_TRACK[role])
        return KeypointPlan(np.array([p.point for p in picks]), tuple(tracks), tuple(p.label for p in picks),
                            np.array([p.pixel for p in picks]), "vlm", instruction)

    def _save(self, scene: SceneContext, ann: Annotation, prompt: str, answers: list[str], reasons: list[str],
              plan: KeypointPlan | None) -> None:
        stem = self.output_dir / f"kagi_{self.calls:04d}"
        save_png(f"{stem}_top.png", ann.top)
        if ann.side is not None:
            save_png(f"{stem}_side.png", ann.side)
        if plan is not None:
            save_png(f"{stem}_plan.png", draw_plan(scene.image("top"), plan))
        write_json(f"{stem}.json", {"instruction": scene.instruction, "prompt": prompt, "answers": answers,
                                    "reasons": reasons, "plan": None if plan is None else plan.to_json()})


def _extract_json(text: str) -> dict[str, Any]:
    """The answer's JSON object: from markdown fences or anywhere in prose; the last one with "grasp_keypoint"."""
    if not isinstance(text, str) or not text.strip():
        raise RewardModelError("VLM answer is empty", reason="empty")
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    for chunk in [m.group(1) for m in _FENCE.finditer(text)] + [text]:
        chunk = re.sub(r",\s*([}\]])", r"\1", chunk)  # tolerate trailing commas
        for i, ch in enumerate(chunk):
            if ch != "{":
                continue
            try:
                obj, _ = decoder.raw_decode(chunk, i)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                found.append(obj)
        if found:
            break
    keyed = [o for o in found if "grasp_keypoint" in o]
    if keyed:
        return keyed[-1]
    if not found and _REFUSAL.search(text):
        raise RewardModelError(f"VLM refused: {text.strip()[:120]!r}", reason="refusal")
    raise RewardModelError(f"VLM answer has no JSON object with 'grasp_keypoint': {text.strip()[:120]!r}",
                           reason="malformed")


def draw_plan(image: np.ndarray, plan: KeypointPlan) -> np.ndarray:
    """The top view with the plan's waypoints (numbered, joined in order) drawn at `plan.pixels`."""
    from PIL import Image, ImageDraw

    if plan.pixels is None:
        return np.array(image)
    im = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(im)
    pts = [tuple(p) for p in plan.pixels if np.all(np.isfinite(p))]
    if len(pts) > 1:
        draw.line(pts, fill=(255, 0, 255), width=2)
    font, r = _font(max(9, image.shape[0] // 22)), max(3, image.shape[0] // 64)
    for i, (p, label) in enumerate(zip(plan.pixels, plan.labels, strict=True)):
        if np.all(np.isfinite(p)):
            draw.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], outline=(255, 0, 255), width=2)
            draw.text((p[0] + r + 1, p[1] + r), f"{i + 1}:{label}", fill=(255, 255, 255), font=font,
                      stroke_width=1, stroke_fill=(0, 0, 0))
    return np.asarray(im)


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write a uint8 (H, W, 3) image as PNG, atomically."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))


# ============================================================================================== rewards
def state_positions(**slices: slice | Sequence[int]) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """A position extractor: states (B, D) -> {name: (B, 3)} for each `name=slice` (e.g. ee=slice(0, 3))."""
    for name, sl in slices.items():
        if len(np.arange(64)[sl]) != 3:
            raise ConfigError(f"state_positions: {name} must select 3 values; got {sl}")

    def extract(states: np.ndarray) -> dict[str, np.ndarray]:
        return {name: np.asarray(states[:, sl], float) for name, sl in slices.items()}

    return extract


@dataclass
class _Episode:
    start: np.ndarray | None = None  # w_0: the first waypoint's tracked position at the first scored state
    k: int = 0
    phi: float = 0.0  # Phi of the previous state (0 before the first)
    new: bool = True  # no score call yet in this episode


class KeypointProgressReward(RewardModel):
    """KAGI's dense waypoint reward (research notes §3.3), bounded below the success reward of the -1/0 convention.

    Progress k_t in {0..K} counts the waypoints reached in order: waypoint k+1 is reached when its tracked position
    (`plan.tracks`: the end-effector for the grasp/contact point, the object for the waypoints after contact) is
    within `delta` of it; several may be reached in one step, and progress never goes back within an episode.
    d_t = |p_t - w_{k+1}| / max(|w_k - w_{k+1}|, delta) clipped to [0, 1], with w_0 the tracked position at the
    episode's first scored state, and d_t = 1 once k_t = K. With Phi = (k_t + 1 - d_t) / (K + 1) in [0, K/(K+1)]:

      dense (default):     r = -1 + Phi                                          in [-1, -1/(K+1)]
      potential=True:      r = sparse_reward + beta * (gamma * Phi(s') - Phi(s))  (Ng et al. 1999; Phi = 0 before
                           the first state; `sparse_reward=0` with RewardWrapper(mode="add") adds the shaping to
                           the env's own reward)

    The plan is fixed (`plan`) or comes from `proposer.propose(context())` at the first `score` of an episode
    (`refresh="episode"`) or of a new instruction (`refresh="task"`); plans are kept per instruction. (At the first
    score, not at `reset()`: RewardWrapper resets the model before the env, so the new scene exists only then.)
    A proposer that fails keeps the last good plan for the instruction; before any, every item is invalid with the
    proposer's reason (the wrapper then falls back, e.g. to the env's sparse reward). `positions` maps states (B, D) to
    {"ee": (B, 3), "object": (B, 3)}: a callable or a dict of slices (default: TabletopEnv's state layout).
    """

    needs = ("states",)
    stateful = True

    def __init__(self, plan: KeypointPlan | None = None, *, proposer: KeypointProposer | None = None,
                 context: Any = None, refresh: str = "episode", delta: float = 0.03,
                 positions: Callable[[np.ndarray], dict[str, np.ndarray]] | Mapping[str, slice] | None = None,
                 potential: bool = False, beta: float = 1.0, gamma: float = 0.99, sparse_reward: float = -1.0) -> None:
        if plan is None and proposer is None:
            raise ConfigError("KeypointProgressReward: give a plan or a proposer")
        if proposer is not None and context is None:
            raise ConfigError("KeypointProgressReward: a proposer needs a context (a SceneContext, an env, or a "
                              "zero-argument callable returning one)")
        if refresh not in ("episode", "task"):
            raise ConfigError(f"KeypointProgressReward: refresh must be 'episode' or 'task'; got {refresh!r}")
        if delta <= 0:
            raise ConfigError(f"KeypointProgressReward: delta must be > 0; got {delta}")
        self.fixed_plan, self.proposer, self.context, self.refresh = plan, proposer, context, refresh
        self.delta, self.potential = float(delta), bool(potential)
        self.beta, self.gamma, self.sparse_reward = float(beta), float(gamma), float(sparse_reward)
        if positions is None:
            positions = TABLETOP_POSITIONS
        self.positions = positions if callable(positions) else state_positions(**dict(positions))
        self.plans: dict[str, KeypointPlan] = {}
        self.plan_failures: Counter[str] = Counter()
        self._plan_reason = "exception"
        self._ep = _Episode()

    @property
    def progress(self) -> int:
        """Waypoints reached so far in the current episode."""
        return self._ep.k

    def reset(self) -> None:
        self._ep = _Episode()

    def current_plan(self, instruction: str = "") -> KeypointPlan | None:
        """The plan used for `instruction` (None when no proposal has succeeded yet)."""
        return self.plans.get(instruction, self.fixed_plan)

    def _live_context(self) -> Any:
        """The proposer's context now: `context()` when it is a callable, else `context` itself."""
        return self.context() if callable(self.context) else self.context

    def _update_plan(self, instruction: str, state: np.ndarray) -> None:
        if self.proposer is None:
            return
        if self.refresh == "task" and instruction in self.plans:
            return
        if isinstance(self.context, RecordedScenes):  # relabelling: the scene the episode's first state shows
            ctx = self.context.at(state)
        else:
            ctx = self._live_context()
        try:
            self.plans[instruction] = self.proposer.propose(ctx)
        except RewardModelError as err:
            self._plan_reason = err.reason
            self.plan_failures[err.reason] += 1
            log.warning("KeypointProgressReward: the proposer failed (%s: %s); %s", err.reason, err,
                        "keeping the last plan" if self.current_plan(instruction) else "items are invalid")

    def _advance(self, pos: Mapping[str, np.ndarray], plan: KeypointPlan) -> float:
        """Advance the episode's progress with one state's positions {track: (3,)} and return its Phi."""
        ep, W, K = self._ep, plan.waypoints, len(plan)
        if ep.start is None:
            ep.start = np.asarray(pos[plan.tracks[0]], float).copy()
        while ep.k < K and np.linalg.norm(pos[plan.tracks[ep.k]] - W[ep.k]) <= self.delta:
            ep.k += 1
        if ep.k == K:
            d = 1.0
        else:
            prev = ep.start if ep.k == 0 else W[ep.k - 1]
            seg = max(float(np.linalg.norm(prev - W[ep.k])), self.delta)
            d = min(1.0, float(np.linalg.norm(pos[plan.tracks[ep.k]] - W[ep.k])) / seg)
        return (ep.k + 1 - d) / (K + 1)

    def score(self, query: RewardQuery) -> RewardOutput:
        if query.states is None:
            raise ConfigError("KeypointProgressReward: the query has no states (it needs ('states',))")
        if self._ep.new:
            self._ep.new = False
            self._update_plan(query.instruction, np.asarray(query.states)[0])
        plan = self.current_plan(query.instruction)
        n = len(query)
        if plan is None:
            return RewardOutput.failed(n, self._plan_reason)
        pos = self.positions(np.asarray(query.states, float))
        missing = set(plan.tracks) - set(pos)
        if missing:
            raise ConfigError(f"KeypointProgressReward: the positions extractor gives {sorted(pos)}; the plan also "
                              f"tracks {sorted(missing)}")
        reward = np.zeros(n, np.float32)
        for i in range(n):
            phi = self._advance({k: v[i] for k, v in pos.items()}, plan)
            if self.potential:
                reward[i] = self.sparse_reward + self.beta * (self.gamma * phi - self._ep.phi)
            else:
                reward[i] = -1.0 + phi
            self._ep.phi = phi
        return RewardOutput(reward, np.ones(n, bool))

    def for_dataset(self) -> KeypointProgressReward:
        """A copy that plans each recorded episode on the scene its first state shows (`RecordedScenes`), with the
        same proposer, settings and positions; a fixed plan needs no scene, so that model is returned as is."""
        if self.proposer is None or isinstance(self.context, RecordedScenes):
            return self
        base = as_scene(self._live_context(), getattr(self.proposer, "image_size", 256))
        out = copy.copy(self)
        out.context = RecordedScenes(base)
        out.plans, out.plan_failures, out._ep = {}, Counter(), _Episode()
        return out

    def describe(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "delta": self.delta, "potential": self.potential, "beta": self.beta,
                "gamma": self.gamma, "sparse_reward": self.sparse_reward, "refresh": self.refresh,
                "proposer": None if self.proposer is None else type(self.proposer).__name__,
                "plans": {k: p.to_json() for k, p in self.plans.items()},
                "fixed_plan": None if self.fixed_plan is None else self.fixed_plan.to_json()}


class StateSuccessModel(RewardModel):
    """A success model from a function of states (B, D) -> bool (B,) (e.g. ground truth in experiments).
    Reward: 0 on success, -1 otherwise (the -1/0 convention)."""

    needs = ("states",)

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray]) -> None:
        self.fn = fn

    def score(self, query: RewardQuery) -> RewardOutput:
        if query.states is None:
            raise ConfigError("StateSuccessModel: the query has no states")
        s = np.asarray(self.fn(np.asarray(query.states)), bool).reshape(-1)
        return RewardOutput(s.astype(np.float32) - 1.0, np.ones(len(s), bool), s, s.astype(np.float32))


def tabletop_block_success(states: np.ndarray, *, tol: float = 0.04, require_release: bool = False) -> np.ndarray:
    """TabletopEnv push / pick-place success from state vectors (B, 30): block within `tol` of the target in xy and
    resting on the table (and, with `require_release`, the gripper open), as rlpt.envs.tabletop.tasks."""
    s = np.asarray(states, float)
    block, target = s[:, TABLETOP_POSITIONS["object"]], s[:, _TABLETOP_TARGET]
    ok = (np.linalg.norm(block[:, :2] - target[:, :2], axis=1) < tol) & (block[:, 2] < 0.03)
    return ok & (s[:, _TABLETOP_GRIPPER] > 0.05) if require_release else ok


class SuccessOverrideReward(RewardModel):
    """KAGI's rule: `success_reward` (0: success, terminal in the -1/0 convention) where the success model says
    success, else the dense model's reward. Both models see every item, in order (stateful dense models stay in
    step). Invalid success answers fall back to the dense reward; their reasons are counted in `success_fallbacks`.

    success: a RewardModel that fills `RewardOutput.success` (e.g. rlpt's classifier), or a function of states
    (B, D) -> bool (B,) (wrapped in StateSuccessModel).
    """

    def __init__(self, dense: RewardModel, success: RewardModel | Callable[[np.ndarray], np.ndarray], *,
                 success_reward: float = 0.0) -> None:
        self.dense = dense
        self.success_model = success if isinstance(success, RewardModel) else StateSuccessModel(success)
        self.success_reward = float(success_reward)
        self.needs = tuple(dict.fromkeys((*dense.needs, *self.success_model.needs)))
        self.batch_size = min(dense.batch_size, self.success_model.batch_size)
        self.stateful = dense.stateful or self.success_model.stateful
        self.success_fallbacks: Counter[str] = Counter()

    def reset(self) -> None:
        self.dense.reset()
        self.success_model.reset()

    def score(self, query: RewardQuery) -> RewardOutput:
        d = self.dense(query)
        s = self.success_model(query)
        if s.success is None:
            raise ConfigError(f"SuccessOverrideReward: {type(self.success_model).__name__} gives no success judgement")
        self.success_fallbacks.update(r or "exception" for r, v in zip(s.reasons, s.valid, strict=True) if not v)
        hit = s.valid & s.success
        reward = np.where(hit, self.success_reward, d.reward)
        reasons = ["" if h else r for h, r in zip(hit, d.reasons, strict=True)]
        return RewardOutput(reward, hit | d.valid, hit, s.prob, reasons)

    def for_dataset(self) -> SuccessOverrideReward:
        return SuccessOverrideReward(self.dense.for_dataset(), self.success_model.for_dataset(),
                                     success_reward=self.success_reward)

    def success_metrics(self) -> dict[str, float]:
        """reward_model/success_fallback_<reason> counts (success answers that fell back to the dense reward)."""
        return {f"reward_model/success_fallback_{k}": float(v) for k, v in sorted(self.success_fallbacks.items())}

    def describe(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "success_reward": self.success_reward, "dense": self.dense.describe(),
                "success": self.success_model.describe()}
