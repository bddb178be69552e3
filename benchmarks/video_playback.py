"""Does a run's mp4 play in a browser? Headless Chromium loads it in a <video> element and reports back.

Usage: python benchmarks/video_playback.py [--browser chromium] [--wait 1.5] [--out PATH]
(default PATH: benchmarks/results/video_playback.json)

1. Writes a run video the way `rlpt train` writes `videos/final.mp4`: `rlpt.eval.evaluate` renders one episode of
   mujoco/HalfCheetah-v5 (random actions, 150 steps, 30 fps) through `rlpt.media.write_video` (H.264).
2. As a control, writes the same frames with OpenCV's `mp4v` codec (MPEG-4 Part 2), the format browsers do not play:
   the check must be able to fail.
3. Serves a page per video from a local HTTP server and opens it in headless Chromium. The page's script starts the
   muted <video>, waits `--wait` seconds, and POSTs back what the element reached: readyState, duration,
   currentTime, frames decoded (getVideoPlaybackQuality), size, and any media error. The browser is then closed.

A video "plays" when duration > 0, currentTime advanced past 0, and no media error was raised. The result JSON holds
the machine, the browser's and libraries' versions, the command and every reported field.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from rlpt.utils import write_json

ROOT = Path(__file__).resolve().parent.parent

PAGE = """<!doctype html>
<html><body>
<video id="v" src="{video}" muted playsinline preload="auto" width="320"></video>
<script>
const v = document.getElementById("v");
const report = (extra) => fetch("/report/{name}", {{method: "POST", body: JSON.stringify(Object.assign({{
  readyState: v.readyState, duration: v.duration, currentTime: v.currentTime, paused: v.paused, ended: v.ended,
  videoWidth: v.videoWidth, videoHeight: v.videoHeight,
  framesDecoded: v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : null,
  error: v.error ? {{code: v.error.code, message: v.error.message}} : null,
  canPlayH264: v.canPlayType('video/mp4; codecs="avc1.42E01E"'),
}}, extra))}});
let sent = false;
const once = (extra) => {{ if (!sent) {{ sent = true; report(extra); }} }};
v.addEventListener("error", () => once({{stage: "error"}}));
v.play().then(() => {{
  const t0 = v.currentTime;
  setTimeout(() => once({{stage: "played", currentTimeAtPlay: t0}}), {wait_ms});
}}).catch((e) => setTimeout(() => once({{stage: "play() rejected", playError: String(e)}}), 200));
setTimeout(() => once({{stage: "timeout"}}), {timeout_ms});
</script>
</body></html>
"""


def run_video(path: Path) -> Path:
    """One episode rendered and written as `rlpt train` writes a run's final video."""
    from rlpt.eval import evaluate

    rng = np.random.default_rng(0)
    res = evaluate(lambda obs: rng.uniform(-1, 1, 6).astype(np.float32), "mujoco/HalfCheetah-v5", episodes=1,
                   video_path=path, env_options={"render_mode": "rgb_array", "time_limit": 150})
    return Path(res.video)


def mp4v_copy(src: Path, dst: Path) -> Path:
    """The same frames in OpenCV's mp4v (MPEG-4 Part 2) codec: a file browsers refuse (the control)."""
    import cv2

    from rlpt.media import read_video

    frames = read_video(src)
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), 30, (frames.shape[2], frames.shape[1]))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return dst


