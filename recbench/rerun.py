"""`python -m recbench.rerun <run_dir> [--into DIR] [key=value ...]`: run a recorded run again.

The run's `results.json` holds the command-line overrides it was made with (and its resolved
config, dataset fingerprint, package versions and git commit); this re-runs the same overrides in a
new run directory (default `<run_dir>_rerun`) and, when it finishes, compares the test metrics with
the record: on CPU with the same data they must be equal (runs are deterministic on CPU).

A record may come from someone else, so its overrides are checked before anything runs: only the
project's own config groups and keys are re-run. An override that touches `hydra.*` (callbacks,
launchers, search paths), names a `_target_` (any class or function) or points at a path outside the
project (other than the data and output folders in DATA_LOCATIONS) is refused with one line naming it, unless `--trust` is given.
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


# keys whose outside-the-project paths are fine: data folders the readers parse (never unpickled) and
# where outputs go; model folders and checkpoints (which can hold code) stay refused
DATA_LOCATIONS = {"paths.datasets", "paths.experiments", "data.raw_dir", "data.cache_dir", "data.replica_dir"}


def project_keys() -> set[str]:
    """First components an override may start with: the config groups (folders of conf/) and the
    top-level keys of conf/config.yaml, less hydra."""
    from omegaconf import OmegaConf

    from recbench.config import PROJECT_ROOT

    conf = PROJECT_ROOT / "conf"
    groups = {p.name for p in conf.iterdir() if p.is_dir()}
    keys = set(OmegaConf.load(conf / "config.yaml").keys()) - {"defaults"}
    return (groups | keys | {"text"}) - {"hydra"}


def refusal(override: str, allowed: set[str]) -> str | None:
    """Why `override` could run code or reach outside the project (None: it is safe to re-run)."""
    from recbench.config import PROJECT_ROOT

    key, _, value = override.lstrip("~+").partition("=")
    first = key.replace("/", ".").split(".")[0]
    if first == "hydra":
        return "it changes Hydra itself (callbacks, launchers and search paths run code)"
    if "_target_" in key or "_target_" in value:
        return "it names a _target_ (a class or function to call)"
    if first not in allowed:
        return f"'{first}' is not one of the project's config groups or keys"
    if key in DATA_LOCATIONS:  # parsed as data (CSV, parquet, .npy without pickle) or written to: no code runs
        return None
    for part in value.strip("[]'\"").split(","):
        part = part.strip().strip("'\"")
        if part.startswith(("/", "~")) and not Path(part).expanduser().resolve().is_relative_to(PROJECT_ROOT):
            return f"it points outside the project ({part})"
    return None


def check_overrides(overrides: list[str]) -> None:
    allowed = project_keys()
    for override in overrides:
        why = refusal(override, allowed)
        if why:
            raise UserInputError(f"the record's override '{override}' is not re-run: {why}. Fix: check the record; "
                                 "pass --trust to re-run it anyway")


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
    parser.add_argument("--trust", action="store_true",
                        help="re-run the record's overrides even if they touch hydra.*, a _target_ or outside paths")
    args = parser.parse_args(argv)
    try:
        record = load_record(args.run_dir)
        if not args.trust:
            check_overrides([o for o in record.get("overrides", []) if not o.startswith(("hydra.run.dir=", "resume="))])
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
