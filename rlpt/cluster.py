"""Ray start-up shared by `rlpt tune` and the RLlib agents (core layer: imports Ray only when called)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from rlpt.errors import RlptError

DEFAULT_OBJECT_STORE_MB = 256


def init_ray(address: str | None = None, num_cpus: int | None = None, object_store_mb: int | None = None,
             temp_dir: str | os.PathLike | None = None, num_gpus: int | None = None) -> dict[str, Any]:
    """Start embedded Ray, or join the cluster at `address`; a no-op when Ray is already up (e.g. in a trial).

    Embedded: `num_cpus` defaults to the machine's CPUs, the object store to 256 MB (Ray's default is 30% of
    RAM in /dev/shm), and Ray's session files go to a fresh folder under /tmp (short: Ray's socket paths
    have a length limit), so it never attaches to another Ray instance on the machine.
    """
    try:
        import ray
    except ImportError as e:
        raise RlptError("rlpt tune and the RLlib agents need Ray: pip install 'rlpt[cluster]' "
                        "(ray[rllib,tune]==2.60.*)") from e
    if ray.is_initialized():
        return {"started": False, "address": None}
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except ConnectionError as e:
            raise RlptError(f"cannot connect to the Ray cluster at {address}: {e} (is `ray start --head` running "
                            "there, and is RAY_AUTH_TOKEN / ~/.ray/auth_token the head's token?)") from e
        return {"started": False, "address": address}
    temp = Path(temp_dir) if temp_dir else Path(tempfile.mkdtemp(prefix="rlpt-ray-", dir="/tmp"))
    ray.init(num_cpus=num_cpus or os.cpu_count() or 1, num_gpus=num_gpus,
             object_store_memory=int(object_store_mb or DEFAULT_OBJECT_STORE_MB) * 2**20,
             include_dashboard=False, log_to_driver=False, configure_logging=False, _temp_dir=str(temp))
    return {"started": True, "address": None, "temp_dir": str(temp)}
