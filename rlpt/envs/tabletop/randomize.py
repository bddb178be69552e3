"""Appearance randomization for the tabletop scene (for video pretraining and visual robustness).

Only rendering-related model fields change (colours, material choice, lights, camera poses); masses,
sizes and frictions never do, so the dynamics and the success predicates stay the same.
"""

from __future__ import annotations

import colorsys

import mujoco
import numpy as np

TABLE_MATERIALS = ("table_plain", "table_checker", "table_grid", "table_gradient", "table_noise")
FLOOR_MATERIALS = ("floor_plain", "floor_grid")
OBJECT_MATERIALS = ("arm", "arm_joint", "finger", "cabinet", "drawer", "handle")
STATIC_CAMERAS = ("front", "side", "top")
# Static cameras added later; jittered after every other group so that a seed's draws for the groups above (and
# so every look a seed gave before) stay the same.
LATER_CAMERAS = ("workspace",)


def _hsv(rng: np.random.Generator, s=(0.5, 1.0), v=(0.4, 1.0), alpha: float = 1.0) -> np.ndarray:
    h = rng.uniform()
    return np.array([*colorsys.hsv_to_rgb(h, rng.uniform(*s), rng.uniform(*v)), alpha])


def _small_rotation(rng: np.random.Generator, max_angle: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    ang = rng.uniform(-max_angle, max_angle)
    return np.r_[np.cos(ang / 2), np.sin(ang / 2) * axis]


class Appearance:
    """Holds the scene's default look and applies randomized looks on top of it.

    ``target_visual`` ("ball", "disc" or "none") selects which target marker is drawn; it is reapplied
    after every randomization.
    """

    def __init__(self, model: mujoco.MjModel) -> None:
        self.model = model
        m = model
        self._geom = {n: m.geom(n).id for n in ("table", "floor", "block", "target_disc", "target_ball")}
        self._mat = {n: m.material(n).id for n in (*TABLE_MATERIALS, *FLOOR_MATERIALS, *OBJECT_MATERIALS)}
        self._cams = [m.camera(n).id for n in (*STATIC_CAMERAS, "wrist")]
        self._later_cams = [m.camera(n).id for n in LATER_CAMERAS]
        self.target_visual = "ball"
        self._defaults = {
            "geom_rgba": m.geom_rgba.copy(), "geom_matid": m.geom_matid.copy(), "mat_rgba": m.mat_rgba.copy(),
            "light_pos": m.light_pos.copy(), "light_dir": m.light_dir.copy(),
            "light_diffuse": m.light_diffuse.copy(), "light_ambient": m.light_ambient.copy(),
            "cam_pos": m.cam_pos.copy(), "cam_quat": m.cam_quat.copy(),
            "head_ambient": m.vis.headlight.ambient.copy(), "head_diffuse": m.vis.headlight.diffuse.copy(),
        }

    def restore(self) -> None:
        """Back to the look defined in the MJCF file."""
        m, dflt = self.model, self._defaults
        for key in ("geom_rgba", "geom_matid", "mat_rgba", "light_pos", "light_dir", "light_diffuse",
                    "light_ambient", "cam_pos", "cam_quat"):
            getattr(m, key)[:] = dflt[key]
        m.vis.headlight.ambient[:] = dflt["head_ambient"]
        m.vis.headlight.diffuse[:] = dflt["head_diffuse"]
        self.apply_target_visibility()

    def apply_target_visibility(self) -> None:
        """Show only the target marker of the current task (alpha 0 hides a geom)."""
        m, dflt = self.model, self._defaults["geom_rgba"]
        for kind in ("disc", "ball"):
            gid = self._geom[f"target_{kind}"]
            m.geom_rgba[gid, 3] = dflt[gid, 3] if self.target_visual == kind else 0.0

    def randomize(self, rng: np.random.Generator, textures: bool = True, colours: bool = True,
                  lighting: bool = True, camera: bool = True, background: bool = True) -> None:
        """Start from the defaults and randomize the selected groups, drawing from ``rng`` in a fixed order.

        textures: table material (plain, checker, grid, gradient, noise).
        colours: block, target, arm, fingers, cabinet, drawer and handle colours.
        lighting: light positions, directions and intensities, headlight ambient/diffuse.
        camera: static cameras moved by up to 3 cm and turned by up to 3 degrees (wrist: 1 cm, 2 deg); the
            "workspace" camera's draws come last, after the background's.
        background: table tint, floor material and colour.
        """
        self.restore()
        m = self.model
        if textures:
            m.geom_matid[self._geom["table"]] = self._mat[TABLE_MATERIALS[rng.integers(len(TABLE_MATERIALS))]]
        if colours:
            m.geom_rgba[self._geom["block"]] = _hsv(rng)
            target = _hsv(rng, alpha=0.9)
            m.geom_rgba[self._geom["target_disc"]] = target
            m.geom_rgba[self._geom["target_ball"]] = target
            for name in OBJECT_MATERIALS:
                m.mat_rgba[self._mat[name]] = _hsv(rng, s=(0.0, 0.8), v=(0.1, 0.95))
        if lighting:
            m.light_pos[:] = self._defaults["light_pos"] + rng.uniform(-0.4, 0.4, m.light_pos.shape)
            m.light_dir[:] = self._defaults["light_dir"] + rng.uniform(-0.3, 0.3, m.light_dir.shape)
            m.light_dir[:] /= np.linalg.norm(m.light_dir, axis=1, keepdims=True)
            m.light_diffuse[:] = self._defaults["light_diffuse"] * rng.uniform(0.5, 1.5, (m.nlight, 1))
            m.vis.headlight.ambient[:] = rng.uniform(0.15, 0.5) * np.ones(3)
            m.vis.headlight.diffuse[:] = rng.uniform(0.25, 0.6) * np.ones(3)
        if camera:
            for i, cid in enumerate(self._cams):
                wrist = i == len(self._cams) - 1
                self._jitter_camera(rng, cid, *((0.01, np.deg2rad(2)) if wrist else (0.03, np.deg2rad(3))))
        if background:
            table_mat = m.geom_matid[self._geom["table"]]
            m.mat_rgba[table_mat] = np.r_[rng.uniform(0.4, 1.0, 3), 1.0]
            m.geom_matid[self._geom["floor"]] = self._mat[FLOOR_MATERIALS[rng.integers(len(FLOOR_MATERIALS))]]
            m.mat_rgba[m.geom_matid[self._geom["floor"]]] = _hsv(rng, s=(0.0, 0.6), v=(0.1, 0.8))
        if camera:
            for cid in self._later_cams:
                self._jitter_camera(rng, cid, 0.03, np.deg2rad(3))
        self.apply_target_visibility()

    def _jitter_camera(self, rng: np.random.Generator, cid: int, shift: float, turn: float) -> None:
        """Move camera ``cid`` from its default by up to ``shift`` m per axis and turn it by up to ``turn`` rad."""
        m = self.model
        m.cam_pos[cid] = self._defaults["cam_pos"][cid] + rng.uniform(-shift, shift, 3)
        q = np.zeros(4)
        mujoco.mju_mulQuat(q, _small_rotation(rng, turn), self._defaults["cam_quat"][cid])
        m.cam_quat[cid] = q
