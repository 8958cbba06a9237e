"""`python -m recbench.rerun <run_dir> [--into DIR] [key=value ...]`: run a recorded run again.

The run's `results.json` holds the command-line overrides it was made with (and its resolved
config, dataset fingerprint, package versions and git commit); this re-runs the same overrides in a
new run directory (default `<run_dir>_rerun`) and, when it finishes, compares the test metrics with
the record: on CPU with the same data they must be equal (runs are deterministic on CPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from recbench.errors import UserInputError


def load_record(run_dir: Path) -> dict:
    path = run_dir / "results.json"
    if not path.exists():
        raise UserInputError(f"{path}: no results.json here. Fix: pass a run directory written by python -m recbench")
    return json.loads(path.read_text())


def rerun_command(record: dict, into: Path, extra: list[str]) -> list[str]:
    kept = [o for o in record.get("overrides", []) if not o.startswith(("hydra.run.dir=", "resume="))]
    return [sys.executable, "-m", "recbench", *kept, *extra, f"hydra.run.dir={into}"]


def compare(before: dict, after: dict) -> list[str]:
    """Lines naming every test metric that differs (empty: identical)."""
    old, new = before.get("metrics", {}).get("test", {}), after.get("metrics", {}).get("test", {})
    return [f"{key}: {old.get(key)} -> {new.get(key)}" for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recbench.rerun", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory holding results.json")
    parser.add_argument("--into", type=Path, help="where the new run goes (default: <run_dir>_rerun)")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides (the comparison then may differ)")
    args = parser.parse_args(argv)
    try:
        record = load_record(args.run_dir)
    except UserInputError as error:
        print(f"recbench: error: {error}", file=sys.stderr)
        return 2
    into = args.into or args.run_dir.with_name(args.run_dir.name + "_rerun")
    command = rerun_command(record, into, args.overrides)
    print("re-running:", " ".join(command[1:]), file=sys.stderr)
    done = subprocess.run(command)
    if done.returncode:
        return done.returncode
    differences = compare(record, json.loads((into / "results.json").read_text()))
    if record.get("git_commit") and differences:
        print(f"recorded at commit {record['git_commit']}", file=sys.stderr)
    print("identical test metrics" if not differences else "test metrics differ:\n  " + "\n  ".join(differences))
    return 0 if not differences or args.overrides else 1


if __name__ == "__main__":
    sys.exit(main())
