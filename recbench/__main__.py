"""`python -m recbench model=<name> data=<name> [key=value ...]`: one run (or `-m` for a sweep).

compose config -> dataset adapter + datamodule -> model + task heads -> Lightning fit (early stopping
on a validation metric) -> test with the best checkpoint -> results.json in the run directory.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import sys
import textwrap
import traceback
import time
from pathlib import Path
from typing import Any

from recbench.errors import NumericalFault, UserInputError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
CHOICE_GROUPS = ("data", "model", "task", "trainer", "logger", "optimizer", "experiment", "arm", "hparams_search",
                 "debug")


def check_choices(argv: list[str]) -> None:
    """Unknown `group=name` on the command line -> one line naming the choices (before Hydra runs)."""
    for arg in argv:
        match = re.fullmatch(r"(?:\+|~)?(\w+)=(.+)", arg)
        if not match or match.group(1) not in CHOICE_GROUPS:
            continue
        group, values = match.groups()
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        for value in re.sub(r"^\w+\((.*)\)$", r"\1", values).split(","):  # a,b,c or choice(a,b)
            if value and value not in options:
                raise UserInputError(f"unknown {group} '{value}' (no conf/{group}/{value}.yaml). "
                                     f"Fix: use one of {', '.join(options)}")


def quiet_lightning() -> None:
    """Lightning logs through its own handler; stop the copy via the root logger and its ad."""
    import logging

    import warnings

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).propagate = False
    # known third-party noise, filtered where it comes from (not every warning): Lightning's pytree helper
    # against torch >= 2.10's LeafSpec deprecation, printed once per run
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated",
                            module=r"lightning\.pytorch\.utilities\._pytree")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in record.getMessage())


def check_overrides(argv: list[str]) -> None:
    """Compose the config once up front so a misspelt key is one line, not Hydra's five.

    Sweeps (`-m`) and Hydra's own flags (`--cfg`, `--help`, ...) are left to Hydra.
    """
    if any(arg.startswith("-") for arg in argv):
        return
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from recbench import config  # noqa: F401  (registers resolvers)

    overrides = [arg for arg in argv if not arg.lstrip("+~").startswith("hydra.")]
    check_override_syntax(argv)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        try:
            compose("config", overrides=overrides)
        except HydraException as error:
            first = str(error).strip().splitlines()[0]
            if first.startswith("Ambiguous value"):  # a comma: Hydra's sweep syntax, in a single run
                raise UserInputError(f"{first}: a comma lists values to sweep. Fix: add -m to sweep them, or quote "
                                     "the value for Hydra if the comma is part of it, e.g. \"key='a,b'\"") from None
            raise UserInputError(f"{first} Fix: check the key's spelling (`python -m recbench --cfg job` "
                                 "prints every key); a new key needs a leading +") from None


def check_override_syntax(argv: list[str]) -> None:
    """An override Hydra cannot parse (a path with brackets, braces, `=`, a comma or a quote in it) names
    itself and how to quote it, rather than Hydra's grammar message."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for arg in argv:
        try:
            parser.parse_overrides([arg])
        except OverrideParseException as error:
            key, _, value = arg.partition("=")
            hint = value.replace("\\", "\\\\").replace("'", "\\'")
            raise UserInputError(f"cannot read the override '{arg}' ({str(error).strip().splitlines()[0]}). Fix: quote "
                                 f"the value for Hydra, e.g. \"{key}='{hint}'\" (double quotes for the shell, single "
                                 "quotes for Hydra)") from None


def check_config(cfg: Any) -> None:
    """Values no run can use, caught before any data is read (one line each)."""
    checks = [("loader.batch_size", cfg.loader.batch_size, lambda v: isinstance(v, int) and v > 0, "a positive integer"),
              ("loader.eval_batch_size", cfg.loader.eval_batch_size, lambda v: isinstance(v, int) and v > 0,
               "a positive integer"),
              ("optimizer.dense.lr", cfg.optimizer.dense.lr, lambda v: v > 0, "a positive number"),
              ("optimizer.sparse.lr", cfg.optimizer.sparse.lr, lambda v: v > 0, "a positive number"),
              ("optimizer.gradient_clip", cfg.optimizer.gradient_clip, lambda v: v is None or v > 0,
               "a positive number or null"),
              ("optimizer.sparse_min_rows", cfg.optimizer.get("sparse_min_rows"),
               lambda v: v is None or v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 0),
               "auto, a non-negative integer or null"),
              ("trainer.max_epochs", cfg.trainer.max_epochs, lambda v: isinstance(v, int) and v > 0,
               "a positive integer"),
              # recbench serves overfit batches itself (whole index batches), so a count, not Lightning's fraction
              ("trainer.overfit_batches", cfg.trainer.get("overfit_batches") or 0,
               lambda v: float(v).is_integer() and v >= 0, "a whole number of batches (0: off)")]
    for key, value, valid, expected in checks:
        if not valid(value):
            raise UserInputError(f"config '{key}' is {value!r}; it must be {expected}. Fix: {key}=<{expected}>")


