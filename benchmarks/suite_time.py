"""How long the test suite takes: `make test`'s pytest command on a fresh clone of this checkout,
optionally with an empty model cache (so the first load of each model converts it, as on CI).

    python -m benchmarks.suite_time                 # fresh clone, empty model cache
    python -m benchmarks.suite_time --warm-cache    # fresh clone, the user's model cache

The clone reuses this checkout's .venv (set-up time is not counted: `make setup` is measured
apart, as the issue's "of tests" figure does) and sees ../shared/data through a link beside
it. Writes benchmarks/results/suite_time.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# What `make test` runs (Makefile, TEST_WORKERS=2).
PYTEST = ["-m", "pytest", "-q", "--timeout=900", "-n", "2", "--dist", "loadgroup",
          "--durations=15", "-p", "no:cacheprovider"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm-cache", action="store_true",
                        help="use the user's model cache instead of an empty one")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="suite-time-"))
    clone = work / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    (clone / ".venv").symlink_to(ROOT / ".venv")
    (work / "shared").symlink_to(ROOT.parent / "shared")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if not args.warm_cache:
        env["INTERP_CACHE"] = str(work / "cache")
    started = time.perf_counter()
    done = subprocess.run([str(clone / ".venv" / "bin" / "python"), *PYTEST], cwd=clone, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-500:]
    durations = re.findall(r"^\s*([\d.]+)s (call|setup|teardown)\s+(\S+)$", done.stdout, re.M)
    result = {"commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True,
                                       text=True).stdout.strip(),
              "model_cache": "warm" if args.warm_cache else "empty", "returncode": done.returncode,
              "wall_seconds": round(seconds, 1), "summary": summary, "cpus": os.cpu_count(),
              "load_average_after": os.getloadavg()[0],
              "slowest": [{"seconds": float(s), "phase": p, "test": t} for s, p, t in durations]}
    name = "suite_time" if not args.warm_cache else "suite_time_warm"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "slowest"}, indent=2))
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
