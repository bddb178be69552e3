"""Video clip datasets for action-free pretraining (ContextWM, V-PTR): index on open, decode on demand.

`open_videos(source, clip_len=25, stride=1, image_size=64)` accepts

* a folder of video files (``.mp4``, ``.webm``, ``.avi``, ``.mkv``, ``.mov``, ``.m4v``; searched recursively),
* a folder of per-video frame folders (``000001.jpg, 000002.jpg, ...`` as Something-Something-v2 frames are
  extracted, ``0.jpg, 1.jpg, ...``, or any names: sorted naturally; jpg/jpeg/png), or one frame folder,
* a Something-Something-v2-style list file, one ``video_id num_frames class_idx`` line per video (ContextWM's
  ``train_video_folder.txt``); each id is a frame folder or a ``<id>.webm``/``.mp4`` file in the list's
  folder or in one of its sub-folders (found from the first ids), or in ``frames_root``,
* an Ego4D-style list file, one ``clip_id path start end`` line per clip (frame indices, ``end`` exclusive,
  ``-1``/``None`` for "to the end"; ``path`` is a video file or frame folder, relative to the list's folder
  or absolute; a header line and ``#`` comments are skipped; fields split on whitespace or commas),
* a ``manifest.jsonl`` written by ``rlpt video render`` (or `VideoClips.write_manifest`), or a folder holding
  one: one JSON object per video with ``path`` (relative to the manifest) and ``frames``, plus any metadata
  (``domain``, ``texture_seed``, ``states``, ...),
* a list of any of these.

Only an index is kept in memory (path, first frame, frame count and a manifest's metadata line: a few hundred
bytes per video; a 100k-line manifest opens in a few seconds into ~45 MB), never the frames. Lists and
manifests are indexed without touching the files. Frame counts missing from the source (a plain folder of
videos) are probed when the set is opened (up to ``PROBE_EAGER_LIMIT`` videos, about 2 ms each) or lazily on
first use; ``clips.probe(verify=True)`` (run by ``rlpt video info``) opens every file.

`VideoClips.sample` draws a video uniformly, then a uniform start, and decodes only the frames it needs: the
decoder moves forward with ``grab()`` (decode without converting) over gaps of up to ``GRAB_MAX_GAP`` frames
and seeks (``CAP_PROP_POS_FRAMES``) otherwise; on 256x256 mp4 a grab costs ~0.2-0.3 ms and a seek ~5-8 ms
(benchmarks/video_loader.py). A few captures stay open in a small LRU cache.

A missing, corrupt, unreadable or too-short video is skipped, recorded in ``clips.skipped`` as
``(path, reason)`` and summarised in one warning (at open; of those found later, the first is warned about).
A video that fails part-way is truncated to the frames that decode, and the clip is drawn again. Only when
nothing usable remains does it raise `rlpt.errors.VideoDataError`.

Decoding uses OpenCV. The opencv-python wheels bundle FFmpeg, which reads mp4 and webm (checked with MPEG-4
part 2 mp4, VP8 and VP9 webm; frame-accurate seeks). A build without FFmpeg cannot read webm: such files are
skipped with that reason.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from rlpt.errors import DatasetFileNotFoundError, VideoDataError

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v")
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
MANIFEST_NAME = "manifest.jsonl"
GRAB_MAX_GAP = 24  # frames; a longer forward gap is crossed by a seek (measured: benchmarks/video_loader.py)
PROBE_EAGER_LIMIT = 2000  # videos whose frame count is unknown: probe at open up to this many, else lazily

_VIDEO, _FRAMES = 0, 1
_UNKNOWN, _BAD = -1, -2
_NUMBERED = re.compile(r"^(.*?)(\d+)(\.[A-Za-z]+)$")
_NATURAL = re.compile(r"(\d+)")

PathLike = str | os.PathLike


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in _NATURAL.split(name)]


def _frame_pattern(names: Sequence[str]) -> tuple[int, tuple | list[str]]:
    """(count, pattern) for the image files among ``names``.

    The pattern is ``(prefix, first, width, ext)`` when the names are contiguous numbers (``000001.jpg`` or
    ``1.jpg``): compact for 100k folders; otherwise the naturally sorted list of names.
    """
    images = [n for n in names if n.lower().endswith(IMAGE_EXTS)]
    matches = [_NUMBERED.match(n) for n in images]
    if images and all(matches):
        prefixes = {m.group(1) for m in matches}
        exts = {m.group(3) for m in matches}
        if len(prefixes) == 1 and len(exts) == 1:
            digits = [m.group(2) for m in matches]
            numbers = sorted(int(d) for d in digits)
            widths = {len(d) for d in digits}
            if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
                if len(widths) == 1:
                    return len(images), (prefixes.pop(), numbers[0], widths.pop(), exts.pop())
                if all(d == str(int(d)) for d in digits):  # unpadded: 1.jpg ... 120.jpg
                    return len(images), (prefixes.pop(), numbers[0], 0, exts.pop())
    return len(images), sorted(images, key=_natural_key)


def _frame_name(pattern: tuple | list[str], k: int) -> str:
    if isinstance(pattern, tuple):
        prefix, first, width, ext = pattern
        return f"{prefix}{str(first + k).zfill(width)}{ext}"
    return pattern[k]


def _ffmpeg_note(path: str) -> str:
    try:
        from cv2 import videoio_registry

        has_ffmpeg = cv2.CAP_FFMPEG in videoio_registry.getBackends()
    except Exception:  # noqa: BLE001 - very old OpenCV: no registry, say nothing
        return ""
    if has_ffmpeg:
        return ""
    return (f"; this OpenCV build has no FFmpeg backend, so it cannot decode {Path(path).suffix or 'this'} files"
            " (the opencv-python wheels from PyPI bundle FFmpeg)")


def _open_failure(path: str) -> str:
    if not os.path.exists(path):
        return "missing: no such file"
    return f"unreadable: OpenCV cannot open it as a video{_ffmpeg_note(path)}"


def _as_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


class _IndexBuilder:
    """Collects index rows while a source is parsed."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.kinds: list[int] = []
        self.starts: list[int] = []
        self.counts: list[int] = []
        self.labels: list[str | None] = []
        self.metas: list[str | None] = []  # a manifest's line, kept as text (a parsed dict costs ~5x more)
        self.meta_roots: list[int] = []  # index into ``roots``: the manifest's folder, -1 for none
        self.roots: list[str] = []
        self.patterns: dict[int, tuple | list[str]] = {}
        self.skipped: list[tuple[str, str]] = []

    def add(self, path: str, kind: int, start: int = 0, count: int = _UNKNOWN, label: str | None = None,
            meta: str | None = None, root: int = -1, pattern: tuple | list[str] | None = None) -> None:
        if pattern is not None:
            self.patterns[len(self.paths)] = pattern
        self.paths.append(path)
        self.kinds.append(kind)
        self.starts.append(int(start))
        self.counts.append(int(count))
        self.labels.append(label)
        self.metas.append(meta)
        self.meta_roots.append(root)

    def add_path(self, path: str, start: int = 0, end: int | None = None, count: int | None = None,
                 **kwargs: Any) -> None:
        """Add a video file (by its extension) or a frame folder (anything else). Existence is checked when
        the video is first probed or read, so opening a 100k-line list costs no file-system calls."""
        kind = _VIDEO if path.lower().endswith(VIDEO_EXTS) else _FRAMES
        if count is None:
            count = _UNKNOWN if end is None else int(end) - int(start)
        self.add(path, kind, start, count, **kwargs)


