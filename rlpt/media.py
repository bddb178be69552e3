"""mp4 video writing (H.264, yuv420p, via PyAV's bundled FFmpeg: plays in browsers) and reading (OpenCV).

Frames are RGB uint8 (T, H, W, 3) on both sides; OpenCV's BGR order stays inside this module.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
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
    """Write RGB uint8 frames ((T, H, W, 3) array or a list of (H, W, 3)) to an H.264 mp4 that browsers play
    (yuv420p, `faststart`). yuv420p needs even sides, so an odd height or width gets one replicated edge row or
    column. The file appears atomically (temp file, then rename). Returns the path written.
    """
    import av

    array = _as_frames(frames)
    if not np.isfinite(fps) or fps <= 0:
        raise RlptError(f"write_video: fps must be > 0, got {fps}")
    pad_h, pad_w = array.shape[1] % 2, array.shape[2] % 2
    if pad_h or pad_w:
        array = np.pad(array, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    height, width = array.shape[1:3]

    def write(tmp: str) -> None:
        with av.open(tmp, mode="w", format="mp4", options={"movflags": "faststart"}) as container:
            stream = container.add_stream("libx264", rate=Fraction(float(fps)).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": "20", "preset": "veryfast"}
            for frame in array:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())  # flush the encoder

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
