"""The apps and the export: serve, gui, export."""

from __future__ import annotations

import argparse

from digitrec.cli.args import backend_arg, data_args, feedback_arg


def add(sub: argparse._SubParsersAction) -> None:
    _add_apps_commands(sub)
    _add_export_commands(sub)


def _add_apps_commands(sub: argparse._SubParsersAction) -> None:
    """`serve` and `gui`: the two apps."""
    p = sub.add_parser("serve", help="the web app: draw or upload digits in the browser")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model-path", help="checkpoint or run (default: the usual resolution)")
    p.add_argument("--workers", type=int, default=1, help="server processes")
    feedback_arg(p)
    backend_arg(p)
    p = sub.add_parser("gui", help="the desktop app: draw or open digits in a window")
    p.add_argument("image", nargs="?", metavar="IMAGE", help="an image to open at start")
    p.add_argument("--model-path", help="checkpoint or run (default: the usual resolution)")
    p.add_argument("--runs-dir")
    feedback_arg(p)
    backend_arg(p)


def _add_export_commands(sub: argparse._SubParsersAction) -> None:
    """`export`: ONNX, parity-checked, optionally int8."""
    p = sub.add_parser("export", help="export a model to ONNX, check parity, quantize to int8")
    p.add_argument("model", metavar="RUN|CHECKPOINT")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--quantize", choices=["int8"], help="also write a static int8 model")
    p.add_argument("-o", "--out", help="the .onnx file (default: beside the checkpoint)")
    p.add_argument("--no-check", action="store_true",
                   help="skip the test-set checks (parity, int8's accuracy)")  # fmt: skip
    data_args(p, dataset=False)


def cmd_serve(args) -> int:
    from digitrec.web.server import serve

    serve(args.host, args.port, args.model_path, args.workers, args.backend, args.feedback_url)
    return 0


def cmd_gui(args) -> int:
    from digitrec.gui import run

    run(args.model_path, args.runs_dir, args.image, args.backend, args.feedback_url)
    return 0


def cmd_export(args) -> int:
    from digitrec.export import export

    scored = export(args.model, args.out, args.quantize, not args.no_check, args.data_dir)
    print(f"{'model':<14} {'file':<44} {'size':>9} {'test acc':>9} {'same digit':>10} "
          f"{'max |dp|':>9}")  # fmt: skip
    for s in scored:
        same = "" if s.agreement is None else f"{s.agreement:.2%}"
        diff = "" if s.max_diff is None else f"{s.max_diff:.1e}"
        acc = "" if s.accuracy != s.accuracy else f"{s.accuracy:.2%}"  # NaN: not checked
        print(f"{s.name:<14} {s.path!s:<44} {s.size / 1e6:>7.2f}MB {acc:>9} {same:>10} "
              f"{diff:>9}")  # fmt: skip
    return 0


COMMANDS = {
    "serve": cmd_serve,
    "gui": cmd_gui,
    "export": cmd_export,
}