def _add_folder(b: _IndexBuilder, root: Path) -> None:
    """Index every video file and every folder holding images under ``root`` (frame folders are leaves)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort(key=_natural_key)
        count, pattern = _frame_pattern(filenames)
        if count:
            b.add(dirpath, _FRAMES, 0, count, pattern=pattern)
            dirnames[:] = []  # a frame folder is one video: do not look inside it
        for name in sorted(filenames, key=_natural_key):
            if name.lower().endswith(VIDEO_EXTS):
                b.add(os.path.join(dirpath, name), _VIDEO)


def _add_manifest(b: _IndexBuilder, path: Path) -> None:
    root = str(path.parent)
    b.roots.append(root)
    root_id = len(b.roots) - 1
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise VideoDataError(f"{path}:{lineno}: not a JSON object ({e.msg}); expected one JSON object per "
                                     'line such as {"path": "clips/000000.mp4", "frames": 50}') from None
            if not isinstance(row, dict) or not isinstance(row.get("path"), str):
                raise VideoDataError(f"{path}:{lineno}: expected a JSON object with a string 'path' key, got "
                                     f"{line[:80]!r}")
            try:
                start = int(row.get("start", 0))
                end = None if row.get("end") is None else int(row["end"])
                count = None if row.get("frames") is None or end is not None else int(row["frames"])
            except (TypeError, ValueError):
                raise VideoDataError(f"{path}:{lineno}: 'frames', 'start' and 'end' must be integers, got "
                                     f"{line[:120]!r}") from None
            label = row.get("label")
            extra = len(row) > 1 + sum(k in row for k in ("frames", "start", "end", "label"))
            b.add_path(os.path.join(root, row["path"]), start=start, end=end, count=count,
                       label=None if label is None else str(label), meta=line if extra else None, root=root_id)


def _ssv2_root(list_path: Path, ids: list[str], frames_root: PathLike | None) -> Path:
    """The folder holding the SSv2 ids: ``frames_root``, the list's folder or one of its sub-folders."""
    if frames_root is not None:
        return Path(frames_root)
    parent = list_path.parent
    candidates = [parent] + sorted((p for p in parent.iterdir() if p.is_dir()), key=lambda p: _natural_key(p.name))
    probe = ids[:5]
    for root in candidates:
        if any(_ssv2_path(root, i) is not None for i in probe):
            return root
    return parent


