"""The workbench's commands: data, models, train, ensemble, runs, evaluate, calibrate."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from digitrec.cli.args import data_args


def add(sub: argparse._SubParsersAction) -> None:
    _add_data_commands(sub)
    _add_train_command(sub)
    _add_ensemble_command(sub)
    _add_evaluate_commands(sub)


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    """`data download|verify|show` and `models`."""
    data = sub.add_parser("data", help="download, verify and look at datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = dsub.add_parser(
        "download", help="fetch missing files from the official mirrors (MD5-checked)"
    )
    data_args(p)
    p.add_argument("--mirror", action="append", help="base URL to try instead (repeatable)")
    p = dsub.add_parser("verify", help="check every file's checksum and count images per class")
    data_args(p)
    p = dsub.add_parser("show", help="write a grid of samples and the class distribution as PNG")
    data_args(p)
    p.add_argument("--out", default=".", help="directory for samples.png and classes.png")
    p.add_argument("--seed", type=int, default=0)
    sub.add_parser("models", help="list the model zoo with parameter counts")


def _add_train_command(sub: argparse._SubParsersAction) -> None:
    """`train`: every setting of a recipe, and where the run goes."""
    from digitrec.models import MODELS
    from digitrec.recipes import OPTIMIZERS, PRECISIONS, RECIPES, SCHEDULES

    p = sub.add_parser(
        "train",
        help="train a model into runs/<timestamp>-<model>/",
        description="Train a model. A recipe sets every default; flags override it. "
        f"Recipes: {', '.join(RECIPES)}. With --model alone, the model's own recipe is used.",
    )
    p.add_argument("--recipe", choices=list(RECIPES), help="named set of settings (default: fast)")
    p.add_argument("--model", help=", ".join(MODELS))
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate (the peak, for onecycle)")
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", choices=SCHEDULES)
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random rotation, translation, scaling and shear on the device",
    )
    p.add_argument("--rotate", type=float, help="with --augment: rotation range in degrees")
    p.add_argument("--elastic", type=float, help="with --augment: share of images warped")
    p.add_argument("--strays", type=float, help="with --augment: share given a stray line")
    p.add_argument(
        "--outline", type=float, help="with --augment: share reduced to their strokes' outline"
    )
    p.add_argument(
        "--pen", type=float, help="with --augment: share redrawn with an even pen (skeleton)"
    )
    p.add_argument(
        "--styles", type=float, help="with --augment: share of 1s given a flag, of 7s a bar"
    )
    p.add_argument("--label-smoothing", type=float)
    p.add_argument(
        "--ema",
        type=float,
        metavar="DECAY",
        help="keep a moving average of the weights (e.g. 0.999) and validate and save it",
    )
    p.add_argument(
        "--early-stop",
        type=int,
        metavar="PATIENCE",
        help="stop after this many epochs without a better validation accuracy",
    )
    p.add_argument(
        "--init",
        metavar="CHECKPOINT",
        help="start from these weights (fine-tune): a checkpoint, a run, or 'default' for "
        "the shipped model",
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda or mps (default auto)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="bfloat16 autocast: auto (where the hardware does it natively), bf16, fp32",
    )
    p.add_argument(
        "--val-size",
        type=int,
        help="validation images held out of training (0: train on all, once a recipe is chosen)",
    )
    p.add_argument(
        "--split-seed", type=int, help="seed of the validation split (default 0, for every run)"
    )
    p.add_argument("--limit", type=int, help="train on only this many images (quick tries)")
    p.add_argument("--out", help="run directory (default <runs-dir>/<timestamp>-<model>)")
    p.add_argument("--runs-dir", help="where runs go (default $DIGITREC_RUNS_DIR or ./runs)")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    data_args(p, dataset=False)
    p.add_argument("--dataset", help="mnist (default) or fashion-mnist")


def _add_ensemble_command(sub: argparse._SubParsersAction) -> None:
    """`ensemble`: runs combined into one model, written as a run."""
    p = sub.add_parser(
        "ensemble",
        help="average several runs into one model, written as a new run",
        description="Combine runs (or checkpoints) into one model whose probabilities are the "
        "mean of theirs, or with --average whose weights are the mean of theirs. The result is "
        "a run like any other: evaluate, predict, serve, gui and export take it.",
    )
    p.add_argument(
        "members", nargs="+", metavar="RUN|CHECKPOINT", help="'default' is the shipped model"
    )
    p.add_argument(
        "--average",
        action="store_true",
        help="average the members' weights into one model of their architecture (for a model "
        "and its fine-tuned versions, see train --init) instead of their probabilities",
    )
    p.add_argument(
        "--weights", type=float, nargs="+", metavar="W", help="with --average: each member's share"
    )
    p.add_argument("--out", help="run directory (default <runs-dir>/<timestamp>-ensemble)")
    p.add_argument("--runs-dir", help="where runs are (default $DIGITREC_RUNS_DIR or ./runs)")
    data_args(p, dataset=False)


def _add_evaluate_commands(sub: argparse._SubParsersAction) -> None:
    """`runs`, `evaluate` and `calibrate`."""
    from digitrec.calibration import MAX_RISK

    p = sub.add_parser("runs", help="list training runs, best validation accuracy first")
    p.add_argument("--runs-dir")
    p = sub.add_parser("evaluate", help="test-set metrics, confusion matrix, calibration, report")
    p.add_argument("target", metavar="RUN|CHECKPOINT")
    p.add_argument("--out", help="report directory (default: the run, or <checkpoint>-report)")
    p.add_argument(
        "--tta", action="store_true", help="average test-time views (report in RUN/tta/)"
    )
    p.add_argument("--runs-dir")
    p.add_argument("--device", default="auto")
    data_args(p, dataset=False)
    p = sub.add_parser(
        "calibrate",
        help="fit a model's temperature and 'not sure' threshold on its validation split",
        description="Fit the temperature that makes a model's confidences honest and the "
        "'not sure' threshold (the lowest confidence that keeps errors among the answers "
        "within --max-risk), on the validation split its run held out (5,000 images, seed 0 "
        "for a bare checkpoint), and store both in the checkpoint; its ONNX exports are "
        "made again so they carry them. `train` and `ensemble` do this at the end of a run.",
    )
    p.add_argument("target", metavar="RUN|CHECKPOINT", help="a run, a checkpoint, or default")
    p.add_argument(
        "--max-risk", type=float, default=MAX_RISK, metavar="R",
        help="share of errors allowed among the answers (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--runs-dir")
    data_args(p, dataset=False)


def cmd_data(args) -> int:
    from digitrec import data, plots

    spec = data.get_spec(args.dataset)
    root = data.resolve_data_dir(args.data_dir)
    if args.data_command == "download":
        missing = [k for k in data.FILE_KINDS if data.find_file(spec, k, root) is None]
        if missing:
            data.download(spec, root, missing, mirrors=args.mirror)
        ds = data.load_dataset(spec.name, root, download_missing=False)
        print(f"{spec.title}: all files present and verified in {root / spec.name}")
        return 0
    ds = data.load_dataset(spec.name, root)
    if args.data_command == "verify":
        print(f"{spec.title}")
        for kind, f in ds.files.items():
            print(f"  {kind:<13} ok ({f['verified']})  {f['path']}")
        print(f"  train {len(ds.train_labels)} images, test {len(ds.test_labels)} images")
        tr = ds.train_labels.bincount(minlength=10).tolist()
        te = ds.test_labels.bincount(minlength=10).tolist()
        width = max(5, *(len(c) for c in spec.classes))
        print(f"  {'class':<{width}}  {'train':>6}  {'test':>6}")
        for c, a, b in zip(spec.classes, tr, te, strict=True):
            print(f"  {c:<{width}}  {a:>6}  {b:>6}")
        return 0
    import torch

    out = Path(args.out)
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(ds.train_images), generator=g)[:50]
    plots.image_grid(
        ds.train_images[idx].numpy(),
        [spec.classes[int(ds.train_labels[i])] for i in idx],
        out / "samples.png",
        suptitle=f"{spec.title}: 50 random training images",
    )
    plots.class_distribution(
        {
            "train": ds.train_labels.bincount(minlength=10).tolist(),
            "test": ds.test_labels.bincount(minlength=10).tolist(),
        },
        spec.classes,
        out / "classes.png",
    )
    print(f"wrote {out / 'samples.png'} and {out / 'classes.png'}")
    return 0


def cmd_models(args) -> int:
    from digitrec.models import MODELS, build_model, count_parameters, describe

    print(f"{'model':<6} {'parameters':>10}  description")
    for name in MODELS:
        print(f"{name:<6} {count_parameters(build_model(name)):>10,}  {describe(name)}")
    return 0


def cmd_train(args) -> int:
    from digitrec import data, runs
    from digitrec.models import resolve_device
    from digitrec.recipes import TrainConfig, make_config
    from digitrec.train import init_checkpoint, train, use_bfloat16

    if args.resume:
        run_dir = runs.resolve_run(args.resume, runs.runs_root(args.runs_dir))
        cfg = TrainConfig.from_dict(runs.read_config(run_dir)["settings"])
    else:
        # Every setting that has a flag: a new setting cannot be silently ignored.
        names = {f.name for f in fields(TrainConfig)} - {"model", "recipe"}
        overrides = {k: getattr(args, k) for k in names if hasattr(args, k)}
        if args.init:  # a run's name is looked for under --runs-dir, as everywhere else
            overrides["init"] = str(
                runs.resolve_checkpoint(args.init, runs.runs_root(args.runs_dir))
            )
        cfg = make_config(args.recipe, args.model, overrides)
    ds = data.load_dataset(cfg.dataset, args.data_dir)
    if not args.resume:
        # Refused before a run directory is made for them: a bad start or split.
        if cfg.init:
            init_checkpoint(cfg, list(ds.spec.classes))
        data.split_indices(len(ds.train_images), cfg.val_size, cfg.split_seed)
        if args.out:
            run_dir = Path(args.out)
            runs.refuse_existing(run_dir)  # at once; train() checks again under the lock
            run_dir.mkdir(parents=True, exist_ok=True)
        else:
            run_dir = runs.new_run_dir(runs.runs_root(args.runs_dir), cfg.model)
        bf16 = use_bfloat16(cfg.precision, resolve_device(cfg.device))
        print(
            f"run {run_dir}: {cfg.model} on {cfg.dataset}, recipe {cfg.recipe}, "
            f"{cfg.epochs} epochs, seed {cfg.seed}" + (", bfloat16 autocast" if bf16 else "")
        )
    result = train(cfg, ds, run_dir, resume=bool(args.resume), progress=not args.no_progress)
    took = f"{result.train_seconds:.1f}s of training"
    done = (
        f"best validation accuracy {result.best_val_acc:.4f} in {took}"
        if result.best_val_acc is not None
        else f"{took}, no validation split (the last epoch is the checkpoint)"
    )
    print(f"done: {done}. Checkpoints in {run_dir}\nnext: digitrec evaluate {run_dir}")
    return 0


def cmd_ensemble(args) -> int:
    from digitrec import runs
    from digitrec.ensemble import make_ensemble

    root = runs.runs_root(args.runs_dir)
    if args.out:
        run_dir = Path(args.out)
        runs.refuse_existing(run_dir, "choose another --out")
    else:
        run_dir = runs.new_run_dir(root, "average" if args.average else "ensemble")
    try:
        r = make_ensemble(args.members, run_dir, args.data_dir, root, args.average, args.weights)
    except BaseException:
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # no empty run left behind by a refused ensemble
        raise

    def pct(v: float | None) -> str:
        return f"{v:.2%}" if v is not None else "-"

    for m, acc in zip(args.members, r.member_val_accs, strict=True):
        print(f"  member {m}: validation accuracy {pct(acc)}")
    what = "weight average" if args.average else "ensemble"
    print(f"{what} of {len(args.members)} in {run_dir}: validation accuracy {pct(r.val_acc)}")
    print(f"({r.note})\nnext: digitrec evaluate {run_dir}")
    return 0


def cmd_runs(args) -> int:
    from digitrec.runs import choose_model, list_runs, runs_root

    root = runs_root(args.runs_dir)
    rows = list_runs(root)
    if not rows:
        print(f"No runs yet in {root.resolve()} (--runs-dir or $DIGITREC_RUNS_DIR look "
              "elsewhere). `digitrec train` starts one; meanwhile predict, serve and gui use "
              "the model shipped with digitrec.")  # fmt: skip
        return 0

    def pct(v: float | None) -> str:
        return f"{v:.2%}" if v is not None else "-"

    print(
        f"{'run':<34} {'model':<8} {'data':<13} {'epochs':>6} {'val acc':>8} {'test acc':>8} "
        f"{'params':>9} {'train s':>8}  status"
    )
    for r in rows:
        if r.damaged:
            print(f"{r.path.name:<34} damaged: {r.damaged}")
            continue
        print(
            f"{r.path.name:<34} {r.model:<8} {r.dataset:<13} {r.epochs:>6} {pct(r.val_acc):>8} "
            f"{pct(r.test_acc):>8} {r.params:>9,} {r.train_seconds:>8.1f}  {r.status}"
        )
    print(f"\npredict, serve and gui use {choose_model(None, args.runs_dir).why}")
    return 0


def cmd_calibrate(args) -> int:
    from digitrec import runs
    from digitrec.calibration import calibrate_checkpoint

    root = runs.runs_root(args.runs_dir)
    path, c, exports = calibrate_checkpoint(args.target, args.data_dir, args.max_risk, root)
    v = c["val"]
    print(f"{path}: temperature {c['temperature']:.4f}; on its {c['images']} validation "
          f"images ECE {v['ece_before']:.4f} -> {v['ece_after']:.4f}, NLL "
          f"{v['nll_before']:.4f} -> {v['nll_after']:.4f}")  # fmt: skip
    print(f"'not sure' below {c['uncertain_below']:.4f}: answers {v['coverage']:.2%} of them "
          f"with {v['risk']:.2%} wrong (at most {c['max_risk']:.2%} asked)")  # fmt: skip
    for e in exports:
        print(f"exported again: {e}")
    return 0


def cmd_evaluate(args) -> int:
    from digitrec import data, runs
    from digitrec.checkpoint import load_model
    from digitrec.evaluate import evaluate
    from digitrec.models import resolve_device

    ckpt = runs.resolve_checkpoint(args.target, runs.runs_root(args.runs_dir))
    if ckpt.name == "best.safetensors" and not Path(args.target).is_file():  # a run
        # The plain report stays where `digitrec runs` reads it; TTA's goes beside it.
        out = ckpt.parent / "tta" if args.tta else ckpt.parent
    else:  # a checkpoint's beside it would be inside the package for the shipped one
        name = runs.SHIPPED if ckpt == runs.shipped_model_path() else ckpt.stem
        out = Path("reports") / (name + ("-tta" if args.tta else ""))
    out = Path(args.out) if args.out else out
    model, meta = load_model(ckpt, resolve_device(args.device))
    ds = data.load_dataset(meta.get("dataset", "mnist"), args.data_dir)
    r = evaluate(model, meta, ds, out, source=str(ckpt), tta=args.tta)
    print(
        f"{meta['model']} on {ds.spec.name} test{' with TTA' if args.tta else ''}: "
        f"accuracy {r['accuracy']:.4f} "
        f"({r['errors']} errors in {r['images']}), loss {r['loss']:.4f}, ECE {r['ece']:.4f}"
    )
    n = r["not_sure"]
    print(
        f"'not sure' below {n['threshold']:.4f}"
        + ("" if n["measured"] else " (not calibrated: `digitrec calibrate`)")
        + f": answers {n['coverage']:.2%} of the test images, {n['risk']:.2%} of them wrong"
    )
    print(
        "most confused (true -> predicted): "
        + ", ".join(f"{p['true']}->{p['predicted']} x{p['count']}" for p in r["most_confused"][:5])
    )
    print(f"report: {out / 'report.html'}")
    return 0


COMMANDS = {
    "data": cmd_data,
    "models": cmd_models,
    "train": cmd_train,
    "ensemble": cmd_ensemble,
    "runs": cmd_runs,
    "evaluate": cmd_evaluate,
    "calibrate": cmd_calibrate,
}
