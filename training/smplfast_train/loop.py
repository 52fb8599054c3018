"""The base training loop: run folder, distributed setup, model, optimiser, schedule, checkpoints, logs.

:class:`Trainer` owns everything a loop shares; a subclass implements :meth:`Trainer.setup` (its extra
state) and :meth:`Trainer.train_step` (forward, fitting, losses; the base does backward and the
optimiser step). A run folder holds::

    config.yaml          the resolved configuration
    ckpt/last.pt         model, optimiser, scheduler, step, data-stream position, RNG states (atomic)
    fits/                the fits dictionary (written with every checkpoint; see fits.py)
    log.jsonl            one line per ``log_every`` steps: every loss term, fit statistics, times
    eval/step_N.json     per-sample metrics of the evaluation splits
    pictures/            prediction and fit over the crop every ``pic_every`` steps
    tb/                  TensorBoard events when the tensorboard package is installed

``--resume`` continues from ``ckpt/last.pt``: the next batch is exactly the one the uninterrupted run
would have drawn. Under ``torchrun`` the model is wrapped in DistributedDataParallel (gloo on CPU, nccl on
GPU); each rank draws its own share of every epoch; rank 0 writes the files.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist

from .config import Config, config_from_dict, config_to_dict, save_config
from .data import BatchStream, ResumableSampler, build_train_set
from .heads.hmr import build_hmr

__all__ = ["Trainer", "DistInfo", "TrainingError", "atomic_torch_save", "load_checkpoint"]

CKPT_VERSION = 1


class TrainingError(RuntimeError):
    """A run that cannot continue (diverged, wrong checkpoint, existing run folder)."""


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "DistInfo":
        """Under torchrun (WORLD_SIZE > 1) join the process group (nccl with CUDA, else gloo)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary file, fsync, rename: a kill never leaves a truncated checkpoint."""
    from smplfast._io import atomic_write

    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path, map_location="cpu") -> dict:
    """A checkpoint written by :class:`Trainer`, checked for its keys (clear errors otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise TrainingError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise TrainingError(f"checkpoint {path} is not a training checkpoint (expected a dict with 'model' and 'config')")
    return ckpt


def load_trained(path, trainers, build, device="cpu"):
    """``(network in eval mode, config)`` of a checkpoint written by one of ``trainers`` (a name or a
    tuple of names): ``build(cfg)`` makes the network its config describes, which gets the weights."""
    from .config import config_from_dict

    trainers = (trainers,) if isinstance(trainers, str) else tuple(trainers)
    ckpt = load_checkpoint(path, map_location=device)
    cfg = config_from_dict(ckpt["config"])
    if cfg.trainer not in trainers:
        raise TrainingError(f"{path} is a {cfg.trainer!r} checkpoint (preset {cfg.preset!r}), not a "
                            f"{' / '.join(trainers)} one")
    net = build(cfg).to(device)
    net.load_state_dict(ckpt["model"])
    return net.eval(), cfg


def _lr_factor(cfg: Config, step: int) -> float:
    if cfg.lr_schedule == "cosine" and cfg.num_steps > 0:
        t = min(step / cfg.num_steps, 1.0)
        floor = cfg.lr_min / cfg.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    return 1.0


class Trainer:
    """The loop shared by the training presets (see the module docstring)."""

    def __init__(self, cfg: Config, run_dir, *, resume: bool = False, progress: bool = True):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.dist = DistInfo.from_env()
        torch.set_num_threads(cfg.threads)
        self.device = torch.device(f"cuda:{self.dist.local_rank}" if torch.cuda.is_available() else "cpu")
        self.progress = progress and self.dist.is_main
        self._seed_everything(cfg.seed + self.dist.rank)
        last = self.run_dir / "ckpt" / "last.pt"
        if not resume and last.exists():
            raise TrainingError(f"{self.run_dir} already holds a run (ckpt/last.pt); pass --resume to continue it "
                                "or choose another --out")
        if resume and not last.exists():
            raise TrainingError(f"--resume: {last} not found")
        if self.dist.is_main:
            for sub in ("ckpt", "fits", "eval", "pictures"):
                (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        self._barrier()

        self.train_set = build_train_set(cfg)
        self.sampler = ResumableSampler(len(self.train_set), cfg.batch_size, cfg.seed, self.dist.rank, self.dist.world_size)
        self.model = self.build_model().to(self.device)
        if cfg.init_checkpoint:
            self._load_init(cfg.init_checkpoint)
        self.net = self.model
        if self.dist.world_size > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.find_unused_parameters)
        if cfg.optimizer == "adam":
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "rmsprop":  # the Pavlakos presets (PyTorch's defaults alpha 0.99, eps 1e-8)
            self.optimizer = torch.optim.RMSprop(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: _lr_factor(cfg, s))
        self.step = 0
        self.elapsed = 0.0  # training seconds over all sessions of this run
        self.skipped_steps = 0
        self.setup()
        stream_state = None
        if resume:
            stream_state = self._resume(last)
        self.stream = BatchStream(self.train_set.dataset, self.sampler, stream_state, cfg.num_workers)
        self.tb = self._tensorboard()

    # ------------------------------------------------------------------------------------ subclass API
    #: DDP: some parameters get no gradient in a step (e.g. heads a training stage does not supervise).
    find_unused_parameters = False

    def build_model(self) -> torch.nn.Module:
        """The network (called before :meth:`setup`); default SPIN's HMR regressor."""
        cfg = self.cfg
        return build_hmr(cfg.backbone, mean_params=cfg.mean_params or None, relu=cfg.hmr_relu, n_iter=cfg.hmr_iters)

    def setup(self) -> None:
        """Build the loop's own state (fits dictionary, fitter, ...)."""

    def train_step(self, batch: dict) -> Tuple[torch.Tensor, Dict[str, float], Dict[str, float]]:
        """Forward (and fitting): returns (total loss, statistics to log, seconds per stage)."""
        raise NotImplementedError

    def extra_state(self) -> dict:
        """State of the subclass saved in the checkpoint (small; large arrays go to their own files)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def save_extra_files(self) -> None:
        """Write the subclass's files (e.g. the fits dictionary) next to the checkpoint (rank 0)."""

    def on_log(self, step: int) -> Dict[str, float]:
        """Extra values for the log line at ``step`` (e.g. dictionary diagnostics)."""
        return {}

    def evaluate(self, step: int) -> Optional[dict]:
        """Evaluate on the configured splits; returns the results (rank 0)."""
        return None

    def evaluate_splits(self, step: int, evaluate_one, header: dict) -> Optional[dict]:
        """Run ``evaluate_one(split_dir)`` on every ``eval_splits`` folder that exists (rank 0; a missing split
        is skipped with a message) and write ``eval/step_N.json`` = ``{"step", **header, "results"}``
        atomically. Returns ``{split: result}`` (None on other ranks or without splits)."""
        cfg = self.cfg
        if not self.dist.is_main or not cfg.eval_splits:
            return None
        from .eval.runner import resolve_split

        results = {}
        for split in cfg.eval_splits:
            try:
                resolve_split(Path(cfg.data) / split)
            except FileNotFoundError as e:
                print(f"evaluation skipped: {e}")
                continue
            results[split] = evaluate_one(Path(cfg.data) / split)
        if results:
            path = self.run_dir / "eval" / f"step_{step}.json"
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps({"step": step, **header, "results": results}))
            tmp.replace(path)
        return results

    # ---------------------------------------------------------------------------------------- running
    def apply_loss(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> bool:
        """Backward ``loss`` and step ``optimizer`` unless the loss or a gradient is non-finite; returns
        whether the step was applied. Every rank decides together and runs a backward either way, or
        DDP would hang; gradients of the whole model are cleared first, so an optimiser over part of it
        (an alternating update) never sees gradients left by another loss."""
        finite = bool(torch.isfinite(loss).item())
        if self.dist.world_size > 1:
            flag = torch.tensor([0.0 if finite else 1.0], device=self.device)
            dist.all_reduce(flag)
            finite = flag.item() == 0
        self.model.zero_grad(set_to_none=True)
        if not finite:
            (torch.nan_to_num(loss) * 0.0).backward()  # DDP's reducer expects a backward; nothing is applied
            self.model.zero_grad(set_to_none=True)
            return False
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        if not all(p.grad is None or torch.isfinite(p.grad).all() for p in self.model.parameters()):
            return False
        optimizer.step()
        return True

    def train(self) -> dict:
        """Run until ``num_steps`` or ``time_budget_s``; checkpoint, evaluate; returns a summary."""
        cfg = self.cfg
        from tqdm import tqdm

        bar = tqdm(total=cfg.num_steps, initial=self.step, desc=cfg.preset, unit="step", disable=not self.progress)
        window: Dict[str, list] = {}
        self._clock = time.perf_counter()
        stop_reason = "num_steps"
        try:
            while self.step < cfg.num_steps:
                if cfg.time_budget_s > 0 and self._out_of_time():
                    stop_reason = "time_budget_s"
                    break
                t0 = time.perf_counter()
                batch = self.stream.next_batch()
                t_data = time.perf_counter() - t0
                self.net.train()
                loss, stats, times = self.train_step(batch)
                t1 = time.perf_counter()
                finite = self.apply_loss(loss, self.optimizer)
                if not finite:
                    self.skipped_steps += 1
                    stats["skipped_nonfinite"] = 1.0
                    if self.skipped_steps > 20 and self.skipped_steps > 0.05 * (self.step + 1):
                        raise TrainingError(f"{self.skipped_steps} steps had a non-finite loss or gradient; the run diverged "
                                            f"(last statistics: {stats})")
                self.scheduler.step()
                self.step += 1
                times.update(data=t_data, backward=time.perf_counter() - t1, step=time.perf_counter() - t0)
                for k, v in {**stats, **{f"time_{k}": v for k, v in times.items()}}.items():
                    window.setdefault(k, []).append(float(v))
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.num_steps:
                    self._log(window)
                    window = {}
                if cfg.ckpt_every and self.step % cfg.ckpt_every == 0:
                    self.checkpoint()
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.num_steps:
                    self.evaluate(self.step)
        finally:
            bar.close()
        if window:
            self._log(window)
        self.checkpoint()
        results = self.evaluate(self.step)
        if self.tb is not None:
            self.tb.close()
        return {"step": self.step, "stop_reason": stop_reason, "seconds": self.elapsed,
                "skipped_steps": self.skipped_steps, "eval": results}

    def _out_of_time(self) -> bool:
        """The time budget is spent (on any rank: the ranks stop at the same step)."""
        over = self.elapsed + (time.perf_counter() - self._clock) >= self.cfg.time_budget_s
        if self.dist.world_size > 1:
            flag = torch.tensor([1.0 if over else 0.0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            over = flag.item() > 0
        return over

    # ----------------------------------------------------------------------------------- checkpoints
    def checkpoint(self) -> None:
        """Write ``ckpt/last.pt`` and the subclass's files (rank 0); every rank waits for it."""
        now = time.perf_counter()
        self.elapsed += now - getattr(self, "_clock", now)
        self._clock = now
        rng_states = [self._rng_state()]
        if self.dist.world_size > 1:  # every rank's own stream (dropout), restored per rank on resume
            rng_states = [None] * self.dist.world_size
            dist.all_gather_object(rng_states, self._rng_state())
        if self.dist.is_main:
            self.save_extra_files()
            state = {
                "version": CKPT_VERSION,
                "config": config_to_dict(self.cfg),
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "step": self.step,
                "elapsed": self.elapsed,
                "skipped_steps": self.skipped_steps,
                "stream": self.stream.state_dict(),
                "rng": rng_states,
                "extra": self.extra_state(),
            }
            atomic_torch_save(state, self.run_dir / "ckpt" / "last.pt")
        self._barrier()

    def _resume(self, path: Path) -> dict:
        ckpt = load_checkpoint(path, map_location=self.device)
        stored = config_from_dict(ckpt["config"])
        for key in ("preset", "backbone", "hmr_iters", "img_res", "batch_size", "seed", "train_splits", "data"):
            if getattr(stored, key) != getattr(self.cfg, key):
                raise TrainingError(f"--resume: the checkpoint was made with {key}={getattr(stored, key)!r}, this run "
                                    f"has {getattr(self.cfg, key)!r}; a run resumes with its own settings")
        self._load_model_state(ckpt["model"], str(path))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.step = int(ckpt["step"])
        self.elapsed = float(ckpt.get("elapsed", 0.0))
        self.skipped_steps = int(ckpt.get("skipped_steps", 0))
        states = ckpt["rng"] if isinstance(ckpt["rng"], list) else [ckpt["rng"]]
        if len(states) == self.dist.world_size:
            self._set_rng_state(states[self.dist.rank])
        else:  # another number of processes: rank 0's stream, offset per rank
            self._set_rng_state(states[0])
            self._seed_everything(int(torch.randint(0, 2 ** 31 - 1, (1,))) + self.dist.rank)
        self.load_extra_state(ckpt.get("extra", {}))
        log = self.run_dir / "log.jsonl"
        if self.dist.is_main and log.is_file():  # steps after the checkpoint are run again: drop their lines
            keep = []
            for line in log.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= self.step:
                        keep.append(line)
                except json.JSONDecodeError:
                    pass  # a line cut by the kill
            tmp = log.with_name(log.name + ".tmp")
            tmp.write_text("".join(x + "\n" for x in keep))
            os.replace(tmp, log)
        return ckpt["stream"]

    def _load_model_state(self, state: dict, source: str) -> None:
        mine = self.model.state_dict()
        missing, unexpected = sorted(set(mine) - set(state)), sorted(set(state) - set(mine))
        wrong = sorted(k for k in set(mine) & set(state) if tuple(mine[k].shape) != tuple(state[k].shape))
        if missing or unexpected or wrong:
            raise TrainingError(f"{source} holds another model (backbone {self.cfg.backbone!r} expected): "
                                f"missing {missing[:5]}, unexpected {unexpected[:5]}, different shapes {wrong[:5]}")
        self.model.load_state_dict(state)

    def _load_init(self, path) -> None:
        ckpt = load_checkpoint(path, map_location=self.device)
        self._load_model_state(ckpt["model"], f"init_checkpoint {path}")

    # ---------------------------------------------------------------------------------------- helpers
    def _seed_everything(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2 ** 32)
        torch.manual_seed(seed)

    @staticmethod
    def _rng_state() -> dict:
        return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}

    @staticmethod
    def _set_rng_state(state: dict) -> None:
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"].cpu())
        if state.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def _barrier(self) -> None:
        if self.dist.world_size > 1:
            dist.barrier()

    def _tensorboard(self):
        if not (self.cfg.tensorboard and self.dist.is_main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # noqa: BLE001 - tensorboard is optional
            return None
        return SummaryWriter(str(self.run_dir / "tb"))

    def _log(self, window: Dict[str, list]) -> None:
        if not window:
            return
        line = {"step": self.step, "lr": self.optimizer.param_groups[0]["lr"]}
        for k, v in window.items():
            vals = [x for x in v if math.isfinite(x)]
            line[k] = float(np.mean(vals)) if vals else float("nan")
        line.update(self.on_log(self.step))
        if self.dist.is_main:
            with open(self.run_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(line) + "\n")
            if self.tb is not None:
                for k, v in line.items():
                    if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                        self.tb.add_scalar(k, v, self.step)
