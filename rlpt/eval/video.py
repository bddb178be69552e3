"""mp4 video writing and reading with OpenCV (`mp4v`, the codec every opencv wheel has).

Frames are RGB uint8 (T, H, W, 3) on both sides; OpenCV's BGR order stays inside this module.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from rlpt.errors import DatasetDtypeError, DatasetFileNotFoundError, DatasetShapeError, RlptError
from rlpt.utils import atomic_write


def _as_frames(frames: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Validate and stack frames into one (T, H, W, 3) uint8 array."""
    if isinstance(frames, np.ndarray):
        array = frames
    else:
        frames = list(frames)
        if not frames:
            raise DatasetShapeError("write_video: expected at least one frame, got 0")
        shapes = {np.shape(f) for f in frames}
        if len(shapes) != 1:
            raise DatasetShapeError(f"write_video: all frames must have one shape (H, W, 3), got {sorted(shapes)}")
        dtypes = {np.asarray(f).dtype for f in frames}
        if dtypes != {np.dtype(np.uint8)}:
            raise DatasetDtypeError(f"write_video: frames must be uint8, got {sorted(map(str, dtypes))}")
        array = np.stack(frames)
    if array.ndim != 4 or array.shape[-1] != 3 or 0 in array.shape:
        raise DatasetShapeError(
            f"write_video: expected frames of shape (T, H, W, 3) with T, H, W > 0, got {array.shape}"
        )
    if array.dtype != np.uint8:
        raise DatasetDtypeError(f"write_video: frames must be uint8 (0-255 RGB), got {array.dtype}")
    return array


def write_video(path: str | os.PathLike, frames: Sequence[np.ndarray] | np.ndarray, fps: float = 30) -> Path:
    """Write RGB uint8 frames ((T, H, W, 3) array or a list of (H, W, 3)) to an mp4 file.

    The file appears atomically (temp file, then rename). Returns the path written.
    """
    array = _as_frames(frames)
    if not np.isfinite(fps) or fps <= 0:
        raise RlptError(f"write_video: fps must be > 0, got {fps}")
    height, width = array.shape[1:3]

    def write(tmp: str) -> None:
        # OpenCV picks the container from the extension, so encode to "<tmp>.mp4" first.
        tmp_mp4 = tmp + ".mp4"
        writer = cv2.VideoWriter(tmp_mp4, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
        try:
            if not writer.isOpened():
                raise RlptError(f"write_video: OpenCV could not open an mp4v writer for {path} ({width}x{height})")
            for frame in array:
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
        try:
            os.replace(tmp_mp4, tmp)
        finally:
            if os.path.exists(tmp_mp4):
                os.unlink(tmp_mp4)

    return atomic_write(path, write)


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Read a video file into an RGB uint8 array (T, H, W, 3)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFileNotFoundError(f"read_video: {path} does not exist")
    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        if not capture.isOpened():
            raise RlptError(f"read_video: OpenCV cannot open {path} as a video")
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if not frames:
        raise DatasetShapeError(f"read_video: {path} holds no decodable frames")
    return np.stack(frames)