def probe(path: Path) -> dict:
    """Codec, pixel format, frame count and duration as PyAV reads the container."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return {"codec": s.codec_context.name, "pix_fmt": s.codec_context.pix_fmt, "frames": s.frames,
                "duration_s": float(s.duration * s.time_base) if s.duration else None,
                "size": [s.codec_context.width, s.codec_context.height], "bytes": path.stat().st_size}


class Handler(SimpleHTTPRequestHandler):
    reports: dict[str, dict] = {}
    done = threading.Event()

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Handler.reports[self.path.rsplit("/", 1)[-1]] = json.loads(body)
        self.send_response(204)
        self.end_headers()
        Handler.done.set()

    def log_message(self, *args):  # keep the table readable
        pass


def play_in_browser(browser: str, folder: Path, name: str, video: str, wait_s: float, timeout_s: float) -> dict:
    """Open folder/<name>.html in headless Chromium; return what the page reported (or why nothing came)."""
    (folder / f"{name}.html").write_text(PAGE.format(video=video, name=name, wait_ms=int(wait_s * 1000),
                                                     timeout_ms=int(timeout_s * 1000)))
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Handler.done.clear()
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    cmd = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--mute-audio",
           "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={profile}",
           f"http://127.0.0.1:{server.server_port}/{name}.html"]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        got = Handler.done.wait(timeout_s + 30)
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        server.shutdown()
        shutil.rmtree(profile, ignore_errors=True)
    report = Handler.reports.get(name) if got else None
    if report is None:
        return {"reported": False, "browser_stderr_tail": (err or "")[-2000:]}
    report["reported"] = True
    report["seconds_to_report"] = round(time.monotonic() - t0, 2)
    report["plays"] = bool(report.get("error") is None and (report.get("duration") or 0) > 0
                           and report.get("currentTime", 0) > 0)
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--browser", default=shutil.which("chromium") or shutil.which("chromium-browser")
                    or shutil.which("google-chrome") or "chromium")
    ap.add_argument("--wait", type=float, default=1.5, help="seconds of playback before the page reports")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds before the page gives up")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "video_playback.json"))
    args = ap.parse_args()
    if not shutil.which(args.browser) and not Path(args.browser).exists():
        print(f"no browser at {args.browser!r}: install Chromium (Debian: apt-get install chromium) or pass "
              "--browser", file=sys.stderr)
        return 2
    version = subprocess.run([args.browser, "--version"], capture_output=True, text=True).stdout.strip()
    import av
    import cv2

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        h264 = run_video(folder / "videos" / "final.mp4")
        control = mp4v_copy(h264, folder / "videos" / "final_mp4v.mp4")
        cells = {}
        for name, path in (("rlpt_h264", h264), ("control_opencv_mp4v", control)):
            cells[name] = {"file": probe(path),
                           "browser": play_in_browser(args.browser, folder, name, f"videos/{path.name}", args.wait,
                                                      args.timeout)}
    print(f"{'video':<22} {'codec':<8} {'frames':>6} {'plays':>6} {'duration':>9} {'currentTime':>12}  error")
    for name, c in cells.items():
        b = c["browser"]
        print(f"{name:<22} {c['file']['codec']:<8} {c['file']['frames']:>6} {str(b.get('plays')):>6} "
              f"{b.get('duration')!s:>9} {b.get('currentTime')!s:>12}  "
              f"{(b.get('error') or {}).get('message', '') if b.get('reported') else 'no report'}")
    result = {
        "benchmark": "video_playback",
        "command": "python " + " ".join([f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "versions": {"browser": version, "pyav": av.__version__, "ffmpeg_libavcodec": av.library_versions.get(
            "libavcodec"), "opencv": cv2.__version__},
        "video": "one episode of mujoco/HalfCheetah-v5 (random actions, seed 0, 150 steps) rendered by "
                 "rlpt.eval.evaluate(video_path=...) -> rlpt.media.write_video, as rlpt train writes "
                 "videos/final.mp4",
        "wait_s": args.wait,
        "criterion": "plays: duration > 0, currentTime > 0 after play() and the wait, no media error",
        "cells": cells,
        "h264_plays": cells["rlpt_h264"]["browser"].get("plays", False),
        "control_mp4v_plays": cells["control_opencv_mp4v"]["browser"].get("plays", False),
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0 if result["h264_plays"] else 1


if __name__ == "__main__":
    sys.exit(main())
