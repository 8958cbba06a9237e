"""The generic LightningModule: any net, any task heads. It names no paper and no dataset.

Optimisation: parameters of sparse embedding tables (`nn.Embedding(sparse=True)`) get a row-wise
sparse optimiser (only the rows a batch touches are read and written); everything else gets the
dense optimiser. Which of the tables a model marks sparse stay sparse is decided per table by its
size (`sparse_min_rows`, recbench/optim/row_updates.py): smaller ones join the dense optimiser.
Two optimisers means manual optimisation, which also keeps the step explicit.
A task-aware dense optimiser (recbench/optim, e.g. AdaTask) gets one gradient per task for the
parameters several tasks share (recbench/optim/task_split.py); the heads then compute the loss from
detached outputs so that its gradient can be split by task at the outputs.
Evaluation: every head's `collect` output is kept for the whole split and `metrics` runs once at
the end, so AUC/GAUC are exact rather than averages over batches.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from functools import partial
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from torch import nn

from recbench.errors import NumericalFault
from recbench.optim.base import TaskAwareOptimizer
from recbench.optim.row_updates import choose_row_updates
from recbench.optim.task_split import TaskGradientSplit
from recbench.tasks.base import TaskHead


def split_parameters(net: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(sparse embedding weights, all other parameters)."""
    sparse = [m.weight for m in net.modules() if isinstance(m, nn.Embedding) and m.sparse]
    ids = {id(p) for p in sparse}
    dense = [p for p in net.parameters() if id(p) not in ids and p.requires_grad]
    return sparse, dense


