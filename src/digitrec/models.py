"""The model zoo. Every model maps a (N, 1, 28, 28) float batch in [0, 1] to logits.

Each network is a plain ``nn.Sequential`` that reads top to bottom. Input
normalization is the first layer, with its mean and std kept as buffers, so a
checkpoint carries everything needed to use it (and ONNX exports include it).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import nn

from digitrec.errors import DigitrecError


class Normalize(nn.Module):
    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def conv_bn(cin: int, cout: int, kernel: int = 3) -> list[nn.Module]:
    """Convolution, batch norm, ReLU: the block our own models are built from."""
    return [
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


def conv_pool_bn(cin: int, cout: int) -> list[nn.Module]:
    """Convolution, 2x2 max pooling, then batch norm and ReLU on the pooled maps."""
    return [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


def mlp(num_classes: int) -> list[nn.Module]:
    """Classic feedforward baseline: 784 -> 512 -> 256 -> 10 with dropout."""
    return [
        nn.Flatten(),
        nn.Linear(784, 512), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(512, 256), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(256, num_classes),
    ]  # fmt: skip


def cnn(num_classes: int) -> list[nn.Module]:
    """Classic Keras-tutorial CNN: conv32, pool, conv64, pool, dense128, dropout."""
    return [
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),   # 26 -> 13
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),  # 11 -> 5
        nn.Flatten(),
        nn.Linear(64 * 5 * 5, 128), nn.ReLU(), nn.Dropout(0.3),
        nn.Linear(128, num_classes),
    ]  # fmt: skip


def cnn4(num_classes: int) -> list[nn.Module]:
    """Four conv blocks of 32, 64, 128 and 256 filters with max pooling, dropout 0.5."""
    layers: list[nn.Module] = []
    for cin, cout in ((1, 32), (32, 64), (64, 128), (128, 256)):  # 28 -> 14 -> 7 -> 3 -> 1
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
    return [
        *layers,
        nn.Flatten(), nn.Dropout(0.5),
        nn.Linear(256, 256), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(256, num_classes),
    ]  # fmt: skip


def fast(num_classes: int) -> list[nn.Module]:
    """Ours, for accuracy per CPU-second: three small convolution blocks, pooled early.

    Few channels at full resolution (the first convolution dominates the cost on a CPU),
    and each block pools right after its convolution, before batch norm and ReLU, so
    those run on a quarter of the pixels (faster, as accurate: docs/results.md#measured).
    A single linear layer on the 3x3 maps.
    """
    return [
        *conv_pool_bn(1, 16),    # 28 -> 14
        *conv_pool_bn(16, 32),   # 14 -> 7
        *conv_pool_bn(32, 64),   # 7 -> 3
        nn.Flatten(),
        nn.Linear(64 * 3 * 3, num_classes),
    ]  # fmt: skip


def mid(num_classes: int) -> list[nn.Module]:
    """Ours, for 99.5% in a minute of CPU: fast half as wide again, one more convolution.

    ``fast`` levels off below 99.5% on validation however long it trains; the extra
    convolution sees the whole digit at 7x7 before the last pooling and lifts that
    ceiling (docs/results.md#measured).
    """
    return [
        *conv_pool_bn(1, 24),    # 28 -> 14
        *conv_pool_bn(24, 48),   # 14 -> 7
        *conv_bn(48, 72),        # 7
        *conv_pool_bn(72, 96),   # 7 -> 3
        nn.Flatten(),
        nn.Linear(96 * 3 * 3, num_classes),
    ]  # fmt: skip


def best(num_classes: int) -> list[nn.Module]:
    """Ours, for accuracy: VGG-style pairs of batch-normed 3x3 convolutions.

    Wide enough to model the variety of strokes, global average pooling and dropout
    before the classifier keep it from memorizing the training set.
    """
    return [
        *conv_bn(1, 32), *conv_bn(32, 32), nn.MaxPool2d(2),      # 28 -> 14
        *conv_bn(32, 64), *conv_bn(64, 64), nn.MaxPool2d(2),     # 14 -> 7
        *conv_bn(64, 128), *conv_bn(128, 128), nn.MaxPool2d(2),  # 7 -> 3
        *conv_bn(128, 256),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.25),
        nn.Linear(256, num_classes),
    ]  # fmt: skip


MODELS: dict[str, Callable[[int], list[nn.Module]]] = {
    "mlp": mlp,
    "cnn": cnn,
    "cnn4": cnn4,
    "fast": fast,
    "mid": mid,
    "best": best,
}


LINE_MODEL = "lines"  # the model name of a checkpoint holding a ``LineModel``
LINE_HEIGHT = 32  # a line model's input height: the digits' band takes the middle 26 px


class LineModel(nn.Module):
    """Reads a line of digits without cutting it: a (N, 1, 32, W) float batch in [0, 1] to
    (N, classes, W // 2) logits, one column of classes per 2 px, class 0 the blank of CTC.

    Convolutions see a digit's width; a bidirectional GRU along the line tells where one
    digit ends and the next begins when they touch or overlap (the CRNN of text reading).
    Every pooling after the first keeps the width: a 1 a few pixels wide still gets
    columns of its own, and two equal neighbours a blank between them.
    """

    def __init__(self, num_classes: int = 11, mean: float = 0.1307, std: float = 0.3081) -> None:
        super().__init__()
        self.features = nn.Sequential(
            Normalize(mean, std),
            *conv_bn(1, 32), nn.MaxPool2d(2),            # 32 -> 16, W -> W/2
            *conv_bn(32, 64), nn.MaxPool2d((2, 1)),      # 16 -> 8
            *conv_bn(64, 96), *conv_bn(96, 96), nn.MaxPool2d((2, 1)),  # 8 -> 4
            *conv_bn(96, 128), nn.MaxPool2d((4, 1)),     # 4 -> 1
            nn.Flatten(1, 2),
        )  # fmt: skip
        self.context = nn.GRU(128, 96, batch_first=True, bidirectional=True)
        self.head = nn.Linear(192, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        columns, _ = self.context(self.features(x).transpose(1, 2))
        return self.head(columns).transpose(1, 2)


def build_model(
    name: str, num_classes: int = 10, mean: float = 0.1307, std: float = 0.3081
) -> nn.Sequential:
    if name not in MODELS:
        raise DigitrecError(f"Unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return nn.Sequential(Normalize(mean, std), *MODELS[name](num_classes))


class Ensemble(nn.Module):
    """Several trained models as one: its output is the log of the members' mean
    probabilities, so its softmax is their average and the evaluation, every front end
    and the ONNX export treat an ensemble as just another model."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise DigitrecError("An ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logps = []
        for m in self.members:  # a loop, not a comprehension: TorchScript unrolls it
            logps.append(torch.log_softmax(m(x), dim=1))
        return torch.logsumexp(torch.stack(logps), dim=0) - math.log(len(logps))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def describe(name: str) -> str:
    """First line of the model's docstring, for `digitrec models`."""
    return (MODELS[name].__doc__ or "").strip().splitlines()[0].rstrip(".")


@torch.inference_mode()
def batched_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """Logits for a whole float tensor, in large batches on the model's device (CPU result)."""
    model.eval()
    device = next(model.parameters()).device
    outs = [
        model(x[i : i + batch_size].to(device, non_blocking=True)).float().cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(outs) if outs else torch.empty(0, 10)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU; an explicit name must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DigitrecError("--device cuda: no CUDA GPU is available here; use --device auto")
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise DigitrecError("--device mps: Apple MPS is not available here; use --device auto")
    if name not in ("cpu", "cuda", "mps"):
        raise DigitrecError(f"Unknown device {name!r}; choose auto, cpu, cuda or mps")
    return torch.device(name)


def inference_module(model: nn.Module) -> nn.Module:
    """The model frozen for CPU inference: batch norm folded into the convolutions and
    oneDNN kernels chosen (``torch.jit.optimize_for_inference``), about twice as fast per
    image as eager mode here. Same outputs to float rounding; on a GPU, or for a model
    TorchScript cannot compile, the eager model itself."""
    if next(model.parameters()).device.type != "cpu":
        return model
    try:
        # TorchScript is deprecated in favour of torch.compile, which needs a C++ compiler
        # at run time and seconds to start; torch is pinned, so this stays as it works.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.script(model)))
    except Exception:  # any compile failure: eager mode is always correct
        return model
