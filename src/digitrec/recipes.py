"""Named training recipes: the settings a model is meant to be trained with.

``digitrec train --model cnn`` uses the ``cnn`` recipe; ``--recipe NAME`` picks
one explicitly; any flag given on the command line overrides the recipe.
The classic models keep the setups they are known by, so they can be compared
with our own ``fast`` and ``best``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from digitrec.errors import DigitrecError
from digitrec.models import MODELS


@dataclass(frozen=True)
class TrainConfig:
    model: str = "fast"
    dataset: str = "mnist"
    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"  # adam, adamw, sgd, adadelta
    weight_decay: float = 0.0
    schedule: str = "none"  # onecycle, cosine, plateau, step, none
    augment: bool = False
    rotate: float = 10.0  # degrees of random rotation, with augment
    elastic: float = 0.0  # share of images elastically warped, with augment
    strays: float = 0.0  # share of images given a stray pen line, with augment
    outline: float = 0.0  # share of images reduced to the outline of their strokes, with augment
    pen: float = 0.0  # share of images redrawn along their skeleton with an even pen, with augment
    styles: float = 0.0  # share of 1s given a flag and of 7s a bar (MNIST only), with augment
    label_smoothing: float = 0.0
    # Decay of an exponential moving average of the weights, updated after every step;
    # 0 = off. With it, validation, checkpoints and callbacks see the average.
    ema: float = 0.0
    early_stop: int = 0  # patience in epochs without a better validation accuracy; 0 = off
    seed: int = 0  # weights, shuffling and augmentation
    # The validation split has its own seed, the same for every run by default, so runs
    # of any seed are compared (and ensembled) on images none of them trained on.
    split_seed: int = 0
    device: str = "auto"
    # bfloat16 autocast (weights, optimizer and batch norm stay float32): "auto" uses it
    # where the hardware computes it natively (recent GPUs; CPUs with AVX512-BF16 or
    # AMX), "bf16" everywhere, "fp32" never.
    precision: str = "auto"
    val_size: int = 5000
    limit: int = 0  # train on only this many training images (quick experiments); 0 = all
    recipe: str = ""
    # Start from these weights instead of random ones (fine-tuning): a checkpoint, a run,
    # or "default" for the model shipped in the package. Its model must be this run's.
    init: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        d = {"split_seed": d.get("seed", 0), **d}  # runs from before split_seed split by seed
        d = {"precision": "fp32", **d}  # and before --precision, CPUs trained in float32
        return cls(**{k: v for k, v in d.items() if k in known})


OPTIMIZERS = ("adam", "adamw", "sgd", "adadelta")
SCHEDULES = ("onecycle", "cosine", "plateau", "step", "none")
PRECISIONS = ("auto", "bf16", "fp32")

RECIPES: dict[str, TrainConfig] = {
    # The classic setups, as tutorials train them.
    "mlp": TrainConfig(model="mlp", epochs=10, batch_size=128, lr=1e-3, optimizer="adam"),
    "cnn": TrainConfig(model="cnn", epochs=12, batch_size=128, lr=1e-3, optimizer="adam"),
    "cnn4": TrainConfig(model="cnn4", epochs=15, batch_size=128, lr=1e-3, optimizer="adam"),
    # pytorch/examples mnist/main.py: Adadelta lr 1.0, StepLR gamma 0.7, batch 64, 14 epochs.
    "classic": TrainConfig(
        model="cnn", epochs=14, batch_size=64, lr=1.0, optimizer="adadelta", schedule="step"
    ),
    # Ours.
    # One epoch to ~99% in seconds on a CPU; batch and peak rate chosen (docs/results.md#measured).
    "fast": TrainConfig(
        model="fast", epochs=1, batch_size=256, lr=2e-2, optimizer="adamw", weight_decay=5e-4,
        schedule="onecycle", label_smoothing=0.1,
    ),
    # 99.5% in about a minute on a CPU; 8 epochs chosen on validation (docs/results.md#measured).
    "mid": TrainConfig(
        model="mid", epochs=8, batch_size=256, lr=2e-2, optimizer="adamw", weight_decay=5e-4,
        schedule="onecycle", augment=True, label_smoothing=0.1, ema=0.995,
    ),
    # 16 epochs fit a 30-minute budget per seed; longer did no better (docs/results.md#measured).
    "best": TrainConfig(
        model="best", epochs=16, batch_size=128, lr=3e-3, optimizer="adamw", weight_decay=5e-4,
        schedule="onecycle", augment=True, label_smoothing=0.1, early_stop=0,
    ),
}  # fmt: skip

DEFAULT_RECIPE = "fast"


def make_config(recipe: str | None, model: str | None, overrides: dict[str, Any]) -> TrainConfig:
    """The recipe named (or the model's own, or the default), then the explicit overrides."""
    name = recipe or (model if model in RECIPES else None) or DEFAULT_RECIPE
    if name not in RECIPES:
        raise DigitrecError(f"Unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    cfg = replace(RECIPES[name], recipe=name)
    if model:
        cfg = replace(cfg, model=model)
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    if cfg.model not in MODELS:  # before any run directory is made for it
        raise DigitrecError(f"Unknown model {cfg.model!r}; choose one of: {', '.join(MODELS)}")
    if cfg.optimizer not in OPTIMIZERS:
        raise DigitrecError(f"Unknown optimizer {cfg.optimizer!r}; choose {', '.join(OPTIMIZERS)}")
    if cfg.schedule not in SCHEDULES:
        raise DigitrecError(f"Unknown schedule {cfg.schedule!r}; choose {', '.join(SCHEDULES)}")
    if cfg.precision not in PRECISIONS:
        raise DigitrecError(f"Unknown precision {cfg.precision!r}; choose {', '.join(PRECISIONS)}")
    for share in ("elastic", "strays", "outline", "pen", "styles"):
        if not 0 <= getattr(cfg, share) <= 1:
            raise DigitrecError(f"--{share} {getattr(cfg, share)}: a share of images, in [0, 1]")
    if cfg.styles and cfg.dataset != "mnist":
        raise DigitrecError(f"--styles writes 1s and 7s differently: MNIST only, not {cfg.dataset}")
    if not 0 <= cfg.ema < 1:
        raise DigitrecError(f"--ema {cfg.ema}: the decay must be in [0, 1), e.g. 0.999")
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.lr <= 0:
        raise DigitrecError("--epochs and --batch-size must be at least 1 and --lr positive")
    if cfg.val_size == 0 and (cfg.early_stop or cfg.schedule == "plateau"):
        raise DigitrecError(
            "--val-size 0 holds no images out, and --early-stop and --schedule plateau are "
            "decided on validation: give a validation split or drop them"
        )
    return cfg
