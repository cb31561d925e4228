"""Cold and warm load times of each embedded model (issue 2).

    python -m benchmarks.load_times [--models smollm2-135m gemma-3-270m qwen2.5-coder-0.5b-instruct]

Cold: a fresh, empty cache directory (assemble, sha256, dequantize, save, load). Warm: the
second load from that cache. Each load runs in a new process and includes the imports, as a
user's first `interp load` would. Writes benchmarks/results/load_times.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.measure import markdown_table

RESULTS = Path(__file__).parent / "results" / "load_times.md"
LOAD = "import interp; interp.load_model({name!r}, device='cpu', show_progress=False)"


def timed_load(name: str, cache: str) -> float:
    env = {**os.environ, "INTERP_CACHE": cache, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", LOAD.format(name=name)], env=env, check=True,
                   capture_output=True)
    return round(time.perf_counter() - start, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+",
                        default=["smollm2-135m", "gemma-3-270m", "qwen2.5-coder-0.5b-instruct"])
    args = parser.parse_args()
    rows = []
    for name in args.models:
        with tempfile.TemporaryDirectory() as cache:
            cold = timed_load(name, cache)
            warm = timed_load(name, cache)
        import_only = timed_load_import()
        rows.append({"model": name, "cold_s": cold, "warm_s": warm, "import_s": import_only,
                     "warm_minus_import_s": round(warm - import_only, 2)})
        print(json.dumps(rows[-1]), flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("# Model load times (2 CPU cores, no GPU; includes process start and imports)\n\n"
                       "Command: `python -m benchmarks.load_times`\n\n"
                       + markdown_table(rows, list(rows[0])) + "\n")
    print(RESULTS.read_text())


def timed_load_import() -> float:
    start = time.perf_counter()
    # interp.models, not interp: `import interp` alone no longer imports torch (it is lazy).
    subprocess.run([sys.executable, "-c", "import interp.models, transformers, transformer_lens.model_bridge"],
                   check=True, capture_output=True)
    return round(time.perf_counter() - start, 2)


if __name__ == "__main__":
    main()
