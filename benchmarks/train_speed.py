"""Training speed: time to a test accuracy, ours against the classic recipe, in one run.

Table 1 trains, on the same machine one after the other:
- the reference: pytorch/examples ``mnist/main.py`` as published (its two-conv network,
  Adadelta lr 1.0, StepLR gamma 0.7, batch 64, dropout), fed the same in-memory tensors
  as ours so the ratio compares recipes, not data loaders; test accuracy checked after
  every epoch, as that script does;
- digitrec's ``fast`` recipe through digitrec's own training loop (``digitrec.train``,
  with its per-epoch validation and checkpoints), test accuracy checked every quarter
  epoch as well;
and stops each the moment it first reaches 99.0%. Then the ``mid`` recipe (``fast``'s
settings, a somewhat larger model, 8 epochs with augmentation and a moving average of
the weights) to 99.5%, one run checked both plain and with the seven test-time views
``predict --tta`` and ``evaluate --tta`` average (7x the inference, no more training).
Times are training wall time, excluding only this benchmark's own test-set checks. The
test set is used here only to measure time to accuracy; no model is chosen on it.

Table 2: every model of the zoo with its own recipe, cut to ``--zoo-epochs`` epochs
(``full`` for the whole recipe): seconds per epoch and test accuracy at the end.

    python benchmarks/train_speed.py [--device auto] [--seed N] [--zoo-epochs 1|full] [--skip-zoo]
                                      [--skip-995 | --only-995] [--precision auto|bf16|fp32]
                                      [--limit N]

digitrec trains in bfloat16 autocast where the hardware computes it natively (a recent
GPU, or a CPU with AVX512-BF16 or AMX; ``--precision fp32`` turns that off for ours); the
reference runs in float32, as published. On a GPU the same script runs unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from digitrec.augment import tta_matrices, tta_probabilities
from digitrec.checkpoint import load_model
from digitrec.data import Dataset, load_dataset, to_float
from digitrec.errors import Interrupted
from digitrec.models import batched_logits, resolve_device
from digitrec.recipes import PRECISIONS, RECIPES, make_config
from digitrec.train import train, use_bfloat16


class ExamplesNet(nn.Module):
    """pytorch/examples mnist/main.py ``Net``, unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1((x - 0.1307) / 0.3081))))
        x = self.dropout1(F.max_pool2d(x, 2)).flatten(1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


@dataclass
class Reached:
    name: str
    target: float
    epochs: float | None  # None: never reached
    seconds: float
    accuracy: float  # when the target was reached, or at the end
    final: float  # when training stopped: a target touched once may not hold


class TestChecks:
    """Test accuracy at given points of one training run, plain and (``tta``) also averaged
    over the Predictor's test-time views, each recording when it first reached the target.
    The time the checks take is kept apart from training time."""

    def __init__(self, ds: Dataset, target: float, tta: bool = False) -> None:
        self.x, self.y = to_float(ds.test_images), ds.test_labels
        self.target = target
        self.views = {"": None, " + test-time views": tta_matrices()} if tta else {"": None}
        self.reached: dict[str, tuple[float, float, float] | None] = dict.fromkeys(self.views)
        self.last = dict.fromkeys(self.views, 0.0)
        self.start, self.spent = time.perf_counter(), 0.0
        self.model: nn.Module | None = None

    def begin(self) -> None:
        self.start, self.spent = time.perf_counter(), 0.0

    def accuracy(self, model: nn.Module, views: torch.Tensor | None) -> float:
        if views is None:
            probs = batched_logits(model, self.x)
        else:
            probs = torch.cat([
                tta_probabilities(lambda v: batched_logits(model, v), self.x[i : i + 1000], views)
                for i in range(0, len(self.x), 1000)
            ])  # fmt: skip
        return (probs.argmax(1) == self.y).float().mean().item()

    def __call__(self, model: nn.Module, epochs: float) -> bool:
        """Check now; True once every kind of check has reached the target (stop)."""
        t0 = time.perf_counter()
        trained = t0 - self.start - self.spent
        self.model = model
        for kind, views in self.views.items():
            if self.reached[kind] is None:
                self.last[kind] = acc = self.accuracy(model, views)
                if acc >= self.target:
                    self.reached[kind] = (epochs, trained, acc)
        model.train()
        self.spent += time.perf_counter() - t0
        return all(self.reached.values())

    def results(self, name: str) -> list[Reached]:
        """One row per kind of check: when it reached the target, or the end of training,
        and the accuracy of the model as training stopped (the last check's model)."""
        trained = time.perf_counter() - self.start - self.spent
        rows = []
        for kind, hit in self.reached.items():
            epochs, seconds, acc = hit if hit else (None, trained, self.last[kind])
            final = self.accuracy(self.model, self.views[kind]) if self.model else acc
            rows.append(Reached(name + kind, self.target, epochs, seconds, acc, final))
        return rows


def reference(ds: Dataset, device: torch.device, target: float, seed: int) -> list[Reached]:
    """pytorch/examples' recipe, 14 epochs at most, stopped at ``target``."""
    torch.manual_seed(seed)
    model = ExamplesNet().to(device)
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    x, y = to_float(ds.train_images).to(device), ds.train_labels.to(device)
    check = TestChecks(ds, target)
    check.begin()
    for epoch in range(14):
        model.train()
        for idx in torch.randperm(len(x), device=device).split(64):
            loss = F.nll_loss(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        if check(model, epoch + 1):
            break
    return check.results("pytorch/examples")


def ours(
    recipe: str,
    ds: Dataset,
    device: torch.device,
    target: float,
    seed: int,
    per_epoch: int,
    tta: bool = False,
    **overrides,
) -> list[Reached]:
    """A digitrec recipe through digitrec.train, stopped at ``target``."""
    cfg = make_config(recipe, None, {"seed": seed, "device": str(device), **overrides})
    overrides.pop("precision", None)  # the machine line shows it
    overrides.pop("val_size", None)
    steps = -(-(len(ds.train_images) - cfg.val_size) // cfg.batch_size)
    every = max(1, steps // per_epoch)
    check = TestChecks(ds, target, tta=tta)
    count = 0

    def callback(model: nn.Module, epochs: float) -> bool:
        nonlocal count
        count += 1
        return (count % every == 0 or count % steps == 0) and check(model, epochs)

    with tempfile.TemporaryDirectory() as tmp:
        check.begin()
        with contextlib.suppress(Interrupted):  # the callback stops it at the target
            train(cfg, ds, Path(tmp), log=lambda s: None, progress=False, callback=callback)
        rows = check.results(
            " ".join([f"digitrec {recipe}", *(f"{k}={v}" for k, v in overrides.items())])
        )
    return rows


def zoo(
    ds: Dataset, device: torch.device, epochs: str, seed: int, settings: dict[str, object]
) -> None:
    print(f"\nThe zoo, each model with its own recipe ({epochs} epochs)")
    print(f"{'recipe':<8} {'model':<6} {'epochs':>6} {'s/epoch':>8} {'test acc':>9}")
    x, y = to_float(ds.test_images), ds.test_labels
    for name in ("mlp", "cnn", "cnn4", "classic", "fast", "mid", "best"):
        n = RECIPES[name].epochs if epochs == "full" else int(epochs)
        overrides = {**settings, "epochs": n, "seed": seed, "device": str(device)}
        cfg = make_config(name, None, overrides)
        with tempfile.TemporaryDirectory() as tmp:
            r = train(cfg, ds, Path(tmp), log=lambda s: None, progress=False)
            model, _ = load_model(Path(tmp) / "best.safetensors", device)
        acc = (batched_logits(model, x).argmax(1) == y).float().mean().item()
        print(f"{name:<8} {cfg.model:<6} {n:>6} {r.train_seconds / n:>8.1f} {acc:>9.2%}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--zoo-epochs", default="1", help="epochs per zoo recipe, or 'full'")
    p.add_argument("--skip-zoo", action="store_true")
    p.add_argument("--skip-995", action="store_true", help="only the 99.0% race")
    p.add_argument("--only-995", action="store_true", help="only the 99.5% race (more seeds)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="for digitrec's runs")
    p.add_argument("--limit", type=int, default=0,
                   help="only N training images (a fifth for validation) and N test images: "
                        "a quick check that the script runs, not a measurement")  # fmt: skip
    args = p.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # rows as they come, even into a file
    device = resolve_device(args.device)
    ds = load_dataset("mnist")
    settings: dict[str, object] = {"precision": args.precision}
    if args.limit:
        ds = replace(ds, train_images=ds.train_images[: args.limit],
                     train_labels=ds.train_labels[: args.limit],
                     test_images=ds.test_images[: args.limit],
                     test_labels=ds.test_labels[: args.limit])  # fmt: skip
        settings["val_size"] = args.limit // 5
    bf16 = use_bfloat16(args.precision, device)
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"device {device}"
        + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else "")
        + f", digitrec in {'bfloat16 autocast' if bf16 else 'float32'}, the reference in float32"
    )
    print(
        f"{'recipe':<64} {'target':>7} {'epochs':>7} {'train s':>8} {'test acc':>9} {'at end':>7}"
    )
    races = []
    if not args.only_995:
        races.append(lambda: reference(ds, device, 0.99, args.seed))
        races.append(lambda: ours("fast", ds, device, 0.99, args.seed, 4, **settings))
    if not args.skip_995:
        races.append(lambda: ours("mid", ds, device, 0.995, args.seed, 4, True, **settings))
    rows = []
    for race in races:  # each row as soon as it is run: the reference takes minutes
        for r in race():
            rows.append(r)
            ep = f"{r.epochs:.2f}" if r.epochs is not None else "never"
            print(
                f"{r.name:<64} {r.target:>7.1%} {ep:>7} {r.seconds:>8.1f} {r.accuracy:>9.2%}"
                f" {r.final:>7.2%}"
            )
    ref, fast = (rows[0], rows[1]) if not args.only_995 else (None, None)
    if ref and fast and ref.epochs is not None and fast.epochs is not None:
        print(f"time to 99.0%: fast is {ref.seconds / fast.seconds:.1f}x faster than the reference")
    if not args.skip_zoo and not args.only_995:
        zoo(ds, device, args.zoo_epochs, args.seed, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
