"""Training configuration: one flat dataclass, presets in ``training/configs/<preset>.yaml``, ``--set`` overrides.

A preset file holds the values of its paper or code with their sources in comments::

    preset: spin
    trainer: spin
    description: ...
    common:            # every tier
      w_2d: 5.0        # [C] SPIN keypoint_loss_weight
    tiers:
      paper: {...}     # the paper's sizes (a GPU)
      cpu: {...}       # this machine's scale

:func:`load_config` resolves ``defaults < common < tiers[tier] < overrides`` and checks every key and
type; unknown keys, presets and tiers are errors naming the allowed values. The resolved config is
written to the run folder (``config.yaml``) and stored in every checkpoint.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import yaml

__all__ = ["Config", "ConfigError", "CONFIG_DIR", "TIERS", "preset_names", "load_config", "parse_overrides",
           "config_to_dict", "config_from_dict", "save_config"]

#: Where the preset files live.
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
TIERS = ("paper", "cpu")


class ConfigError(ValueError):
    """A preset, tier, key or value that does not exist or does not fit."""


@dataclass
class Config:
    """Every setting of a training run. Defaults are SPIN's code values where one exists; presets set
    the rest. Units: learning rates per step, times in seconds, image sizes in pixels."""

    # ------------------------------------------------------------------ identity
    preset: str = ""
    tier: str = "cpu"
    trainer: str = "spin"                 # which step: spin (the SPIN family) | mvspin (multi-view batches) | holopose
                                          # | pavlakos_priors (PosePrior + ShapePrior on synthetic instances)
                                          # | pavlakos_e2e (the priors fine-tuned with the reprojection loss)
    description: str = ""

    # ------------------------------------------------------------------ data
    data: str = "data/synth"              # folder with one subfolder per split (smplfast synth --split)
    train_splits: Dict[str, float] = field(default_factory=lambda: {"lab_train": 0.4, "wild_train": 0.6})
    unpaired: bool = False                # ignore 3D and SMPL labels of every split (SPIN's unpaired setting)
    eval_splits: List[str] = field(default_factory=lambda: ["wild_test", "lab_test"])
    eval_max_samples: int = 0             # 0: the whole split
    img_res: int = 224                    # network input crop
    augment: bool = True                  # SPIN's flip / rotation / scale / pixel noise
    crop_cache: bool = False              # pre-cropped uint8 images (no rotation or scale augmentation)
    num_workers: int = 0                  # DataLoader worker processes
    num_views: int = 0                    # mvspin: views per subject (the first num_views of the rig; 0 = all)
    independent_views: bool = True        # mvspin: rotation / scale drawn per view (one flip per subject)

    # ------------------------------------------------------------------ model
    backbone: str = "resnet50"
    hmr_relu: bool = False                # SPIN's port has no ReLU between fc1 and fc2
    hmr_iters: int = 3
    mean_params: str = ""                 # npz in SPIN's layout; "" = the bundled model's
    init_checkpoint: str = ""             # weights to start from (e.g. the lab pretrain)
    init_modules: List[str] = field(default_factory=list)  # holopose: modules taken from init_checkpoint ([] = all)

    # ------------------------------------------------------------------ optimisation
    optimizer: str = "adam"
    lr: float = 5e-5
    weight_decay: float = 0.0
    lr_schedule: str = "constant"         # constant | cosine
    lr_min: float = 0.0                   # cosine floor
    batch_size: int = 64
    num_steps: int = 1000                 # optimiser steps (the run ends at num_steps or time_budget_s)
    time_budget_s: float = 0.0            # 0: no limit
    grad_clip: float = 0.0                # 0: none

    # ------------------------------------------------------------------ losses (SPIN: 60 x [...])
    loss_scale: float = 60.0
    w_2d: float = 5.0
    w_3d: float = 5.0
    w_pose: float = 1.0
    w_betas: float = 0.001
    w_vert: float = 0.0
    w_cam: float = 1.0
    openpose_train_weight: float = 0.0
    gt_train_weight: float = 1.0
    w_prior: float = 0.0                  # hmr2d_prior: GMM + angle prior on the prediction (wild rows)

    # ------------------------------------------------------------------ fits
    fits: str = "none"                    # none | static | gt (oracle) | first_visit: where pseudo-GT SMPL comes from
                                          # (first_visit: no fit until a sample's first fit in the loop)
    static_fits: str = "static_fits"      # folder with {split}_static_fits.npz (fits: static); relative = inside `data`
    run_fit: bool = False                 # SMPLify in the loop, updating the dictionary
    fit_optimizer: str = "lm"             # lm | adam (SPIN's procedure)
    fit_fused: bool = True                # lm: the whole LM loop in one kernel call (False: the unfused loop)
    fit_iters: int = 100                  # Adam iterations per SMPLify stage (LM stops by itself: <= 5 + 30)
    fit_compare: str = "fair"             # fair | spin
    fit_threshold: float = 100.0          # mean reprojection loss under which a fit supervises
    fit_res: int = 224                    # SMPLify's virtual crop
    focal_length: float = 5000.0
    fit_skip_has_smpl: bool = True
    pose_prior: str = ""                  # GMM file for SMPLify and the prior loss; "" = shipped default
    beta_reset: float = 3.0               # fits with any |beta| above it supervise betas towards 0
    mv_fit: str = "multiview"             # mvspin: multiview (MV-SPIN) | calibrated (rig extrinsics) | single_view
    fit_threshold_views: str = "mean"     # mvspin: threshold on the mean over views | sum (MV-SPIN's code: 4x stricter)
    l3d_target: str = "gt"                # 3D joint loss against the GT 3D joints (code) | fit (paper Eq. 5: the fit's joints)

    # ------------------------------------------------------------------ holopose (TRAINING_SPEC §4)
    holopose_stage: int = 2               # 1: 2D heatmap + integral 3D heads only | 2: every head and loss, end to end
    regressor: str = "moe"                # moe (part-based mixture of experts) | direct6d | direct_euler | global (HMR)
    moe_k: int = 32                       # MoE clusters per joint (training/data/moe_clusters_K{K}.npz)
    pool_at: str = "pred"                 # part features pooled at: pred (decoded joints) | gt | mix
    pool_mix_prob: float = 0.5            # pool_at: mix, probability of the ground-truth joints
    iuv_splits: List[str] = field(default_factory=lambda: ["wild_train"])  # splits whose samples carry DensePose labels
    dp_points: int = 100                  # DensePose points per image for the surface loss L_DP
    heatmap_sigma: float = 0.0            # Gaussian target sigma in heatmap pixels; 0: 2 px per 64 px of heatmap
    w_hm: float = 100.0                   # heatmap MSE
    w_int3d: float = 1.0                  # integral 3D keypoints (L1, metres)
    w_int2d: float = 1.0                  # x-y marginal of the integral head on samples without 3D labels
    w_dp_index: float = 1.0               # part-index cross-entropy
    w_dp_uv: float = 1.0                  # U, V smooth-L1
    w_dp: float = 1.0                     # DensePose surface loss (Eq. 4) of the model

    # ------------------------------------------------------------------ pavlakos_priors (TRAINING_SPEC §5.3)
    prior_param_loss: str = "rotmat"      # aa (72 axis-angle values) | rotmat (24 x 9 Rodrigues entries)
    prior_param_reduction: str = "sum"    # sum: the paper's squared norm per sample | mean: the MSE
    prior_vertex_steps: int = 0           # the last N of num_steps add the per-vertex loss (0: parameter loss only)
    prior_w_vertex: float = 1.0           # weight of the per-vertex loss (the paper: equal to the parameter loss)
    prior_vertex_ramp: int = 0            # steps over which that weight rises linearly from 0 when the loss switches on
    prior_vertex_subsample: int = 0       # vertices per step for the per-vertex loss (0: all), rescaled
    prior_bank: str = "matched"           # matched (every pose family) | shifted (the lab families)
    prior_bank_seed: int = 0              # the synthetic-instance bank's seed
    prior_bank_size: int = 20000          # keypoint instances
    prior_sil_bank_size: int = 10000      # pre-rendered silhouettes (the first of the instances)
    prior_bank_dir: str = "prior_banks"   # cache of the banks; relative = inside `data`
    prior_kp_noise: float = 0.02          # detection noise sigma, fraction of the box side
    prior_drop_prob: float = 0.3          # probability of dropping 1-3 joints
    prior_swap_prob: float = 0.02         # probability of a left/right swap of one arm or leg
    prior_width: int = 1024               # hidden width of both priors
    prior_train: str = "both"             # both | pose | shape: the prior(s) a run trains (the other stays at its init)
    # pavlakos_e2e (TRAINING_SPEC §5.4): reprojection fine-tuning of the priors
    e2e_pose_init: str = ""               # pavlakos_priors checkpoint the PosePrior starts from
    e2e_shape_init: str = ""              # pavlakos_priors checkpoint the ShapePrior starts from
    e2e_mu: float = 10.0                  # keypoint term's weight against the silhouette term (the paper's mu)
    e2e_sigma: float = 0.1                # soft-silhouette sharpness, px^2 at 64^2 (SoftRas's 1e-4 normalised)
    e2e_alternate: bool = True            # a Priors update on synthetic instances after every fine-tuning update
    e2e_prior_batch: int = 32             # synthetic instances per alternating Priors update
    e2e_human2d_init: str = ""            # pavlakos_human2d checkpoint: fine-tune the whole network from images
    e2e_kp_extract: str = "argmax"        # argmax | softargmax: keypoints from Human2D's heatmaps (whole network)

    # ------------------------------------------------------------------ pavlakos_human2d (TRAINING_SPEC §5.2)
    hg_stacks: int = 2                    # hourglasses (the paper: 2)
    hg_width: int = 256                   # channels of the hourglass (Newell: 256; cpu tier 64)
    hg_lambda: float = 100.0              # lambda of L_hg = lambda * L_hm + L_sil
    hg_sigma: float = 1.0                 # Gaussian target sigma in heatmap pixels
    hg_in_res: int = 256                  # input crop (maps at hg_in_res / 4); must equal img_res

    # ------------------------------------------------------------------ loop
    seed: int = 0
    threads: int = 1
    log_every: int = 10
    ckpt_every: int = 200
    eval_every: int = 0                   # 0: only at the end
    diag_every: int = 100                 # fits dictionary against the hidden GT
    pic_every: int = 0                    # pictures of prediction and fit; 0: none
    tensorboard: bool = True              # when the tensorboard package is installed


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_HINTS = typing.get_type_hints(Config)
_CHOICES = {
    "tier": TIERS, "trainer": ("spin", "mvspin", "holopose", "pavlakos_priors", "pavlakos_e2e", "pavlakos_human2d"),
    "prior_param_loss": ("aa", "rotmat"), "prior_param_reduction": ("sum", "mean"), "prior_bank": ("matched", "shifted"),
    "prior_train": ("both", "pose", "shape"), "e2e_kp_extract": ("argmax", "softargmax"),
    "regressor": ("moe", "direct6d", "direct_euler", "global"), "pool_at": ("pred", "gt", "mix"),
    "moe_k": (8, 32, 128), "holopose_stage": (1, 2), "optimizer": ("adam", "sgd", "rmsprop"), "lr_schedule": ("constant", "cosine"),
    "fits": ("none", "static", "gt", "first_visit"), "mv_fit": ("multiview", "calibrated", "single_view"),
    "fit_threshold_views": ("mean", "sum"), "l3d_target": ("gt", "fit"), "fit_optimizer": ("lm", "adam"), "fit_compare": ("fair", "spin"),
    "backbone": ("resnet50", "resnet18", "tiny"),
}


def preset_names(config_dir: Optional[Path] = None) -> List[str]:
    """The presets: the yaml files of ``config_dir`` (default :data:`CONFIG_DIR`) not starting with ``_``."""
    folder = Path(config_dir or CONFIG_DIR)
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_"))


def _coerce(name: str, value: Any) -> Any:
    """Check ``value`` against the type of field ``name`` (ints are accepted for floats)."""
    hint = _HINTS[name]
    origin = typing.get_origin(hint)
    bad = ConfigError(f"config key {name!r} expects {getattr(hint, '__name__', str(hint))}; got {value!r}")
    if hint is bool:
        if not isinstance(value, bool):
            raise bad
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
    elif hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        value = float(value)
    elif hint is str:
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise bad
    elif origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise bad
        try:
            value = {str(k): float(v) for k, v in value.items()}
        except (TypeError, ValueError):
            raise bad from None
    elif origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise bad
        value = list(value)
    if name in _CHOICES and value not in _CHOICES[name]:
        raise ConfigError(f"config key {name!r} must be one of {', '.join(map(str, _CHOICES[name]))}; got {value!r}")
    return value


def _apply(cfg: Config, values: Mapping[str, Any], source: str) -> None:
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"{source}: unknown config key(s) {unknown}; known keys: {', '.join(sorted(_FIELDS))}")
    for k, v in values.items():
        setattr(cfg, k, _coerce(k, v))


def parse_overrides(pairs: Sequence[str]) -> Dict[str, Any]:
    """``["lr=1e-4", "train_splits={lab_train: 1.0}"]`` -> a dict; values are parsed as YAML."""
    out: Dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value; got {pair!r}")
        key, text = pair.split("=", 1)
        key = key.strip()
        try:
            out[key] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key}: value {text!r} is not valid YAML: {e}") from None
    return out


def _validate(cfg: Config) -> Config:
    checks = [
        (cfg.img_res >= 32, "img_res must be >= 32"),
        (cfg.batch_size >= 1, "batch_size must be >= 1"),
        (cfg.num_steps >= 0, "num_steps must be >= 0"),
        (cfg.lr > 0, "lr must be > 0"),
        (cfg.fit_res >= 32, "fit_res must be >= 32"),
        (cfg.threads >= 1, "threads must be >= 1"),
        (cfg.num_workers >= 0, "num_workers must be >= 0"),
        (cfg.hmr_iters >= 1, "hmr_iters must be >= 1"),
        (cfg.num_views == 0 or cfg.num_views >= 2, f"num_views must be 0 (all) or >= 2 (a multi-view preset); got {cfg.num_views}"),
        (cfg.l3d_target == "gt" or cfg.fits != "none", "l3d_target: fit needs fits (a dictionary to take the joints from)"),
        (bool(cfg.train_splits), "train_splits must name at least one split"),
        (all(v >= 0 for v in cfg.train_splits.values()) and abs(sum(cfg.train_splits.values()) - 1) < 1e-6,
         f"train_splits ratios must be >= 0 and sum to 1; got {cfg.train_splits}"),
        (not cfg.run_fit or cfg.fits != "none", "run_fit needs fits: static or gt (a dictionary to update)"),
        (cfg.fits != "static" or bool(cfg.static_fits), "fits: static needs static_fits (a folder of {split}_static_fits.npz)"),
        (cfg.trainer != "holopose" or (cfg.fits == "none" and not cfg.run_fit),
         "trainer: holopose uses no fits dictionary (fits: none, run_fit: false)"),
        (cfg.dp_points >= 0 and cfg.heatmap_sigma >= 0 and 0 <= cfg.pool_mix_prob <= 1,
         "dp_points and heatmap_sigma must be >= 0 and pool_mix_prob in [0, 1]"),
        (cfg.optimizer != "rmsprop" or cfg.trainer in ("pavlakos_priors", "pavlakos_human2d", "pavlakos_e2e"),
         "optimizer: rmsprop is only built by the pavlakos_* trainers"),
        (0 <= cfg.prior_vertex_steps and (cfg.trainer != "pavlakos_priors" or cfg.prior_vertex_steps <= cfg.num_steps),
         f"prior_vertex_steps must be in [0, num_steps]; got {cfg.prior_vertex_steps}"),
        (cfg.prior_vertex_subsample >= 0 and cfg.prior_w_vertex >= 0 and cfg.prior_width >= 1 and cfg.prior_vertex_ramp >= 0,
         "prior_vertex_subsample, prior_w_vertex and prior_vertex_ramp must be >= 0, prior_width >= 1"),
        (cfg.prior_bank_size >= 1 and 1 <= cfg.prior_sil_bank_size <= cfg.prior_bank_size,
         "prior_bank_size must be >= 1 and 1 <= prior_sil_bank_size <= prior_bank_size"),
        (cfg.prior_kp_noise >= 0 and 0 <= cfg.prior_drop_prob <= 1 and 0 <= cfg.prior_swap_prob <= 1,
         "prior_kp_noise must be >= 0, prior_drop_prob and prior_swap_prob in [0, 1]"),
        (cfg.trainer not in ("pavlakos_priors", "pavlakos_e2e") or (cfg.fits == "none" and not cfg.run_fit),
         f"trainer: {cfg.trainer} uses no fits dictionary (fits: none, run_fit: false)"),
        (cfg.e2e_mu >= 0 and cfg.e2e_sigma > 0 and cfg.e2e_prior_batch >= 1,
         "e2e_mu must be >= 0, e2e_sigma > 0 and e2e_prior_batch >= 1"),
        (cfg.log_every >= 1 and cfg.ckpt_every >= 0 and cfg.eval_every >= 0 and cfg.diag_every >= 0 and cfg.pic_every >= 0,
         "log_every must be >= 1 and the other *_every >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"config {cfg.preset or '?'}: {message}")
    return cfg


def load_config(preset: str, tier: str = "cpu", overrides: Optional[Mapping[str, Any]] = None, *,
                config_dir: Optional[Path] = None) -> Config:
    """The resolved :class:`Config` of ``preset`` at ``tier`` with ``overrides`` applied and checked."""
    folder = Path(config_dir or CONFIG_DIR)
    names = preset_names(folder)
    if preset not in names:
        raise ConfigError(f"unknown preset {preset!r}; presets: {', '.join(names)}")
    if tier not in TIERS:
        raise ConfigError(f"unknown tier {tier!r}; tiers: {', '.join(TIERS)}")
    path = folder / f"{preset}.yaml"
    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a preset file holds a mapping")
    extra = sorted(set(doc) - {"preset", "trainer", "description", "common", "tiers"})
    if extra:
        raise ConfigError(f"{path}: unknown top-level key(s) {extra}; expected preset, trainer, description, common, tiers")
    tiers = doc.get("tiers") or {}
    if tier not in tiers:
        raise ConfigError(f"preset {preset!r} has no tier {tier!r}; it has {', '.join(tiers) or 'none'}")
    cfg = Config()
    _apply(cfg, {"preset": preset, "tier": tier, "trainer": doc.get("trainer", "spin"),
                 "description": " ".join(str(doc.get("description", "")).split())}, str(path))
    _apply(cfg, doc.get("common") or {}, f"{path} (common)")
    _apply(cfg, tiers[tier] or {}, f"{path} (tiers.{tier})")
    if overrides:
        fixed = sorted({"preset", "tier"} & set(overrides))
        if fixed:
            raise ConfigError(f"--set cannot change {fixed}: use --preset / --tier")
        _apply(cfg, overrides, "--set")
    return _validate(cfg)


def config_to_dict(cfg: Config) -> Dict[str, Any]:
    """Plain JSON/YAML values."""
    return dataclasses.asdict(cfg)


def config_from_dict(values: Mapping[str, Any]) -> Config:
    """A :class:`Config` from :func:`config_to_dict` output (e.g. a checkpoint's), checked."""
    cfg = Config()
    _apply(cfg, dict(values), "stored config")
    return _validate(cfg)


def save_config(cfg: Config, path: os.PathLike) -> Path:
    """Write the resolved config as YAML (atomically)."""
    from smplfast._io import atomic_write_bytes

    return atomic_write_bytes(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False).encode())