def _ssv2_path(root: Path, video_id: str) -> Path | None:
    p = root / video_id
    if p.is_dir():
        return p
    for ext in VIDEO_EXTS:
        if (root / (video_id + ext)).is_file():
            return root / (video_id + ext)
    return None


def _add_list(b: _IndexBuilder, path: Path, frames_root: PathLike | None) -> None:
    rows: list[tuple[int, list[str]]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = [x.strip() for x in line.split(",")] if "," in line else line.split()
            rows.append((lineno, fields))
    if not rows:
        raise VideoDataError(f"{path}: the list file is empty; expected 'video_id num_frames class_idx' "
                             "(Something-Something-v2) or 'clip_id path start end' (Ego4D-style) lines")

    def is_ego(fields: list[str]) -> bool:
        return len(fields) == 4 and _as_int(fields[2]) is not None and (
            _as_int(fields[3]) is not None or fields[3].lower() in ("none", ""))

    def is_ssv2(fields: list[str]) -> bool:
        return len(fields) in (2, 3) and _as_int(fields[1]) is not None

    if not (is_ego(rows[0][1]) or is_ssv2(rows[0][1])) and len(rows) > 1:
        rows = rows[1:]  # a header line such as "clip_id path start end"
    ego = is_ego(rows[0][1])
    if ego:
        root = path.parent
        for lineno, fields in rows:
            if not is_ego(fields):
                raise VideoDataError(f"{path}:{lineno}: expected 'clip_id path start end' (4 fields, integer "
                                     f"frame indices, end exclusive or -1/None) like the lines above, got {fields}")
            clip_id, rel, start, end_text = fields
            end = _as_int(end_text)
            end = None if end is None or end < 0 else end
            if end is not None and end <= int(start):
                raise VideoDataError(f"{path}:{lineno}: clip {clip_id!r} has end {end} <= start {start}")
            b.add_path(str(root / rel), start=int(start), end=end, label=clip_id)
        return
    for lineno, fields in rows:
        if not is_ssv2(fields):
            raise VideoDataError(f"{path}:{lineno}: expected 'video_id num_frames class_idx' (Something-Something"
                                 f"-v2 style) like the lines above, got {fields}")
    root = _ssv2_root(path, [fields[0] for _, fields in rows], frames_root)
    for lineno, fields in rows:
        video = _ssv2_path(root, fields[0])
        if video is None:
            b.skipped.append((str(root / fields[0]), f"missing: no frame folder or video file ({path}:{lineno})"))
            continue
        label = fields[2] if len(fields) == 3 and fields[2].lower() != "none" else None
        b.add_path(str(video), count=int(fields[1]), label=label)


def _add_source(b: _IndexBuilder, source: PathLike, frames_root: PathLike | None) -> None:
    path = Path(source).expanduser()
    if not path.exists():
        raise DatasetFileNotFoundError(
            f"open_videos: {path} does not exist; expected a folder of videos or frame folders, a list file "
            f"or a {MANIFEST_NAME}")
    if path.is_dir():
        if (path / MANIFEST_NAME).is_file():
            _add_manifest(b, path / MANIFEST_NAME)
        else:
            _add_folder(b, path)
    elif path.suffix.lower() in VIDEO_EXTS:
        b.add(str(path), _VIDEO)
    elif path.suffix.lower() == ".jsonl":
        _add_manifest(b, path)
    else:
        _add_list(b, path, frames_root)


class VideoClips:
    """An index of videos and a clip sampler that decodes on demand. Build it with `open_videos`.

    ``len(clips)``: videos not known to be unusable (exact once every frame count is known; see `probe`).
    ``clips.skipped``: ``(path, reason)`` for each missing, unreadable, corrupt or too-short video.
    Frames come out RGB uint8 ``(T, H, W, 3)``, resized with area interpolation.
    """

    def __init__(self, builder: _IndexBuilder, sources: list[str], clip_len: int = 25, stride: int = 1,
                 image_size: int | tuple[int, int] = 64, min_frames: int | None = None, center_crop: bool = False,
                 max_open: int = 4) -> None:
        if int(clip_len) < 1 or int(stride) < 1:
            raise VideoDataError(f"open_videos: clip_len and stride must be >= 1, got clip_len={clip_len}, "
                                 f"stride={stride}")
        hw = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
        if len(hw) != 2 or min(int(s) for s in hw) < 1:
            raise VideoDataError(f"open_videos: image_size must be a positive int or (H, W), got {image_size!r}")
        self.sources = sources
        self.clip_len, self.stride = int(clip_len), int(stride)
        self.image_size: tuple[int, int] = (int(hw[0]), int(hw[1]))
        self.span = (self.clip_len - 1) * self.stride + 1  # frames one clip covers
        self.min_frames = max(self.span, int(min_frames or 0))
        self.center_crop = bool(center_crop)
        self.max_open = max(1, int(max_open))
        self._paths = builder.paths
        self._kinds = np.asarray(builder.kinds, np.int8)
        self._starts = np.asarray(builder.starts, np.int64)
        self._counts = np.asarray(builder.counts, np.int64)
        self._labels = builder.labels
        self._metas = builder.metas
        self._meta_roots = builder.meta_roots
        self._roots = builder.roots
        self._patterns = builder.patterns
        self.skipped: list[tuple[str, str]] = list(builder.skipped)
        self._n_unindexed = len(builder.skipped)  # listed but missing: skipped before indexing
        self._caps: OrderedDict[int, list] = OrderedDict()  # index -> [cv2.VideoCapture, next frame position]
        self._usable: np.ndarray | None = None
        self._warned = False
        for i in np.flatnonzero((self._counts >= 0) & (self._counts < self.min_frames)):
            self._mark_bad(int(i), self._short_reason(int(self._counts[i])))

    # ------------------------------------------------------------------------------- index
    def __len__(self) -> int:
        return int(np.count_nonzero(self._counts != _BAD))

    @property
    def num_indexed(self) -> int:
        """Videos in the index, usable or not; valid video indices are ``range(num_indexed)``. (Ids of an SSv2 list
        with no frame folder or video file are never indexed: they are only in ``skipped``.)"""
        return len(self._paths)

    def __repr__(self) -> str:
        h, w = self.image_size
        return (f"VideoClips({len(self)} videos, {len(self.skipped)} skipped, clip_len={self.clip_len}, "
                f"stride={self.stride}, image_size={h}x{w})")

    def _short_reason(self, count: int) -> str:
        return (f"too short: {count} frames < {self.min_frames} needed (clip_len {self.clip_len}, stride "
                f"{self.stride})")

    def _mark_bad(self, i: int, reason: str) -> None:
        self._counts[i] = _BAD
        self.skipped.append((self._paths[i], reason))
        self._usable = None
        self._patterns.pop(i, None)
        cap = self._caps.pop(i, None)
        if cap is not None:
            cap[0].release()

    def skipped_summary(self) -> str:
        """One line: how many videos were skipped and why (counts per reason), or '' when none were."""
        if not self.skipped:
            return ""
        kinds = Counter(reason.split(":", 1)[0] for _, reason in self.skipped)
        why = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
        return (f"skipped {len(self.skipped)} of {len(self._paths) + self._n_unindexed} videos ({why}); "
                f"e.g. {self.skipped[0][0]}: {self.skipped[0][1]}; see clips.skipped")

    def _warn_skipped(self, where: str) -> None:
        if self.skipped:
            log.warning("%s: %s", where, self.skipped_summary())

    def frames(self, i: int) -> int | None:
        """Usable frames of video ``i`` (probing it if needed), or None if it is unusable."""
        count = int(self._counts[i])
        if count == _UNKNOWN:
            count = self._probe_one(i)
        return None if count < 0 else count

    def probe(self, verify: bool = False, quiet: bool | None = None) -> VideoClips:
        """Read every unknown frame count now (about 2 ms per video file); makes ``len`` exact. With ``verify``
        also open the videos whose count a list or manifest gave (finds missing and corrupt files). Returns self."""
        todo = np.flatnonzero(self._counts != _BAD if verify else self._counts == _UNKNOWN)
        if todo.size:
            from rlpt.runs import progress

            quiet = True if quiet is None and todo.size < 500 else quiet
            for i in progress(todo.tolist(), desc="probe videos", quiet=quiet):
                self._probe_one(int(i))
        return self

    def _probe_one(self, i: int) -> int:
        path = self._paths[i]
        if self._kinds[i] == _FRAMES:
            try:
                count, pattern = _frame_pattern(os.listdir(path))
            except FileNotFoundError:
                self._mark_bad(i, "missing: no such frame folder")
                return _BAD
            except NotADirectoryError:
                self._mark_bad(i, f"unreadable: neither a video file ({', '.join(VIDEO_EXTS)}) nor a frame folder")
                return _BAD
            except OSError as e:
                self._mark_bad(i, f"unreadable: {e.strerror or e}")
                return _BAD
            count -= int(self._starts[i])
        else:
            cap = cv2.VideoCapture(path)
            try:
                if not cap.isOpened():
                    self._mark_bad(i, _open_failure(path))
                    return _BAD
                count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
                if not cap.read()[0]:
                    self._mark_bad(i, "corrupt: no decodable frame")
                    return _BAD
                if count <= 0:  # container without a frame count: count by decoding
                    count = 1
                    while cap.grab():
                        count += 1
            finally:
                cap.release()
            count -= int(self._starts[i])
            pattern = None
        known = int(self._counts[i])
        if known >= 0:  # a list gave the count: trust the smaller one
            count = min(count, known)
        if count < self.min_frames:
            self._mark_bad(i, self._short_reason(max(count, 0)))
            return _BAD
        self._counts[i] = count
        if pattern is not None:
            self._patterns[i] = pattern
        return count

    def entry(self, i: int) -> dict[str, Any]:
        """What the index knows about video ``i``: path, first frame, frame count, label and metadata."""
        count = int(self._counts[i])
        return {"path": self._paths[i], "start": int(self._starts[i]),
                "frames": None if count < 0 else count, "usable": count != _BAD,
                "label": self._labels[i], **self.meta(i)}

    def meta(self, i: int) -> dict[str, Any]:
        """Metadata of video ``i`` from a manifest (domain, texture_seed, states path, ...); {} if none."""
        text = self._metas[i]
        if text is None:
            return {}
        meta = {k: v for k, v in json.loads(text).items() if k not in ("path", "frames", "start", "end", "label")}
        if isinstance(meta.get("states"), str) and self._meta_roots[i] >= 0:
            meta["states"] = os.path.join(self._roots[self._meta_roots[i]], meta["states"])
        return meta

    def usable_indices(self) -> np.ndarray:
        """Indices of the videos not known to be unusable, (N,) int64."""
        if self._usable is None:
            self._usable = np.flatnonzero(self._counts != _BAD)
        return self._usable

    def states(self, i: int) -> np.ndarray | None:
        """The per-frame physics states of video ``i`` (``states`` .npy of a render manifest, memory-mapped),
        (frames, state_dim) float32; None when the source has none."""
        path = self.meta(i).get("states")
        return None if path is None else np.load(path, mmap_mode="r")

    # ------------------------------------------------------------------------------ sampling
    def sample_index(self, batch_size: int, rng: np.random.Generator) -> list[tuple[int, int]]:
        """Draw ``batch_size`` (video index, start frame) pairs: a uniform usable video, then a uniform start
        such that the clip (``span`` frames) fits. Probes unknown videos it draws."""
        out: list[tuple[int, int]] = []
        while len(out) < batch_size:
            usable = self.usable_indices()
            if usable.size == 0:
                raise VideoDataError(self._nothing_usable("sample"))
            i = int(usable[rng.integers(usable.size)])
            count = self.frames(i)
            if count is None:
                self._warn_lazily()
                continue
            out.append((i, int(rng.integers(0, count - self.span + 1))))
        return out

    def sample(self, batch_size: int, rng: np.random.Generator,
               return_index: bool = False) -> np.ndarray | tuple[np.ndarray, list[tuple[int, int]]]:
        """A batch of clips, uint8 (B, T, H, W, 3) with T = clip_len frames ``stride`` apart.

        A clip whose video fails to decode is replaced by a fresh draw (the video is truncated or skipped).
        With ``return_index`` also returns the (video index, start frame) of each clip.
        """
        h, w = self.image_size
        out = np.empty((batch_size, self.clip_len, h, w, 3), np.uint8)  # (B, T, H, W, 3)
        index = self.sample_index(batch_size, rng)
        for b in range(batch_size):
            while self._read_into(*index[b], out[b]) is not None:
                self._warn_lazily()
                index[b] = self.sample_index(1, rng)[0]
        return (out, index) if return_index else out

    def read_clip(self, i: int, start: int) -> np.ndarray:
        """Frames ``start, start + stride, ...`` (clip_len of them) of video ``i``, uint8 (T, H, W, 3)."""
        count = self.frames(i)
        if count is None:
            raise VideoDataError(f"read_clip: video {i} ({self._paths[i]}) is unusable: {self._reason(i)}")
        if not 0 <= start <= count - self.span:
            raise VideoDataError(f"read_clip: start {start} is out of range for video {i} ({self._paths[i]}): "
                                 f"expected 0 <= start <= {count - self.span} ({count} frames, span {self.span})")
        h, w = self.image_size
        out = np.empty((self.clip_len, h, w, 3), np.uint8)
        reason = self._read_into(i, start, out)
        if reason is not None:
            raise VideoDataError(f"read_clip: video {i} ({self._paths[i]}): {reason}")
        return out

    def iter_clips(self, step: int | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
        """Every clip in order, for evaluation: yields (video index, start, frames (T, H, W, 3)); starts are
        ``step`` frames apart (default: ``span``, i.e. non-overlapping)."""
        step = self.span if step is None else int(step)
        for i in range(len(self._paths)):
            count = self.frames(i)
            for start in range(0, (count or 0) - self.span + 1, step):
                h, w = self.image_size
                out = np.empty((self.clip_len, h, w, 3), np.uint8)
                if self._read_into(i, start, out) is not None:
                    break
                yield i, start, out

    def _reason(self, i: int) -> str:
        for path, reason in reversed(self.skipped):
            if path == self._paths[i]:
                return reason
        return "unknown"

    def _nothing_usable(self, where: str) -> str:
        examples = "; ".join(f"{p}: {r}" for p, r in self.skipped[:3])
        return (f"{where}: no usable video in {', '.join(self.sources)} ({len(self.skipped)} skipped"
                f"{'; e.g. ' + examples if examples else ''}). Each video needs at least {self.min_frames} "
                f"decodable frames (clip_len {self.clip_len}, stride {self.stride}).")

    def _warn_lazily(self) -> None:
        if not self._warned:
            self._warned = True
            log.warning("VideoClips: %s (more may follow as videos are first read)", self.skipped_summary())

    # ------------------------------------------------------------------------------ decoding
    def _put(self, bgr: np.ndarray, dst: np.ndarray) -> None:
        """Resize a BGR frame to image_size (area interpolation) and write it as RGB into ``dst`` (H, W, 3)."""
        h, w = self.image_size
        if self.center_crop:
            fh, fw = bgr.shape[:2]
            scale = min(fh / h, fw / w)
            ch, cw = round(h * scale), round(w * scale)
            top, left = (fh - ch) // 2, (fw - cw) // 2
            bgr = bgr[top:top + ch, left:left + cw]
        if bgr.shape[0] != h or bgr.shape[1] != w:
            bgr = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA)
        cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=dst)

    def _capture(self, i: int) -> list:
        entry = self._caps.get(i)
        if entry is not None:
            self._caps.move_to_end(i)
            return entry
        cap = cv2.VideoCapture(self._paths[i])
        entry = [cap, 0]
        self._caps[i] = entry
        while len(self._caps) > self.max_open:
            self._caps.popitem(last=False)[1][0].release()
        return entry

    def _read_into(self, i: int, start: int, out: np.ndarray) -> str | None:
        """Decode clip (i, start) into ``out`` (T, H, W, 3); returns None, or the reason it failed (after
        truncating or skipping the video)."""
        first = int(self._starts[i]) + start  # absolute frame index in the file / folder
        if self._kinds[i] == _FRAMES:
            pattern = self._patterns.get(i)
            if pattern is None:
                if self._probe_one(i) < 0:
                    return self._reason(i)
                pattern = self._patterns[i]
            folder = self._paths[i]
            for t in range(self.clip_len):
                k = first + t * self.stride
                try:
                    name = _frame_name(pattern, k)
                except IndexError:
                    return self._truncate(i, k, "missing frame")
                img = cv2.imread(os.path.join(folder, name), cv2.IMREAD_COLOR)
                if img is None:
                    return self._truncate(i, k, f"unreadable frame {name}")
                self._put(img, out[t])
            return None
        entry = self._capture(i)
        cap = entry[0]
        if not cap.isOpened():
            self._mark_bad(i, _open_failure(self._paths[i]))
            return self._reason(i)
        for t in range(self.clip_len):
            k = first + t * self.stride
            gap = k - entry[1]
            ok = True
            if entry[1] < 0 or gap < 0 or gap > GRAB_MAX_GAP:
                cap.set(cv2.CAP_PROP_POS_FRAMES, k)
            else:
                for _ in range(gap):
                    if not cap.grab():
                        ok = False
                        break
            if ok:
                ok, frame = cap.read()
            entry[1] = k + 1
            if not ok:
                entry[1] = -1  # position unknown: seek next time
                return self._truncate(i, k, "decoding failed")
            self._put(frame, out[t])
        return None

    def _truncate(self, i: int, k: int, what: str) -> str:
        """Frame ``k`` (absolute) failed: keep the frames before it, or skip the video if too few remain."""
        usable = k - int(self._starts[i])
        old = int(self._counts[i])
        reason = f"truncated: {what} at frame {k}; {max(usable, 0)} of {old} indexed frames usable"
        if usable < self.min_frames:
            self._mark_bad(i, reason)
        else:
            self._counts[i] = min(old, usable)
            log.debug("%s: %s", self._paths[i], reason)
        return reason

    def close(self) -> None:
        """Release open captures (they are reopened on demand)."""
        for cap, _ in self._caps.values():
            cap.release()
        self._caps.clear()

    def __getstate__(self) -> dict:  # DataLoader workers get a copy without open captures
        state = self.__dict__.copy()
        state["_caps"] = OrderedDict()
        return state

    # ------------------------------------------------------------------------------ export
    def describe(self) -> dict[str, Any]:
        """Counts for `rlpt video info`: usable videos, skipped ones (by reason), frames min/mean/max/total,
        and the number of videos per domain or label when the source has them. Opens every video."""
        self.probe(verify=True)
        counts = self._counts[self._counts >= 0]
        info: dict[str, Any] = {
            "sources": self.sources, "videos": int(counts.size), "skipped": len(self.skipped),
            "skipped_by_reason": dict(Counter(r.split(":", 1)[0] for _, r in self.skipped)),
            "frames_total": int(counts.sum()),
            "frames_min": int(counts.min()) if counts.size else 0,
            "frames_mean": round(float(counts.mean()), 1) if counts.size else 0.0,
            "frames_max": int(counts.max()) if counts.size else 0,
            "clip_len": self.clip_len, "stride": self.stride, "image_size": list(self.image_size),
            "kinds": dict(Counter("video file" if self._kinds[i] == _VIDEO else "frame folder"
                                  for i in self.usable_indices())),
        }
        domains = Counter(self.meta(int(i)).get("domain") for i in self.usable_indices())
        domains.pop(None, None)
        if domains:
            info["domains"] = dict(sorted(domains.items()))
        labels = {self._labels[i] for i in self.usable_indices()} - {None}
        if labels:
            info["labels"] = len(labels)
        if self.skipped:
            info["skipped_examples"] = [{"path": p, "reason": r} for p, r in self.skipped[:10]]
        return info

    def write_manifest(self, path: PathLike) -> Path:
        """Probe every video and write a ``manifest.jsonl`` of the usable ones (paths relative to it), so
        that the next `open_videos` of that manifest needs no probing."""
        from rlpt.utils import write_text_atomic

        self.probe(verify=True)
        path = Path(path)
        root = path.parent.resolve()
        lines = []
        for i in self.usable_indices():
            i = int(i)
            meta = self.meta(i)
            if isinstance(meta.get("states"), str):
                meta["states"] = os.path.relpath(meta["states"], root)
            row = {"path": os.path.relpath(Path(self._paths[i]).resolve(), root), "frames": int(self._counts[i])}
            if self._starts[i]:
                row["start"] = int(self._starts[i])
                row["end"] = int(self._starts[i] + self._counts[i])
                del row["frames"]
            if self._labels[i] is not None:
                row["label"] = self._labels[i]
            lines.append(json.dumps({**row, **meta}))
        return write_text_atomic(path, "\n".join(lines) + ("\n" if lines else ""))


