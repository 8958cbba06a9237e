"""The table a sweep (`python -m recbench -m ...`) ends with: one line per member and the report command.

A Hydra callback (conf/config.yaml, hydra.callbacks.sweep_summary): after the last member it reads the
members' results.json records from the sweep folder, so it sees members a launcher ran elsewhere too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback


def summary_lines(sweep_dir: Path) -> list[str]:
    rows = []
    for path in sorted(sweep_dir.glob("*/results.json"), key=lambda p: p.parent.name):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            rows.append((path.parent.name, "?", "?", "unreadable", "", ""))
            continue
        monitor = (record.get("monitor") or {}).get("metric", "")
        valid = (record.get("metrics") or {}).get("valid", {}).get(monitor)
        test_key = monitor.replace("valid/", "test/", 1)
        test = (record.get("metrics") or {}).get("test", {}).get(test_key)
        shown = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
        status = record.get("status", "?")
        rows.append((path.parent.name, str(record.get("model")), str(record.get("seed")), status,
                     shown(valid), shown(test) if status == "finished" else (record.get("error") or "")[:60]))
    if not rows:
        return [f"sweep {sweep_dir}: no member wrote a record"]
    header = ("member", "model", "seed", "status", "valid (monitored)", "test (same metric)")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    finished = sum(r[3] == "finished" for r in rows)
    return [f"\nSweep {sweep_dir}: {finished} of {len(rows)} members finished", line(header),
            *(line(r) for r in rows), f"leaderboard: python -m recbench.report {sweep_dir}"]


class SweepSummary(Callback):
    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        print("\n".join(summary_lines(Path(config.hydra.sweep.dir))), flush=True)
