"""Repack the dm_control wheel without the parts `dm_control.suite` never reads, so that it fits beside the mujoco
wheel under the device tool's 64 MiB per call (56 MB -> 0.5 MB for dm_control 1.0.50).

    python3 benchmarks/device/slim_dm_control.py dm_control-1.0.50-py3-none-any.whl \\
        .whl/dm_control-1.0.50-0suite-py3-none-any.whl

Dropped: locomotion (walkers, soccer, arenas, mocap), manipulation, entities, the dog domain's meshes (the `dog`
tasks then fail to load; every other suite task works), the MuJoCo test assets, the Blender exporter and third-party
robot models. The RECORD file is rewritten with the hashes of the files kept, so pip installs the result as usual.
"""

from __future__ import annotations

import base64
import hashlib
import sys
import zipfile

DROP = ("dm_control/locomotion/", "dm_control/manipulation/", "dm_control/entities/", "dm_control/suite/dog_assets/",
        "dm_control/mujoco/testing/", "dm_control/mjcf/test_assets/", "dm_control/blender/",
        "dm_control/third_party/", "dm_control/suite/all_domains.png")


def slim(src: str, dst: str) -> None:
    """Write `dst`: the wheel `src` without the `DROP` paths, with a RECORD that lists what stays."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        record = next(n for n in zin.namelist() if n.endswith(".dist-info/RECORD"))
        rows = []
        for info in zin.infolist():
            if info.filename == record or info.filename.startswith(DROP):
                continue
            data = zin.read(info.filename)
            zout.writestr(info, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append(f"{info.filename},sha256={digest},{len(data)}")
        rows.append(f"{record},,")
        zout.writestr(record, "\n".join(rows) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: slim_dm_control.py SOURCE.whl DEST.whl")
    slim(sys.argv[1], sys.argv[2])