def check_fit(cfg: Any, choices: dict[str, str]) -> None:
    """A model or task head made for another kind of dataset (LCU on Tmall): one line, before any
    data is read. The net and every head must accept one of the schemas the adapter produces."""
    from hydra.utils import get_class

    from recbench.data.schema import fits, names

    produces = get_class(cfg.data._target_).produces
    parts = [("model", choices.get("model"), cfg.model.net._target_)]
    parts += [("task", choices.get("task"), head._target_) for head in cfg.task.heads.values()]
    for group, name, target in parts:
        accepts = getattr(get_class(target), "accepts", ())
        if not accepts:
            raise UserInputError(f"{group} '{name}' ({target}) declares no accepted schema. Fix: set `accepts = (...)` "
                                 "on its class to the recbench.data.schema schemas it reads")
        if not fits(accepts, produces):
            raise UserInputError(f"{group} '{name}' does not fit data '{choices.get('data')}': it reads "
                                 f"{names(accepts)} batches, this dataset produces {names(produces) or 'no declared'} "
                                 "batches. Fix: pick a model and task made for this dataset (README, 'A tour of the configs')")


def build(cfg: Any, choices: dict[str, str]) -> tuple[Any, Any, Any]:
    """Data, net and heads from a composed config: (datamodule, prepared data, RecModule)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from recbench.data.datamodule import RecDataModule, declared_batch_keys
    from recbench.module import RecModule
    from recbench.optim.row_updates import resolve_sparse_min_rows

    check_fit(cfg, choices)
    adapter = instantiate(cfg.data)
    streaming = dict(cfg.streaming) if cfg.get("streaming") else None  # None: shuffled epochs
    datamodule = RecDataModule(adapter, seed=cfg.seed, streaming=streaming, **cfg.loader)
    prepared = datamodule.prepare()
    spec = prepared.meta["spec"]
    try:
        net = instantiate(cfg.model.net, spec=spec, _convert_="all")
        heads = {name: instantiate(head, spec=spec) for name, head in cfg.task.heads.items()}
    except InstantiationException as error:
        if not isinstance(error.__cause__, KeyError):
            raise
        raise UserInputError(f"model '{choices['model']}' with task '{choices['task']}' does not fit data "
                             f"'{choices['data']}' (it needs {error.__cause__}, which this dataset does not "
                             "provide). Fix: pick a model and task made for this dataset (README, 'Models')") from None
    datamodule.batch_keys = declared_batch_keys([net, *heads.values()])
    if cfg.get("compile"):
        compile_net(net, cfg.trainer.get("accelerator"))
    module = RecModule(net, heads, optimizer=instantiate(cfg.optimizer.dense),
                       sparse_optimizer=instantiate(cfg.optimizer.sparse),
                       gradient_clip=cfg.optimizer.gradient_clip,
                       sparse_min_rows=resolve_sparse_min_rows(cfg.optimizer.get("sparse_min_rows"), cfg.loader.batch_size))
    return datamodule, prepared, module


def compile_net(net: Any, accelerator: str | None) -> None:
    """torch.compile the net in place (`nn.Module.compile`: parameter names and checkpoints stay as
    they are). Shapes are dynamic: batch sizes and the number of real history items vary.

    Known noise of that compile is filtered where it comes from, nothing else: a sparse embedding
    table (SparseAdam) has a sparse gradient, whose backward inductor cannot compile (aten.nonzero), so
    each graph holding such a lookup falls back to running it eagerly (the right outcome) and torch
    says so twice: a ~13-line `torch._dynamo.exc` warning per graph ("Backend compiler exception ...
    failed with aten.nonzero.default"), and a 5-line anomaly-mode UserWarning ("Error detected in
    EmbeddingBackward0") from AOTAutograd tracing that backward."""
    import logging
    import shutil
    import warnings

    import torch

    on_cpu = accelerator == "cpu" or (accelerator in (None, "auto") and not torch.cuda.is_available())
    if on_cpu and not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        raise UserInputError("compile=true on CPU needs a C++ compiler (torch.compile writes C++ kernels) and "
                             "none is on PATH. Fix: install g++ (or clang++), or set compile=false")
    warnings.filterwarnings("ignore", message=r"Error detected in EmbeddingBackward0\b", category=UserWarning,
                            module=r"torch\.autograd\.graph")

    def not_the_sparse_gradient_fallback(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("Backend compiler exception" in message and "aten.nonzero" in message)

    dynamo = logging.getLogger("torch._dynamo.exc")
    if not any(getattr(f, "__name__", "") == not_the_sparse_gradient_fallback.__name__ for f in dynamo.filters):
        dynamo.addFilter(not_the_sparse_gradient_fallback)  # once per process, however many nets are compiled
    net.compile(dynamic=True)


def train(cfg: Any, run_dir: Path, choices: dict[str, str]) -> dict[str, Any]:
    """Fit, test and return the results record (heavy imports here keep `--help` fast)."""
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from omegaconf import OmegaConf

    from recbench.callbacks import KillSwitch, ResumeCheckpoint, TrainThroughput
    from recbench.faults import kill_point
    from recbench.interrupts import StopAtBatchBoundary

    quiet_lightning()
    check_config(cfg)
    if cfg.train and cfg.resume and (run_dir / "checkpoints" / "last.ckpt").exists():
        from recbench.resume_guard import verify  # before anything is written into the run's folder

        verify(run_dir, OmegaConf.to_container(cfg, resolve=True), run_dir / "checkpoints" / "last.ckpt")
    if cfg.get("keep_freed_memory", True):
        from recbench.allocator import keep_freed_memory

        keep_freed_memory()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, prepared, module = build(cfg, choices)
    net = module.net
    if os.environ.get("LOCAL_RANK", "0") == "0":  # the config tree and the model summary, printed and saved
        from recbench.console import announce

        announce(OmegaConf.to_container(cfg, resolve=True), choices, module, run_dir)
    monitor, mode = cfg.task.monitor, cfg.task.monitor_mode
    throughput = TrainThroughput()
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=monitor, mode=mode,
                                 enable_version_counter=False)
    last = run_dir / "checkpoints" / "last.ckpt"
    # checked after each validation: the same point as at the epoch's end when an epoch ends in validation, and
    # right too when trainer.max_steps stops training mid-epoch (then no validation has run yet at that end)
    stopping = {"check_on_train_epoch_end": False, **cfg.early_stopping}
    callbacks = [EarlyStopping(monitor=monitor, mode=mode, **stopping), checkpoint, throughput,
                 ResumeCheckpoint(last, cfg.checkpoint.every_n_steps), StopAtBatchBoundary()]
    # before the checkpoint writers, so their checkpoints hold its state (overfitting has no stream to follow)
    if datamodule.progressive and not cfg.trainer.get("overfit_batches"):
        from recbench.progressive import ProgressiveValidation

        callbacks.insert(0, ProgressiveValidation(datamodule.streaming))
    if kill_point():  # fault injection (tests, benchmarks/soak.py)
        callbacks.append(KillSwitch(*kill_point()))
    # save_dir: the folder this run resolved, which for resume=true is the interrupted run's, not Hydra's new one
    logger = instantiate(cfg.logger, **_logger_folder(cfg, run_dir)) if cfg.get("logger") else False
    if logger:  # the resolved config goes with the metrics (csv: hparams.yaml; tensorboard: hparams; wandb: config)
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    datamodule.overfit_batches = int(cfg.trainer.get("overfit_batches") or 0)  # served by the datamodule
    # a time-ordered stream is one pass over the stream (streaming.passes repeats each slice instead)
    epochs = {"max_epochs": 1} if datamodule.streams and not datamodule.overfit_batches else {}
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, default_root_dir=str(run_dir),
                          deterministic=_deterministic(cfg.trainer), overfit_batches=0, **epochs)
    # deterministic kernels stay on; torch's extra guard in that mode, filling every new tensor with
    # NaN, only catches reads of uninitialised memory and cost ~8% of a CTR training step (profiled)
    from torch.utils import deterministic as torch_deterministic

    torch_deterministic.fill_uninitialized_memory = False
    if cfg.predictions:
        module.predictions_dir = run_dir / "predictions"
    if not cfg.train:  # `python -m recbench eval ckpt_path=...`: validate and test a saved checkpoint
        evaluated = evaluate_checkpoint(cfg, trainer, module, datamodule)
        best, train_seconds = module.results.get("valid", {}), 0.0
    else:
        train_seconds = fit(cfg, run_dir, trainer, module, datamodule, last)
        best = _best_epoch(module.history, monitor, mode)
        # fast_dev_run saves no checkpoint: then the weights as training left them are evaluated
        evaluated = "best" if checkpoint.best_model_path else None
        if cfg.predictions:  # the best checkpoint's validation predictions (the test pass writes its own)
            trainer.validate(module, datamodule=datamodule, ckpt_path=evaluated, verbose=False)
        trainer.test(module, datamodule=datamodule, ckpt_path=evaluated, verbose=False)

    return {"status": "finished", "mode": "train" if cfg.train else "eval",
            "warnings": result_warnings(module.results.get("test", {}), module.chance_auc.get("test", 0.5),
                                        module.loss_trace if cfg.train else None),
            "evaluated_checkpoint": str(checkpoint.best_model_path if evaluated == "best" else
                                        evaluated or "none (no checkpoint saved): the weights training ended with"),
            **({"predictions": str(module.predictions_dir)} if cfg.predictions else {}),
            "model": choices["model"], "data": choices["data"], "task": choices["task"],
            "data_source": prepared.meta["source"], "dataset_fingerprint": prepared.meta["fingerprint"],
            "text_embeddings": prepared.meta.get("text_embeddings"),  # the folder read (data.text_embeddings=auto: the stage's)
            "dataset_stats": prepared.meta.get("stats", {}), "seed": cfg.seed,
            "metrics": {"valid": best, "test": module.results.get("test", {}),
                        **({"progressive": module.results["progressive"]} if "progressive" in module.results else {})},
            "training_order": "stream" if datamodule.streams else "shuffled",
            "progressive_curve": module.progressive_curve,
            "monitor": {"metric": monitor, "mode": mode, "best_epoch": best.get("epoch")},
            "epochs_run": trainer.current_epoch, "history": module.history,
            "train_seconds": train_seconds,
            "train_samples_per_second": throughput.samples_per_second * trainer.world_size,  # all ranks
            "train_epoch_samples_per_second": [r * trainer.world_size for r in throughput.epoch_rates],
            "world_size": trainer.world_size, "global_rank": trainer.global_rank,
            "metric_definitions": module.metric_definitions(),
            "test_digest": module.digests.get("test"),  # the test labels / groups scored against (report: like with like)
            "parameters": sum(p.numel() for p in net.parameters()),
            "config": OmegaConf.to_container(cfg, resolve=True)}


