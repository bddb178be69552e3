"""Headless OpenGL setup for MuJoCo and dm_control rendering.

MuJoCo, gymnasium's MuJoCo renderer and dm_control read `MUJOCO_GL` (and PyOpenGL reads
`PYOPENGL_PLATFORM`) once, when they first create a GL context or import their render module.
`setup_offscreen_rendering()` must therefore run before any of them renders.
"""

from __future__ import annotations

import ctypes.util
import os

_BACKEND: str | None = None


def _has_library(name: str) -> bool:
    return ctypes.util.find_library(name) is not None


def setup_offscreen_rendering() -> str:
    """Choose a headless GL backend when there is no display; return the backend in use.

    Returns "egl", "osmesa", "glfw" or "default" (rlpt left the choice to MuJoCo).

    Leaves an explicit user choice (`MUJOCO_GL` already set) and a desktop session (`DISPLAY`
    set) alone. Otherwise sets `MUJOCO_GL=egl` when libEGL is present, else `osmesa`, and sets
    `PYOPENGL_PLATFORM` to match. Idempotent: later calls return the first call's answer.
    """
    global _BACKEND
    if _BACKEND is not None:
        return _BACKEND
    backend = os.environ.get("MUJOCO_GL")
    if backend is None and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        if _has_library("EGL"):
            backend = "egl"
        elif _has_library("OSMesa"):
            backend = "osmesa"
        if backend is not None:
            os.environ["MUJOCO_GL"] = backend
    if backend in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    _BACKEND = backend or "default"
    return _BACKEND