class VideoClipStream(torch.utils.data.IterableDataset):
    """An endless stream of clips (uint8 tensors (T, H, W, 3)) for a `torch.utils.data.DataLoader`.

    Each worker draws from its own generator, seeded by ``(seed, worker id)``, so a run is reproducible for a
    fixed ``num_workers``.
    """

    def __init__(self, clips: VideoClips, seed: int = 0) -> None:
        super().__init__()
        self.clips, self.seed = clips, int(seed)

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, 0 if info is None else info.id])
        while True:
            yield torch.from_numpy(self.clips.sample(1, rng)[0])


def open_videos(source: PathLike | Sequence[PathLike], clip_len: int = 25, stride: int = 1, image_size: int = 64,
                min_frames: int | None = None, *, frames_root: PathLike | None = None, probe: str = "auto",
                center_crop: bool = False, max_open: int = 4) -> VideoClips:
    """Index videos for clip sampling (see the module docstring for the accepted sources).

    Args:
        source: a folder, list file, manifest, video file, or a list of these.
        clip_len: frames per clip (T).
        stride: frame step inside a clip (a clip covers ``(clip_len - 1) * stride + 1`` frames).
        image_size: output side (int) or (H, W); frames are resized with area interpolation.
        min_frames: skip videos shorter than this (default and minimum: the frames one clip covers).
        frames_root: SSv2 lists: the folder holding ``<video_id>/`` frame folders (default: found from the ids).
        probe: "auto" (read unknown frame counts now when there are at most ``PROBE_EAGER_LIMIT``), "all"
            or "lazy" (on first use).
        center_crop: crop to the output aspect ratio before resizing (default: resize the whole frame).
        max_open: video captures kept open (an LRU cache).

    Raises:
        DatasetFileNotFoundError: a source path does not exist.
        VideoDataError: a list or manifest is malformed, or no usable video remains.
    """
    if probe not in ("auto", "all", "lazy"):
        raise VideoDataError(f"open_videos: probe must be 'auto', 'all' or 'lazy', got {probe!r}")
    sources = [source] if isinstance(source, str | os.PathLike) else list(source)
    if not sources:
        raise VideoDataError("open_videos: expected a source path or a non-empty list of them, got []")
    builder = _IndexBuilder()
    for s in sources:
        _add_source(builder, s, frames_root)
    names = [str(s) for s in sources]
    if not builder.paths and not builder.skipped:
        raise VideoDataError(f"open_videos: found no videos in {', '.join(names)}: expected video files "
                             f"({', '.join(VIDEO_EXTS)}), folders of frames ({', '.join(IMAGE_EXTS)}), a list file "
                             f"or a {MANIFEST_NAME}")
    clips = VideoClips(builder, names, clip_len=clip_len, stride=stride, image_size=image_size,
                       min_frames=min_frames, center_crop=center_crop, max_open=max_open)
    unknown = int(np.count_nonzero(clips._counts == _UNKNOWN))
    if probe == "all" or (probe == "auto" and unknown <= PROBE_EAGER_LIMIT):
        clips.probe()
    if len(clips) == 0:
        raise VideoDataError(clips._nothing_usable("open_videos"))
    clips._warn_skipped("open_videos")
    return clips