class RecModule(L.LightningModule):
    def __init__(self, net: nn.Module, heads: dict[str, TaskHead], optimizer: partial,
                 sparse_optimizer: partial, gradient_clip: float | None, sparse_min_rows: int | None = None) -> None:
        super().__init__()
        # per id table: row-wise (sparse optimiser) or whole (dense optimiser), by its rows (None: as the model set it)
        self.row_updates = choose_row_updates(net, sparse_min_rows)
        self.net = net
        self.heads = nn.ModuleDict(heads)
        self.make_optimizer: Callable = optimizer
        self.make_sparse_optimizer: Callable = sparse_optimizer
        self.gradient_clip = gradient_clip
        self.automatic_optimization = False
        self._split: TaskGradientSplit | None = None  # set when the dense optimiser is task-aware
        self._kept: dict[str, list[dict[str, torch.Tensor]]] = defaultdict(list)
        self.results: dict[str, dict[str, float]] = {}
        self.history: list[dict[str, Any]] = []
        self.progressive_curve: list[dict[str, Any]] = []  # set by progressive validation (recbench/progressive.py)
        self.predictions_dir: Path | None = None  # set: `validate` / `test` write per-sample predictions there
        self.digests: dict[str, str] = {}  # per split: digest of the labels, masks and groups it was scored on
        self.chance_auc: dict[str, float] = {}  # per split: 0.5 + 2 standard errors of a chance AUC on its labels
        self.loss_trace = LossTrace()

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.net(batch)

    # ------------------------------------------------------------------ training
    def configure_optimizers(self):
        sparse, dense = split_parameters(self.net)
        self._clipped = dense  # gradient clipping covers the dense parameters
        optimizers = [self.make_optimizer(dense)]
        if isinstance(optimizers[0], TaskAwareOptimizer):
            self._check_task_aware()
            self._split = TaskGradientSplit(optimizers[0].task_outputs, dense, sparse)
        if sparse:
            optimizers.append(self.make_sparse_optimizer(sparse))
        return optimizers

    def _check_task_aware(self) -> None:
        """Per-task gradients come from torch.autograd.grad, outside Lightning's backward: no DDP
        all-reduce and no fp16 loss scaling reach them, so those setups are refused in one line."""
        from recbench.errors import UserInputError

        trainer = self._trainer
        if trainer is None:
            return
        if trainer.world_size > 1:
            raise UserInputError("a task-aware optimizer (optimizer=adatask) runs in one process: its per-task "
                                 "gradients bypass DDP's gradient all-reduce. Fix: drop trainer=ddp, or use optimizer=adam")
        if str(trainer.precision).startswith("16"):
            raise UserInputError(f"a task-aware optimizer (optimizer=adatask) has no fp16 loss scaling (trainer.precision="
                                 f"{trainer.precision}). Fix: trainer.precision=32-true or bf16-mixed")

    def _loss_terms(self, outputs, batch) -> dict[str, torch.Tensor]:
        terms = {name: value for head in self.heads.values() for name, value in head.loss(outputs, batch).items()}
        # a net may add its own weighted training terms (e.g. a contrastive alignment) as `aux_loss/<name>`
        terms.update({key.split("/", 1)[1]: value for key, value in outputs.items() if key.startswith("aux_loss/")})
        return terms

    def training_step(self, batch, batch_idx):
        outputs = self.net(batch)
        read = outputs if self._split is None else self._split.detached(outputs)
        terms = self._loss_terms(read, batch)
        loss = torch.stack(list(terms.values())).sum()
        if not torch.isfinite(loss):
            self._numerical_fault(terms)
        self.loss_trace.add(float(loss.detach()))  # a sync the finiteness check above already made
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        if self._split is None:
            self.manual_backward(loss)
            if self.gradient_clip:
                torch.nn.utils.clip_grad_norm_(self._clipped, self.gradient_clip)
        else:
            task_grads = self._split.backward(outputs, read, loss)
            if self.gradient_clip:
                self._split.clip(task_grads, self.gradient_clip)
            getattr(optimizers[0], "optimizer", optimizers[0]).set_task_gradients(task_grads)  # the wrapped torch optimiser
        for optimizer in optimizers:
            optimizer.step()
        size = len(next(iter(batch.values())))
        # the step value is this process's own; epoch means are over every DDP rank's rows (sync_dist: one
        # reduce at the epoch's end; the two keys are the ones on_step + on_epoch would name)
        self.log("train/loss_step", loss.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=size)
        self.log("train/loss_epoch", loss.detach(), prog_bar=True, on_step=False, on_epoch=True, batch_size=size,
                 sync_dist=True)
        for name, value in terms.items():
            self.log(f"train/{name}", value.detach(), on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        return loss

    def _numerical_fault(self, terms: dict[str, torch.Tensor]) -> None:
        """Stop at the first non-finite loss: a NaN must never reach a metric or a leaderboard."""
        bad = ", ".join(f"{name}={float(value):.4g}" for name, value in terms.items() if not torch.isfinite(value))
        saved = [Path(c.last_model_path or c.best_model_path) for c in self.trainer.checkpoint_callbacks
                 if (c.last_model_path or c.best_model_path)]
        where = str(saved[0]) if saved else "none saved yet"
        raise NumericalFault(f"non-finite training loss at epoch {self.current_epoch}, step {self.global_step} "
                             f"({bad}); last good checkpoint: {where}. Fix: lower optimizer.dense.lr / "
                             "optimizer.sparse.lr or set optimizer.gradient_clip")

    # ------------------------------------------------------------------ evaluation
    def collect(self, batch) -> dict[str, torch.Tensor]:
        """What every head keeps of one evaluated batch (predictions, labels, groups), on the CPU."""
        outputs = self.net(batch)
        for key, value in outputs.items():  # a NaN prediction must fail the run, never become a metric
            if torch.is_tensor(value) and value.is_floating_point() and bool(torch.isnan(value).any()):
                raise NumericalFault(f"the model's {key} is NaN on an evaluated batch: a NaN / inf value in the "
                                     "input data or a diverged model. Fix: check the data files for NaN / inf values, "
                                     "or lower the learning rate")
        kept = {f"{name}.{key}": value.cpu() for name, head in self.heads.items()
                for key, value in head.collect(outputs, batch).items()}
        # what the split is scored against (the schema's label_* / mask_* / group keys), for its digest
        kept.update({f"{TRUTH}{key}": value.cpu() for key, value in batch.items() if key.startswith(TRUTH_KEYS)})
        return kept

    def metrics_of(self, parts: list[dict[str, torch.Tensor]], prefix: str) -> dict[str, float]:
        """Every head's metrics over the collected batches, as `<prefix>/<metric>/<target>`."""
        if not parts:
            return {}
        merged = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
        values: dict[str, float] = {}
        for name, head in self.heads.items():
            start = f"{name}."
            values.update(head.metrics({k[len(start):]: v for k, v in merged.items() if k.startswith(start)}))
        return {f"{prefix}/{key}": float(value) for key, value in values.items()}

    def _keep(self, split: str, batch) -> None:
        self._kept[split].append(self.collect(batch))

    def _finish(self, split: str) -> dict[str, float]:
        parts = self._kept.pop(split, [])
        if self.trainer.world_size > 1:
            parts = self._gather(parts)
        truth = [{k: v for k, v in part.items() if k.startswith(TRUTH)} for part in parts]
        parts = [{k: v for k, v in part.items() if not k.startswith(TRUTH)} for part in parts]
        self.digests[split] = truth_digest(truth)
        self.chance_auc[split] = chance_auc(truth)
        if self.predictions_dir is not None and self.trainer.state.fn in ("validate", "test") and parts:
            if self.trainer.is_global_zero:
                write_predictions(self.predictions_dir / f"{split}.parquet", parts)
        return self.metrics_of(parts, split)

    @staticmethod
    def _gather(parts: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        """Every rank's kept outputs, in rank order (each rank holds one contiguous block of rows,
        see data/datamodule.py), so grouped metrics see whole groups exactly as in one process."""
        import torch.distributed as dist

        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, parts)
        return [part for rank_parts in gathered for part in rank_parts]

    def validation_step(self, batch, batch_idx):
        self._keep("valid", batch)

    def test_step(self, batch, batch_idx):
        self._keep("test", batch)

    def on_validation_epoch_end(self):
        values = self._finish("valid")
        if self.trainer.sanity_checking:
            return
        # every rank computed these from the outputs gathered across the ranks (`_finish`): the same exact
        # value on each. sync_dist tells Lightning so (without it, DDP warns once per key); the max over
        # identical values is that value bit for bit on any number of ranks (a mean can round); one process
        # skips the reduce
        self.log_dict(values, prog_bar=False, sync_dist=True, reduce_fx="max")
        self.results["valid"] = values
        if self.trainer.state.fn == "fit":  # a validate() after training (predictions) is not an epoch
            self.history.append({"epoch": self.current_epoch, **values})

    def on_test_epoch_end(self):
        values = self._finish("test")
        self.log_dict(values, sync_dist=True, reduce_fx="max")  # gathered: see on_validation_epoch_end
        self.results["test"] = values

    # ------------------------------------------------------------------ resume
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """History and the global random states (dropout, ...), so a resumed run continues exactly."""
        import random

        import numpy as np

        name, keys, position, has_gauss, cached = np.random.get_state()
        # plain types and tensors only: checkpoints load with torch.load(weights_only=True)
        numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)]
        checkpoint["recbench"] = {"history": self.history, "results": self.results,
                                  "progressive_curve": self.progressive_curve,
                                  "rng": {"torch": torch.get_rng_state(), "numpy": numpy_state,
                                          "python": random.getstate()}}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        import random

        import numpy as np

        state = checkpoint.get("recbench")
        if state is None or self.trainer.state.fn != "fit":  # testing a checkpoint must not rewind the run
            return
        self.history, self.results = state["history"], state["results"]
        self.progressive_curve = state.get("progressive_curve", [])
        torch.set_rng_state(state["rng"]["torch"])
        name, keys, position, has_gauss, cached = state["rng"]["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
        random.setstate(state["rng"]["python"])

    def metric_definitions(self) -> dict[str, str]:
        return {k: v for head in self.heads.values() for k, v in head.definitions().items()}


TRUTH = "truth."
TRUTH_KEYS = ("label", "mask", "group")


def truth_digest(parts: list[dict[str, torch.Tensor]]) -> str:
    """16 hex digits over the labels, masks and groups of an evaluated split, in row order: two runs with
    the same digest were scored on the same samples against the same truth (the leaderboard may compare
    them even when their training data differ, e.g. streams reported at other ticks)."""
    import hashlib

    digest = hashlib.sha256()
    for key in sorted(parts[0]) if parts else []:
        values = torch.cat([part[key] for part in parts]).double().contiguous()
        digest.update(key.encode() + values.numpy().tobytes())
    return digest.hexdigest()[:16]


def chance_auc(parts: list[dict[str, torch.Tensor]]) -> float:
    """0.5 + 2 standard errors of the mean AUC of random scores over the split's binary label columns
    (Hanley & McNeil under H0: var = (n + 1) / (12 n1 n0) per column; the mean of K columns has
    sqrt(sum var) / K). Few positives make it wide: a test AUC below it cannot be told from chance."""
    variances = []
    for key in parts[0] if parts else []:
        if not key.startswith(f"{TRUTH}label"):
            continue
        values = torch.cat([part[key] for part in parts])
        for column in values.reshape(len(values), -1).T:
            binary = (column == 0) | (column == 1)
            positives, n = int((column == 1).sum()), len(column)
            if bool(binary.all()) and 0 < positives < n:
                variances.append((n + 1) / (12 * positives * (n - positives)))
    return 0.5 + 2 * sum(variances) ** 0.5 / len(variances) if variances else 0.5


class LossTrace:
    """The training loss of the first and the last `window` steps, to tell whether it fell."""

    def __init__(self, window: int = 50) -> None:
        from collections import deque

        self.first: list[float] = []
        self.last: deque[float] = deque(maxlen=window)
        self.window, self.steps = window, 0

    def add(self, value: float) -> None:
        self.steps += 1
        if len(self.first) < self.window:
            self.first.append(value)
        self.last.append(value)

    def did_not_fall(self) -> tuple[float, float] | None:
        """(first mean, last mean) when the mean loss of the last steps is not below that of the first ones:
        windows of up to `window` steps that do not overlap, at least 5 each (debug=overfit's 60 steps count);
        else None."""
        width = min(self.window, self.steps // 2)
        if width < 5:
            return None
        first, last = self.first[:width], list(self.last)[-width:]
        first_mean, last_mean = sum(first) / width, sum(last) / width
        return (first_mean, last_mean) if last_mean >= first_mean else None


def write_predictions(path: Path, parts: list[dict[str, torch.Tensor]]) -> None:
    """Per-sample outputs of one evaluated split as parquet: `row` (the sample's position in the split, in
    the datamodule's evaluation order), then what each head keeps, `<head>.<key>` (scores, labels, group
    ids; a [N, T] output becomes a fixed-size list column). Outputs that are not one per sample (e.g. a
    retrieval head's item table) are left out."""
    import polars as pl

    from recbench.records import atomic_file

    merged = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    rows = Counter(len(value) for value in merged.values()).most_common(1)[0][0]  # one per sample: most keys
    columns = {"row": pl.Series("row", range(rows), dtype=pl.Int64)}
    for key, value in merged.items():
        if len(value) == rows:
            array = value.float().numpy() if value.is_floating_point() else value.numpy()
            columns[key] = pl.Series(key, array)
    with atomic_file(path) as tmp:
        pl.DataFrame(list(columns.values())).write_parquet(tmp)
