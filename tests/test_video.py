"""write_video / read_video round trips and errors; check_env's video."""

from __future__ import annotations

import numpy as np
import pytest

from rlpt.envs import check_env
from rlpt.errors import DatasetDtypeError, DatasetFileNotFoundError, DatasetShapeError
from rlpt.media import read_video, write_video


def _clip(t: int = 12, h: int = 32, w: int = 48) -> np.ndarray:
    """Smooth moving gradients (codec-friendly), (T, H, W, 3) uint8."""
    y, x = np.mgrid[0:h, 0:w]
    frames = [
        np.stack([(x * 5 + i * 8) % 256, (y * 7 + i * 4) % 256, np.full_like(x, 40 + 10 * i)], -1)
        for i in range(t)
    ]
    return np.asarray(frames, dtype=np.uint8)


def test_round_trip_array_and_list(tmp_path):
    clip = _clip()
    for frames in (clip, list(clip)):
        path = write_video(tmp_path / "clip.mp4", frames, fps=20)
        video = read_video(path)
        assert video.shape == clip.shape and video.dtype == np.uint8
        # lossy codec: close, in RGB order (a BGR mix-up would make the blue channel far off)
        assert np.abs(video.astype(int) - clip.astype(int)).mean() < 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # no temp files left behind


def test_single_frame_and_nested_folder(tmp_path):
    path = write_video(tmp_path / "a" / "b" / "one.mp4", _clip(t=1, h=16, w=16))
    assert read_video(path).shape == (1, 16, 16, 3)


@pytest.mark.parametrize(
    ("frames", "error", "message"),
    [
        (np.zeros((4, 16, 16, 3), np.float32), DatasetDtypeError, "uint8"),
        (np.zeros((4, 16, 16), np.uint8), DatasetShapeError, r"\(T, H, W, 3\)"),
        (np.zeros((4, 16, 16, 4), np.uint8), DatasetShapeError, r"\(T, H, W, 3\)"),
        (np.zeros((0, 16, 16, 3), np.uint8), DatasetShapeError, "T, H, W > 0"),
        ([], DatasetShapeError, "at least one frame"),
        ([np.zeros((16, 16, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)], DatasetShapeError, "one shape"),
        ([np.zeros((16, 16, 3), np.int64)], DatasetDtypeError, "uint8"),
    ],
)
def test_bad_frames_raise(tmp_path, frames, error, message):
    with pytest.raises(error, match=message):
        write_video(tmp_path / "bad.mp4", frames)
    assert not list(tmp_path.iterdir())


def test_read_missing_file(tmp_path):
    with pytest.raises(DatasetFileNotFoundError, match="does not exist"):
        read_video(tmp_path / "nope.mp4")


def test_check_env_writes_pixel_video(tmp_path):
    path = tmp_path / "videos" / "cheetah.mp4"
    report = check_env("dmc/cheetah-run", pixels=True, episodes=1, video_path=path, time_limit=10)
    assert report["ok"], report["checks"]
    assert report["video"] == str(path)
    video = read_video(path)
    assert video.shape == (11, 64, 64, 3)  # reset frame + 10 steps
    assert video.std() > 0


def test_check_env_video_of_state_env_uses_render(tmp_path):
    path = tmp_path / "hopper.mp4"
    report = check_env("mujoco/Hopper-v5", episodes=1, video_path=path, time_limit=5)
    assert report["observation_space"].startswith("Box(-inf, inf, (11,)")
    assert read_video(path).shape == (report["episode_lengths"][0] + 1, 64, 64, 3)


def test_videos_are_h264_yuv420p_that_browsers_play(tmp_path):
    import av

    path = write_video(tmp_path / "clip.mp4", _clip(t=10, h=31, w=45), fps=12.5)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.height, stream.width) == (32, 46)  # odd sides padded to even ones, as yuv420p needs
        assert abs(float(stream.average_rate) - 12.5) < 1e-6
        assert sum(1 for _ in container.decode(stream)) == 10
    video = read_video(path)
    assert np.abs(video[:, :31, :45].astype(int) - _clip(t=10, h=31, w=45).astype(int)).mean() < 12
