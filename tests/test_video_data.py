"""rlpt.data.video (clip loaders for video files, frame folders, SSv2/Ego4D lists, manifests) and `rlpt video`."""

from __future__ import annotations

import json
import logging
import pickle

import cv2
import numpy as np
import pytest
import torch

from rlpt.cli import main
from rlpt.collect.video_render import render_videos
from rlpt.data.video import VideoClipStream, open_videos
from rlpt.errors import ConfigError, DatasetFileNotFoundError, VideoDataError
from rlpt.media import write_video

BITS = 8


def _frame(index: int, video: int = 0, h: int = 64, w: int = 64) -> np.ndarray:
    """A frame whose 8 vertical bars spell ``index`` (bits 0-5) and ``video`` (bits 6-7) in black and white:
    survives mp4/jpeg compression and area resizing. Red tint so an RGB/BGR swap shows."""
    code = (index % 64) | (video << 6)
    f = np.zeros((h, w, 3), np.uint8)
    for b in range(BITS):
        if (code >> b) & 1:
            f[:, b * w // BITS:(b + 1) * w // BITS] = 255
    f[:2, :, 0] = 200  # top rows: red in RGB
    return f


def _decode(frame: np.ndarray) -> tuple[int, int]:
    """(index, video) of a frame made by `_frame` (after any resizing)."""
    w = frame.shape[1]
    col = frame[2:].mean(axis=(0, 2))
    code = sum(1 << b for b in range(BITS) if col[b * w // BITS:(b + 1) * w // BITS].mean() > 127)
    return code & 63, code >> 6


def _video(path, n: int, video: int = 0, size=(64, 64)):
    return write_video(path, np.stack([_frame(i, video, *size) for i in range(n)]), fps=20)


def _frame_folder(folder, n: int, video: int = 0, name=lambda i: f"{i + 1:06d}.jpg"):
    folder.mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(folder / name(i)), cv2.cvtColor(_frame(i, video), cv2.COLOR_RGB2BGR))
    return folder


def _check_clips(batch, index, clips, offsets=None):
    """Every clip holds consecutive frames ``stride`` apart from its start, of the video it says."""
    assert batch.dtype == np.uint8 and batch.shape[1:] == (clips.clip_len, *clips.image_size, 3)
    for clip, (i, start) in zip(batch, index, strict=True):
        first = start + (offsets or {}).get(i, 0)
        decoded = [_decode(f) for f in clip]
        assert [d[0] for d in decoded] == [(first + t * clips.stride) % 64 for t in range(clips.clip_len)]
        assert len({d[1] for d in decoded}) == 1
        assert clip[:, 0, :, 0].mean() > clip[:, 0, :, 2].mean()  # red on top: RGB order


def test_mp4_and_webm_folder_clip_sampling(tmp_path):
    _video(tmp_path / "a.mp4", 40, video=1)
    _video(tmp_path / "sub" / "b.mp4", 63, video=2)
    writer = cv2.VideoWriter(str(tmp_path / "c.webm"), cv2.VideoWriter_fourcc(*"VP80"), 20.0, (64, 64))
    has_webm = writer.isOpened()
    for i in range(30):
        writer.write(cv2.cvtColor(_frame(i, 3), cv2.COLOR_RGB2BGR))
    writer.release()
    clips = open_videos(tmp_path, clip_len=6, stride=3, image_size=32)
    assert len(clips) == 2 + has_webm and not clips.skipped
    batch, index = clips.sample(16, np.random.default_rng(0), return_index=True)
    assert batch.shape == (16, 6, 32, 32, 3)
    _check_clips(batch, index, clips)
    videos = {_decode(clip[0])[1] for clip in batch}
    assert videos == ({1, 2, 3} if has_webm else {1, 2})
    for i, start in index:  # every clip fits in its video
        assert 0 <= start <= clips.frames(i) - clips.span
    # the same generator state gives the same clips; a reused capture seeks backwards correctly
    again = clips.sample(16, np.random.default_rng(0))
    assert np.array_equal(batch, again)
    _check_clips(*clips.sample(8, np.random.default_rng(1), return_index=True), clips)


def test_frame_folders_numbered_unpadded_and_named(tmp_path):
    root = tmp_path / "frames"
    _frame_folder(root / "v0", 30, 0)  # SSv2: 000001.jpg ...
    _frame_folder(root / "v1", 25, 1, name=lambda i: f"{i}.png")  # 0.png ... 24.png (sorted as numbers)
    _frame_folder(root / "v2", 22, 2, name=lambda i: f"img_{i}_x.png")  # arbitrary names, natural order
    clips = open_videos(root, clip_len=5, stride=4, image_size=64)
    assert len(clips) == 3
    batch, index = clips.sample(12, np.random.default_rng(0), return_index=True)
    _check_clips(batch, index, clips)
    assert {_decode(c[0])[1] for c in batch} == {0, 1, 2}
    one = open_videos(root / "v1", clip_len=25)  # a single frame folder
    assert len(one) == 1 and [_decode(f)[0] for f in one.read_clip(0, 0)] == list(range(25))


def test_resize_is_area_interpolation_in_rgb(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "v"
    folder.mkdir()
    frames = rng.integers(0, 256, (4, 48, 80, 3), dtype=np.uint8)
    for i, f in enumerate(frames):  # png: lossless
        cv2.imwrite(str(folder / f"{i:06d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    clip = open_videos(folder, clip_len=4, image_size=(24, 32)).read_clip(0, 0)
    expected = np.stack([cv2.resize(f, (32, 24), interpolation=cv2.INTER_AREA) for f in frames])
    assert clip.shape == (4, 24, 32, 3) and np.array_equal(clip, expected)
    cropped = open_videos(folder, clip_len=4, image_size=16, center_crop=True).read_clip(0, 0)
    expected = np.stack([cv2.resize(f[:, 16:64], (16, 16), interpolation=cv2.INTER_AREA) for f in frames])
    assert np.array_equal(cropped, expected)


def test_ssv2_list_file(tmp_path):
    frames = tmp_path / "20bn-frames-64"
    for v, n in enumerate((30, 40, 12)):
        _frame_folder(frames / f"{100 + v}", n, v)
    (tmp_path / "train_video_folder.txt").write_text("100 30 5\n101 35 7\n102 12 5\n999 50 1\n")
    clips = open_videos(tmp_path / "train_video_folder.txt", clip_len=8, stride=2)
    # 999 is missing; 102 has 12 frames < 15 needed
    assert len(clips) == 2
    reasons = dict(clips.skipped)
    assert reasons[str(frames / "999")].startswith("missing") and "too short" in reasons[str(frames / "102")]
    batch, index = clips.sample(10, np.random.default_rng(0), return_index=True)
    _check_clips(batch, index, clips)
    by_path = {clips.entry(i)["path"]: clips.entry(i) for i, _ in index}
    assert by_path[str(frames / "101")]["frames"] == 35 and by_path[str(frames / "101")]["label"] == "7"
    assert all(start <= 35 - 15 for _, start in index)  # the list's count (35 < 40) bounds the starts


def test_ego4d_list_file(tmp_path):
    _video(tmp_path / "videos" / "long.mp4", 60, video=1)
    _frame_folder(tmp_path / "frames" / "f0", 30, 2)
    (tmp_path / "clips.csv").write_text(
        "clip_id,path,start,end\nc0,videos/long.mp4,10,30\nc1,frames/f0,5,-1\nc2,videos/long.mp4,40,None\n")
    clips = open_videos(tmp_path / "clips.csv", clip_len=4, stride=2)
    assert len(clips) == 3 and not clips.skipped
    assert [clips.frames(i) for i in range(3)] == [20, 25, 20]
    batch, index = clips.sample(20, np.random.default_rng(0), return_index=True)
    offsets = {i: clips.entry(i)["start"] for i in range(3)}
    _check_clips(batch, index, clips, offsets)
    for clip, (i, _) in zip(batch, index, strict=True):
        first = _decode(clip[0])[0]
        assert {0: 10 <= first <= 30 - 7, 1: 5 <= first, 2: 40 <= first <= 60 - 7}[i]
    with pytest.raises(VideoDataError, match=r"clips2.txt:2: expected 'clip_id path start end'"):
        (tmp_path / "clips2.txt").write_text("c0 videos/long.mp4 0 10\nc1 videos/long.mp4 zero 10\n")
        open_videos(tmp_path / "clips2.txt")


def test_manifest_states_and_write_manifest_round_trip(tmp_path):
    root = tmp_path / "set"
    _video(root / "x" / "a.mp4", 30, video=1)
    _video(root / "x" / "b.mp4", 26, video=2)
    np.save(root / "x" / "a.npy", np.arange(30 * 4, dtype=np.float32).reshape(30, 4))
    (root / "manifest.jsonl").write_text(
        json.dumps({"path": "x/a.mp4", "frames": 30, "domain": "walker", "states": "x/a.npy"}) + "\n"
        + json.dumps({"path": "x/b.mp4", "frames": 26, "domain": "tabletop-push"}) + "\n"
        + json.dumps({"path": "x/gone.mp4", "frames": 26, "domain": "walker"}) + "\n")
    clips = open_videos(root, clip_len=5)  # a folder holding a manifest reads the manifest (no file access)
    assert len(clips) == 3 and not clips.skipped
    info = clips.describe()  # opens every file
    assert len(clips) == 2 and info["domains"] == {"tabletop-push": 1, "walker": 1}
    assert clips.skipped == [(str(root / "x" / "gone.mp4"), "missing: no such file")]
    states = clips.states(0)
    assert states.shape == (30, 4) and states[3, 0] == 12 and clips.states(1) is None
    batch, index = clips.sample(6, np.random.default_rng(0), return_index=True)
    _check_clips(batch, index, clips)

    folder_clips = open_videos(root / "x", clip_len=5)  # the same videos, probed
    written = folder_clips.write_manifest(tmp_path / "index" / "manifest.jsonl")
    reopened = open_videos(written, clip_len=5, probe="lazy")
    assert sorted(reopened.frames(i) for i in range(2)) == [26, 30]
    assert np.array_equal(reopened.read_clip(0, 3), folder_clips.read_clip(0, 3))
    with pytest.raises(VideoDataError, match=r"bad.jsonl:2"):
        (tmp_path / "bad.jsonl").write_text('{"path": "x/a.mp4"}\n{"frames": 3}\n')
        open_videos(tmp_path / "bad.jsonl")


def test_corrupt_short_and_missing_videos_are_skipped_and_reported(tmp_path, caplog):
    good = _video(tmp_path / "good.mp4", 40, video=1)
    _video(tmp_path / "good2.mp4", 30, video=2)
    _video(tmp_path / "short.mp4", 5)
    (tmp_path / "garbage.mp4").write_bytes(b"not a video" * 100)
    (tmp_path / "empty.webm").write_bytes(b"")
    (tmp_path / "half.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _frame_folder(tmp_path / "frames_short", 3)
    with caplog.at_level(logging.WARNING, logger="rlpt.data.video"):
        clips = open_videos(tmp_path, clip_len=10)
    assert len(clips) == 2
    reasons = {p.split("/")[-1]: r for p, r in clips.skipped}
    assert set(reasons) == {"short.mp4", "garbage.mp4", "empty.webm", "half.mp4", "frames_short"}
    assert reasons["short.mp4"].startswith("too short: 5 frames < 10")
    assert reasons["garbage.mp4"].startswith(("unreadable", "corrupt"))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "skipped 5 of 7 videos" in warnings[0]
    batch, index = clips.sample(8, np.random.default_rng(0), return_index=True)
    _check_clips(batch, index, clips)


def test_truncated_video_is_cut_back_and_resampled(tmp_path):
    _video(tmp_path / "v" / "a.mp4", 20, video=1)  # the manifest claims 60 frames
    _video(tmp_path / "v" / "b.mp4", 30, video=2)
    lines = [{"path": "v/a.mp4", "frames": 60}, {"path": "v/b.mp4", "frames": 30}]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    clips = open_videos(tmp_path, clip_len=8, stride=2)
    batch, index = clips.sample(40, np.random.default_rng(0), return_index=True)
    _check_clips(batch, index, clips)
    assert clips.frames(0) <= 20 and not clips.skipped  # cut back to the decodable frames, still usable
    assert all(start <= 20 - clips.span for i, start in index if i == 0)
    # a clip that cannot fit once truncated makes the video unusable; nothing usable -> a clear error
    (tmp_path / "m2.jsonl").write_text(json.dumps({"path": "v/a.mp4", "frames": 60}) + "\n")
    lone = open_videos(tmp_path / "m2.jsonl", clip_len=25)
    with pytest.raises(VideoDataError, match="no usable video"):
        lone.sample(2, np.random.default_rng(0))
    assert lone.skipped and lone.skipped[0][1].startswith("truncated")


def test_nothing_usable_raises_clear_errors(tmp_path):
    with pytest.raises(DatasetFileNotFoundError, match="does not exist"):
        open_videos(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoDataError, match="found no videos"):
        open_videos(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.mp4").write_bytes(b"\x00" * 64)
    _video(bad / "b.mp4", 4)
    with pytest.raises(VideoDataError, match=r"no usable video .*2 skipped"):
        open_videos(bad, clip_len=10)
    lazy = open_videos(bad, clip_len=10, probe="lazy")  # found out only when sampled
    assert len(lazy) == 2
    with pytest.raises(VideoDataError, match="no usable video"):
        lazy.sample(1, np.random.default_rng(0))
    assert len(lazy) == 0 and len(lazy.skipped) == 2
    with pytest.raises(VideoDataError, match="clip_len and stride"):
        open_videos(bad, clip_len=0)


def test_stream_pickle_and_iter_clips(tmp_path):
    _video(tmp_path / "a.mp4", 24, video=1)
    _frame_folder(tmp_path / "f", 12, 2)
    clips = open_videos(tmp_path, clip_len=6, stride=2, image_size=32)
    clips.sample(2, np.random.default_rng(0))  # opens a capture
    copy = pickle.loads(pickle.dumps(clips))  # what DataLoader workers receive
    assert np.array_equal(copy.read_clip(0, 4), clips.read_clip(0, 4))
    loader = torch.utils.data.DataLoader(VideoClipStream(clips, seed=0), batch_size=3)
    batch = next(iter(loader))
    assert batch.shape == (3, 6, 32, 32, 3) and batch.dtype == torch.uint8
    seen = [(i, s) for i, s, _ in clips.iter_clips()]
    assert seen == [(0, 0), (0, 11), (1, 0)]  # span 11: 24 frames -> 2 clips, 12 frames -> 1


def test_video_render_cli_writes_a_manifest_open_videos_reads(tmp_path, capsys):
    args = ["--quiet", "video", "render", "--domains", "cheetah", "tabletop-hand-push", "--clips", "2",
            "--frames", "6", "--size", "32", "--seed", "3", "--texture-seeds", "1000:1100"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "a" / "manifest.jsonl").read_text().splitlines()]
    assert [r["domain"] for r in rows] == ["cheetah", "tabletop-hand-push"]
    for r in rows:
        assert r["frames"] == 6 and r["fps"] > 0 and 1000 <= r["texture_seed"] < 1100
        states = np.load(tmp_path / "a" / r["states"])
        assert states.shape == (6, sum(r["state_layout"].values())) and np.isfinite(states).all()
    assert np.abs(np.diff(np.load(tmp_path / "a" / rows[1]["states"])[:, -3:], axis=0)).sum() > 0  # hand moves
    clips = open_videos(tmp_path / "a", clip_len=6, image_size=32)
    assert len(clips) == 2 and not clips.skipped
    frames = np.stack([clips.read_clip(i, 0) for i in range(2)])
    assert frames.shape == (2, 6, 32, 32, 3) and frames.std() > 10
    assert np.abs(np.diff(frames.astype(int), axis=1)).mean() > 0.5  # something moves

    assert main([*args, "--out", str(tmp_path / "b")]) == 0  # deterministic given the arguments
    again = open_videos(tmp_path / "b", clip_len=6, image_size=32)
    for r in rows:  # the simulation and the looks repeat exactly
        assert np.array_equal(np.load(tmp_path / "b" / r["states"]), np.load(tmp_path / "a" / r["states"]))
    # The pixels repeat up to a few levels: after the rest of the suite has run in the same process, the re-rendered
    # hand-push clip differs by 1-3 levels in part of its pixels (mean 0.7), which a fresh process never shows (an
    # OpenGL state left by earlier renderers is suspected; not found yet).
    diff = np.abs(np.stack([again.read_clip(i, 0) for i in range(2)]).astype(int) - frames.astype(int))
    assert diff.mean() < 2 and diff.max() <= 32
    assert main([*args, "--out", str(tmp_path / "a")]) == 2  # exists: needs --force

    capsys.readouterr()
    assert main(["video", "info", str(tmp_path / "a"), "--clip-len", "4"]) == 0
    out = capsys.readouterr().out
    assert "2 usable videos, 0 skipped" in out and "cheetah 1" in out
    assert main(["video", "render", "--out", str(tmp_path / "c"), "--domains", "nosuchdomain"]) == 2


def test_video_render_cameras_option(tmp_path):
    args = ["--quiet", "video", "render", "--domains", "tabletop-push", "--clips", "2", "--frames", "3", "--size", "32",
            "--seed", "1"]
    assert main([*args, "--out", str(tmp_path / "ws"), "--cameras", "workspace"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "ws" / "manifest.jsonl").read_text().splitlines()]
    assert [r["camera"] for r in rows] == ["workspace", "workspace"]
    assert json.loads((tmp_path / "ws" / "render.json").read_text())["command"].endswith("--cameras workspace")
    assert main([*args, "--out", str(tmp_path / "front"), "--cameras", "front"]) == 0
    ws = open_videos(tmp_path / "ws", clip_len=3, image_size=32).read_clip(0, 0)
    front = open_videos(tmp_path / "front", clip_len=3, image_size=32).read_clip(0, 0)
    assert np.abs(ws.astype(int) - front.astype(int)).mean() > 5  # another view of the same clip
    assert main([*args, "--out", str(tmp_path / "bad"), "--cameras", "wrist"]) == 2  # not a static camera
    with pytest.raises(ConfigError, match="--cameras"):
        render_videos(tmp_path / "bad2", domains=["tabletop-push"], clips=1, frames=2, size=16, cameras=[])
