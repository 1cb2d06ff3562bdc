"""Benchmark: 4 tiny sweep trials one at a time vs. two at a time on this machine (`make bench-sweep`).

Prints the wall time of each and the ratio. Same trials (the tiny model, seeds 0-3), one local Ray.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from experiments.config_files import load_config

SWEEP = Path(__file__).resolve().parent / "configs" / "sweep.yaml"


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from rich.console import Console

    from experiments.sweep import run_sweep

    quiet = Console(quiet=True)
    tmp = Path(tempfile.mkdtemp(prefix="attune-bench-"))
    ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False, _temp_dir=f"/tmp/ray-bench-{os.getpid()}")
    try:
        # Warm up: model files, imports and the Ray workers' first start are not what is measured.
        run_sweep(load_config(SWEEP, [f"tracking.runs_dir={tmp / 'warmup'}", "sweep.space={}", "sweep.seeds=[0]"]), SWEEP,
                  console=quiet)
        seconds = {}
        for concurrent in (1, 2):
            config = load_config(SWEEP, [f"tracking.runs_dir={tmp / f'c{concurrent}'}", "sweep.space={}",
                                         "sweep.seeds=[0, 1, 2, 3]", f"sweep.max_concurrent={concurrent}"])
            started = time.perf_counter()
            run_sweep(config, SWEEP, console=quiet)
            seconds[concurrent] = time.perf_counter() - started
    finally:
        ray.shutdown()
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f}; 4 tiny trials (tiny-random, 2 GRPO steps, eval)")
    print(f"one at a time : {seconds[1]:7.1f} s")
    print(f"two at a time : {seconds[2]:7.1f} s")
    print(f"ratio         : {seconds[1] / seconds[2]:7.2f}x faster with two at a time")


if __name__ == "__main__":
    main()
