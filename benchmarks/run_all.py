"""Run every benchmark, one after the other, each in its own process; print how long each took and its goals.

    .venv/bin/python benchmarks/run_all.py            # full measurements (see README.md for durations)
    .venv/bin/python benchmarks/run_all.py --only generate_speed,train_throughput
    .venv/bin/python benchmarks/run_all.py --tiny     # seconds: checks that the scripts run

Extra arguments after `--` go to every script (e.g. `-- --repeats 5`). Results: benchmarks/results/<name>.json,
and benchmarks/results/run_all.json (durations, goals). Measure on a quiet machine: the scripts record the load
average and any running `hf-neuralconv train` in their JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIRST = ["generate_speed", "train_throughput"]
# Every benchmarks/*.py except helpers (_*.py) and this file; each takes --output and --tiny.
SCRIPTS = FIRST + sorted(p.stem for p in HERE.glob("*.py")
                         if not p.stem.startswith("_") and p.stem != "run_all" and p.stem not in FIRST)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SCRIPTS), help="comma list out of " + ", ".join(SCRIPTS))
    parser.add_argument("--tiny", action="store_true", help="tiny sizes; results go to a temporary folder")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="arguments for every script, after --")
    opts = parser.parse_args()
    extra = [a for a in opts.extra if a != "--"]
    out_dir = Path(tempfile.mkdtemp(prefix="bench-tiny-")) if opts.tiny else HERE / "results"
    summary = {}
    for name in [s for s in opts.only.split(",") if s]:
        if name not in SCRIPTS:
            parser.error(f"unknown benchmark {name!r}")
        output = out_dir / f"{name}.json"
        command = [sys.executable, str(HERE / f"{name}.py"), "--output", str(output), *extra]
        if opts.tiny:
            command.append("--tiny")
        print(f"== {name}: {' '.join(command[1:])}", flush=True)
        t0 = time.time()
        rc = subprocess.call(command, cwd=HERE.parent)
        seconds = time.time() - t0
        entry = {"returncode": rc, "wall_s": seconds}
        if rc == 0 and output.is_file():
            result = json.loads(output.read_text())
            entry["goals"] = {k: v["meets_goal"] for k, v in result.get("goals", {}).items()}
            entry["meets_all_goals"] = result.get("meets_all_goals")
        summary[name] = entry
        print(f"== {name}: exit {rc}, {seconds:.0f}s\n", flush=True)
    summary_path = out_dir / "run_all.json"
    previous = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary_path.write_text(json.dumps({**previous, **summary}, indent=2) + "\n")  # keeps scripts not re-run
    for name, entry in summary.items():
        goals = ", ".join(f"{k}={'met' if v else 'NOT met'}" for k, v in entry.get("goals", {}).items())
        print(f"{name:<18} {entry['wall_s']:6.0f}s  exit {entry['returncode']}  {goals}")
    print(f"results in {out_dir}")
    return max((entry["returncode"] for entry in summary.values()), default=0)


if __name__ == "__main__":
    sys.exit(main())