def result_warnings(test: dict[str, float], chance: float, loss_trace: Any) -> list[str]:
    """One line each for results that say the model learnt nothing usable: a test AUC within two standard
    errors of chance on these labels, or a training loss that did not fall."""
    lines = []
    aucs = [k for k in test if "/auc/" in k and test[k] == test[k]]
    # the mean over the label columns (what chance_auc's noise is for), or the only AUC
    key = next((k for k in aucs if k.endswith("/auc/mean")), aucs[0] if len(aucs) == 1 else None)
    if key is not None and test[key] < chance:
        lines.append(f"{key} = {test[key]:.4f} cannot be told from chance (below 0.5 + 2 standard errors = "
                     f"{chance:.4f} on these test labels). Fix: train longer (trainer.max_epochs) or on more data "
                     "(a larger replica, the real files); check the learning rate")
    fell = loss_trace.did_not_fall() if loss_trace is not None else None
    if fell is not None:
        lines.append(f"the training loss did not fall (mean {fell[0]:.4f} over the first steps, {fell[1]:.4f} over "
                     "the last). Fix: check the learning rate (optimizer.dense.lr) and the data; try debug=overfit")
    return lines


def _logger_folder(cfg: Any, run_dir: Path) -> dict[str, str]:
    """The logger writes into the folder this run resolved (for resume=true the interrupted run's, not the
    new one Hydra made), unless the user pointed logger.save_dir somewhere else."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_folder = HydraConfig.get().runtime.output_dir
    except ValueError:  # not under Hydra (the bench's worker)
        return {}
    return {"save_dir": str(run_dir)} if cfg.logger.get("save_dir") == hydra_folder else {}


def fit(cfg: Any, run_dir: Path, trainer: Any, module: Any, datamodule: Any, last: Path) -> float:
    """Train (or resume, after checking the run's settings and the checkpoint); returns the seconds."""
    from omegaconf import OmegaConf

    from recbench.interrupts import before_training
    from recbench.resume_guard import remember_config

    resume_from = str(last) if cfg.resume and last.exists() else None
    config = OmegaConf.to_container(cfg, resolve=True)
    if resume_from:  # verified at the start of train()
        print(f"recbench: resuming from {resume_from}", file=sys.stderr)
    elif trainer.is_global_zero:
        remember_config(run_dir, config)
    started = time.perf_counter()
    import signal

    # the handlers before fit come back after it: recbench's (the CLI) or a caller's (train() as a library)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    before_training()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return time.perf_counter() - started


def evaluate_checkpoint(cfg: Any, trainer: Any, module: Any, datamodule: Any) -> Path:
    """Validate and test `cfg.ckpt_path` with this config's data, model and heads; a checkpoint that is
    missing, unreadable or made for another model is one line."""
    path = Path(str(cfg.ckpt_path or "")).expanduser()
    if not cfg.ckpt_path or not path.is_file():
        raise UserInputError(f"train=false needs a checkpoint to evaluate; ckpt_path={cfg.ckpt_path} is not a file. "
                             "Fix: python -m recbench eval ckpt_path=experiments/runs/<run>/checkpoints/best.ckpt")
    try:
        trainer.validate(module, datamodule=datamodule, ckpt_path=str(path), verbose=False)
    except RuntimeError as error:
        if "state_dict" not in str(error):
            raise
        raise UserInputError(f"{path} does not fit model '{cfg.model.net._target_}' as configured here "
                             f"({str(error).strip().splitlines()[0][:160]}). Fix: evaluate with the overrides of the run that "
                             "saved it (`python -m recbench eval ckpt_path=...` reads them from its run folder)") from None
    except (EOFError, OSError, ValueError, pickle.UnpicklingError) as error:
        raise UserInputError(f"{path} cannot be loaded ({type(error).__name__}: damaged or not a Lightning "
                             "checkpoint). Fix: pass another checkpoint (checkpoints/best.ckpt or last.ckpt of a run)") from None
    trainer.test(module, datamodule=datamodule, ckpt_path=str(path), verbose=False)
    return path


def eval_arguments(argv: list[str]) -> list[str]:
    """`eval ckpt_path=<ckpt> [key=value ...]` as run overrides: the overrides of the run that saved the
    checkpoint (read from its folder, checked as `recbench.rerun` checks a record's), then the ones given
    here (they win), then train=false."""
    import yaml

    from recbench.rerun import check_overrides as check_record_overrides

    given = argv[1:]
    ckpt = next((arg.split("=", 1)[1].strip("'\"") for arg in given if arg.startswith("ckpt_path=")), None)
    if not ckpt or not Path(ckpt).expanduser().is_file():
        raise UserInputError(f"eval needs an existing checkpoint (ckpt_path={ckpt}). "
                             "Fix: python -m recbench eval ckpt_path=experiments/runs/<run>/checkpoints/best.ckpt")
    path = Path(ckpt).expanduser().resolve()
    saved = path.parent.parent / ".hydra" / "overrides.yaml"
    inherited = []
    if saved.is_file():
        skip = ("resume=", "train=", "ckpt_path=", "predictions=", "hydra.")
        inherited = [o for o in yaml.safe_load(saved.read_text()) or [] if not o.lstrip("+~").startswith(skip)]
        check_record_overrides(inherited)
        keys = {arg.split("=", 1)[0].lstrip("+~") for arg in given}
        inherited = [o for o in inherited if o.split("=", 1)[0].lstrip("+~") not in keys]
        print(f"recbench: evaluating {path} with its run's overrides: {' '.join(inherited) or '(none)'}",
              file=sys.stderr)
    rest = [arg for arg in given if not arg.startswith("ckpt_path=")]
    quoted = str(path).replace("\\", "\\\\").replace("'", "\\'")  # Lightning names checkpoints epoch=3-step=100.ckpt
    return [*inherited, *rest, f"ckpt_path='{quoted}'", "train=false"]


def _deterministic(trainer_cfg: Any) -> bool:
    """`trainer.deterministic: null` means true on CPU (bit-reproducible runs) and false on GPU."""
    if trainer_cfg.get("deterministic") is not None:
        return bool(trainer_cfg.deterministic)
    import torch

    return trainer_cfg.accelerator == "cpu" or (trainer_cfg.accelerator == "auto" and not torch.cuda.is_available())


def resume_dir(run_dir: Path, overrides: list[str]) -> Path:
    """The run to continue for `resume=true`: this run dir if it holds a checkpoint, else the
    newest interrupted sibling run (a checkpoint, no finished record) made by the same overrides."""
    if (run_dir / "checkpoints" / "last.ckpt").exists():
        return run_dir
    wanted = sorted(o for o in overrides if not o.startswith("resume="))
    for candidate in sorted(run_dir.parent.iterdir(), reverse=True):
        saved = candidate / ".hydra" / "overrides.yaml"
        if candidate == run_dir or not (candidate / "checkpoints" / "last.ckpt").exists() or not saved.exists():
            continue
        from omegaconf import OmegaConf

        if sorted(o for o in OmegaConf.load(saved) if not o.startswith("resume=")) == wanted:
            return candidate
    return run_dir


def leave_new_folder(new: Path, run_dir: Path) -> None:
    """resume=true continues an earlier run folder, but Hydra has already made a new one for this process
    (its .hydra and log file): log into the resumed run's folder instead and remove the new one, so a
    resume leaves no stray run behind."""
    import logging
    import shutil

    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == new:
            handler.close()  # reopened on the next record, in append mode, at the resumed run's log
            handler.baseFilename, handler.mode = str(run_dir / Path(handler.baseFilename).name), "a"
    if all(p.name == ".hydra" or p.suffix == ".log" for p in new.iterdir()):  # nothing else was written there
        shutil.rmtree(new, ignore_errors=True)


def config_error(error: Exception) -> UserInputError:
    """Hydra's instantiation error (e.g. a key the constructor does not take) as one line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    where = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("full_key:")), "config")
    cause = lines[1] if len(lines) > 1 else lines[0]
    return UserInputError(f"config '{where}': {cause}. Fix: remove or correct that key "
                          f"(`python -m recbench --cfg job` prints the valid ones)")


def _best_epoch(history: list[dict[str, Any]], monitor: str, mode: str) -> dict[str, Any]:
    scored = [h for h in history if h.get(monitor) == h.get(monitor)]  # drop NaN
    if not scored:
        return history[-1] if history else {}
    pick = max if mode == "max" else min
    return pick(scored, key=lambda h: h[monitor])


DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)


def traceback_to_log_files() -> None:
    """The exception being handled, into the run's log file(s) only (the console shows it once, raised)."""
    import logging

    record = logging.getLogger("recbench").makeRecord("recbench", logging.ERROR, __file__, 0, "run failed", None,
                                                      sys.exc_info())
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def write_record(run_dir: Path, record: dict[str, Any]) -> str:
    """A failed or interrupted run's record. Returns "" or, when even that cannot be written (a full disk),
    the words the caller appends to its one line."""
    from recbench.records import write_json_atomic

    try:
        write_json_atomic(run_dir / "results.json", record)
        return ""
    except OSError as error:
        return f" (and {run_dir / 'results.json'} could not be written: {error.strerror or error})"


def interrupted(run_dir: Path, base: dict[str, Any], signum: int) -> None:
    """Ctrl+C or SIGTERM (recbench/interrupts.py): an `interrupted` record, one line, exit 128 + signal.
    A sweep stops too: the user (or the scheduler) asked everything to stop."""
    from recbench.interrupts import ignore_signals, signal_name

    ignore_signals()
    last = run_dir / "checkpoints" / "last.ckpt"
    how = (f"{last} holds the last saved point. Fix: run the same command with resume=true to go on"
           if last.exists() else "it had saved no checkpoint yet. Fix: run the same command again")
    line = f"interrupted by {signal_name(signum)}; {how}"
    unrecorded = write_record(run_dir, {**base, "status": "interrupted", "error": line})
    print(f"recbench: {line}{unrecorded}", file=sys.stderr, flush=True)
    sys.exit(128 + signum)


def hydra_entry() -> None:
    import logging

    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import InstantiationException

    from recbench import config  # noqa: F401  (registers resolvers)
    from recbench.claims import RunDirInUse, claim_run_dir
    from recbench.records import git_commit, package_versions, summary_table, write_json_atomic

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
    def run(cfg) -> float | None:
        hydra_cfg = HydraConfig.get()
        run_dir = Path(hydra_cfg.runtime.output_dir)
        choices = dict(hydra_cfg.runtime.choices)
        if cfg.get("resume"):
            run_dir = resume_dir(run_dir, list(hydra_cfg.overrides.task))
            if run_dir != Path(hydra_cfg.runtime.output_dir) and hydra_cfg.mode.name == "RUN":
                leave_new_folder(Path(hydra_cfg.runtime.output_dir), run_dir)
            finished = run_dir / "results.json"
            if finished.exists() and json.loads(finished.read_text()).get("status") == "finished":
                print(f"recbench: {run_dir} already finished; nothing to resume", file=sys.stderr)
                return
        try:
            release = claim_run_dir(run_dir)
        except RunDirInUse as error:  # nothing is written to a folder another run owns
            print(f"recbench: error: {error}", file=sys.stderr)
            if hydra_cfg.mode.name == "RUN":
                sys.exit(2)
            return float("nan")
        import signal

        from recbench.console import tee_console

        handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            if os.environ.get("LOCAL_RANK", "0") != "0":  # a DDP worker rank: Lightning gives it its own log
                return claimed(cfg, hydra_cfg, run_dir, choices)
            with tee_console(run_dir / "__main__.log"):  # the console, without progress-bar redraws
                return claimed(cfg, hydra_cfg, run_dir, choices)
        finally:
            release()
            for signum, handler in handlers.items():  # the next sweep member, or an in-process caller
                signal.signal(signum, handler)

    def claimed(cfg, hydra_cfg, run_dir: Path, choices: dict[str, str]) -> float | None:
        base = {"model": choices.get("model"), "data": choices.get("data"), "task": choices.get("task"),
                "seed": cfg.get("seed"), "tags": list(cfg.get("tags") or []), "run_dir": str(run_dir), "versions": package_versions(),
                "git_commit": git_commit(CONF_DIR.parent), "overrides": list(hydra_cfg.overrides.task)}
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        from recbench.interrupts import first_signal, outside_training

        outside_training()  # Ctrl+C / SIGTERM from here on: an `interrupted` record, never a silent exit 0
        try:
            try:
                record = {**base, **train(cfg, run_dir, choices)}
            except InstantiationException as error:
                if isinstance(error.__cause__, UserInputError):
                    raise error.__cause__ from None
                raise config_error(error) from None
        except (SIGTERMException, KeyboardInterrupt):  # preempted (SLURM, `timeout`) or Ctrl+C
            interrupted(run_dir, base, first_signal())
        except SystemExit as error:
            if isinstance(error.__context__, KeyboardInterrupt):  # Lightning's exit after a second Ctrl+C
                interrupted(run_dir, base, first_signal())
            raise
        except (UserInputError, NumericalFault) as error:
            unrecorded = write_record(run_dir, {**base, "status": "failed", "error": str(error)})
            if os.environ.get("HYDRA_FULL_ERROR") == "1":  # developers: the traceback too
                traceback.print_exc()
            print(f"recbench: error: {error}{unrecorded}", file=sys.stderr)
            if hydra_cfg.mode.name == "RUN":
                sys.exit(2 if isinstance(error, UserInputError) else 1)
            return float("nan")  # in a sweep the failure is recorded and the sweep goes on
        except Exception as error:  # a crash (a bug, out of memory, NaN): recorded like a user error
            message = str(error).strip().splitlines()
            line = f"{type(error).__name__}: {message[0] if message else ''}".strip()
            if isinstance(error, OSError) and error.errno in DISK_ERRORS:  # a checkpoint or log on a full disk
                # the file named may be a library's temp (Lightning saves checkpoints through one): name the run too
                line = (f"could not write {error.filename or 'a file'} for the run in {run_dir} ({error.strerror}). "
                        "Fix: free disk space (or fix the folder's permissions), then run again with resume=true")
                unrecorded = write_record(run_dir, {**base, "status": "failed", "error": line})
                print(f"recbench: error: {line}{unrecorded}", file=sys.stderr, flush=True)
                if hydra_cfg.mode.name == "RUN":
                    sys.exit(2)
                return float("nan")
            unrecorded = write_record(run_dir, {**base, "status": "failed", "error": line})
            if unrecorded:
                print(f"recbench: error: {line}{unrecorded}", file=sys.stderr, flush=True)
            if hydra_cfg.mode.name == "RUN":
                traceback_to_log_files()  # the console gets it from the raise
                raise  # a single run keeps its traceback
            logging.getLogger("recbench").error("run failed", exc_info=True)  # traceback -> <run>/__main__.log
            print(f"recbench: error: {line} (traceback in {run_dir / '__main__.log'}); the sweep goes on",
                  file=sys.stderr)
            return float("nan")
        if record.pop("global_rank"):
            return  # DDP: rank 0 writes the record (every rank holds the same gathered metrics)
        title = (f"\nTest metrics: model={record['model']} data={record['data']} "
                 f"({record['data_source']}) seed={record['seed']}")
        print(summary_table(record["metrics"]["test"], title))  # first: they survive a failed write
        for line in record.get("warnings", []):
            print(f"recbench: warning: {line}", file=sys.stderr, flush=True)
        try:
            write_json_atomic(run_dir / "results.json", record)
        except OSError as error:  # disk full, quota, read-only: one line, the metrics are printed above
            print(f"recbench: error: could not write {run_dir / 'results.json'} ({error.strerror or error}); the "
                  "test metrics are printed above. Fix: free disk space and re-run (or resume=true)",
                  file=sys.stderr, flush=True)
            sys.exit(2)
        print(f"results: {run_dir / 'results.json'}")
        # the objective of a hyper-parameter search (hparams_search=..., Optuna sweeper): the validation
        # value of the monitored metric at the best epoch (never a test metric)
        return float(record["metrics"]["valid"].get(cfg.task.monitor, float("nan")))

    run()


USAGE = """recbench: benchmark recommendation models on one config-composed run.

usage: python -m recbench [group=option ...] [key=value ...]      one run
       python -m recbench -m key=a,b,c ...                        a sweep (Hydra multirun)
       python -m recbench eval ckpt_path=<ckpt> [key=value ...]   evaluate a saved checkpoint again
       python -m recbench --cfg job [overrides]                   print the composed config

examples:
  python -m recbench model=din data=tmall
  python -m recbench model=moment_cross data=kuailive seed=2 trainer.max_epochs=3
  python -m recbench model=din data=fuxictr data.config=PATH/dataset_config.yaml data.dataset_id=NAME
  python -m recbench -m experiment=a2gen_tmall                      (a paper's comparison)
  python -m recbench model=mmoe debug=fdr                          (one batch of each split)
  python -m recbench model=a2gen resume=true                       (continue an interrupted run)
  python -m recbench.report experiments/                           (leaderboard)

config groups (conf/<group>/<option>.yaml):
{groups}
README.md explains each; Hydra's own help follows.
"""


def usage() -> str:
    lines = []
    for group in CHOICE_GROUPS:
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml") if p.stem != "default")
        lines.append(textwrap.fill(", ".join(options), width=110, initial_indent=f"  {group + ':':16s}",
                                   subsequent_indent=" " * 18))
    return USAGE.format(groups="\n".join(lines))


def main() -> None:
    if any(arg in ("--help", "-h") for arg in sys.argv[1:]):
        print(usage())  # recbench's usage first; Hydra prints its generic page after it
        if "-h" in sys.argv[1:]:
            return
    try:
        if sys.argv[1:2] == ["eval"]:
            sys.argv[1:] = eval_arguments(sys.argv[1:])
        check_choices(sys.argv[1:])
        check_overrides(sys.argv[1:])
    except UserInputError as error:
        print(f"recbench: error: {error}", file=sys.stderr)
        sys.exit(2)
    hydra_entry()


if __name__ == "__main__":
    main()
