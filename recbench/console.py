"""What a run shows at its start, and a copy of its console in its folder.

`announce` prints the composed config as a short tree (one branch per config group, its settings on the
branch) and the model summary (parameters per module), and saves the full resolved config
(`<run>/config.yaml`) and the summary (`<run>/model_summary.txt`). `tee_console` copies everything the run
prints to stdout / stderr into `<run>/__main__.log`, leaving out progress-bar redraws."""

from __future__ import annotations

import re
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, TextIO

# the branches of the tree, in order; paths, hydra and the rest are in config.yaml
BRANCHES = ("data", "model", "task", "optimizer", "trainer", "loader", "streaming", "early_stopping", "checkpoint")
REDRAW = re.compile(r"\r|\x1b\[")  # carriage returns and ANSI cursor codes: a progress bar redrawing itself


def flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def config_tree(config: dict[str, Any], choices: dict[str, str], run_dir: Path, width: int = 110) -> str:
    lines = [f"config ({run_dir / 'config.yaml'} holds it whole):"]
    branches = [b for b in BRANCHES if b in config]
    for i, branch in enumerate(branches):
        settings = " ".join(f"{k}={v}" for k, v in flat(config[branch]).items() if not k.endswith("_target_"))
        head = f"{'└─' if i == len(branches) - 1 else '├─'} {branch}" + (f": {choices[branch]}" if branch in choices else "")
        body = "   " if i == len(branches) - 1 else "│  "
        lines.append(textwrap.fill(settings, width, initial_indent=f"{head:24s} ", subsequent_indent=f"{body:24s} ",
                                   break_on_hyphens=False) if settings else head)
    lines.append(f"   seed={config.get('seed')}  tags={config.get('tags') or []}")
    return "\n".join(lines)


def model_summary(module: Any) -> str:
    """Parameters per module, two levels deep (Lightning's summary table)."""
    from lightning.pytorch.utilities.model_summary import ModelSummary

    return str(ModelSummary(module, max_depth=2))


def announce(config: dict[str, Any], choices: dict[str, str], module: Any, run_dir: Path) -> None:
    import yaml

    from recbench.records import write_atomic

    summary = model_summary(module)
    write_atomic(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    write_atomic(run_dir / "model_summary.txt", summary + "\n")
    print(config_tree(config, choices, run_dir), file=sys.stderr)
    print(summary, file=sys.stderr, flush=True)


class _Tee:
    """A text stream that writes through to `stream` and appends what is not a redraw to `log`."""

    def __init__(self, stream: TextIO, log: TextIO) -> None:
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        if text and not REDRAW.search(text):
            try:
                self._log.write(text)
            except (OSError, ValueError):  # a full disk or a closed log never stops the run
                pass
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()
        try:
            self._log.flush()
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ... as the real stream
        return getattr(self._stream, name)


@contextmanager
def tee_console(log_path: Path) -> Iterator[None]:
    try:
        log = open(log_path, "a", encoding="utf-8", buffering=1)
    except OSError:
        yield
        return
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(sys.stdout, log), _Tee(sys.stderr, log)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
        log.close()
