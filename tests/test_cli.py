"""The command line as a user runs it: subprocesses, exit codes, and what they print."""

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import assert_drawn, run_cli
from digitrec.recipes import TrainConfig
from digitrec.train import use_bfloat16

pytestmark = pytest.mark.slow  # trains, or runs the CLI, a server or a browser


def test_help_lists_every_command(capsys):
    r = run_cli("--help")
    assert r.returncode == 0
    from digitrec.cli import COMMANDS, build_parser

    for cmd in COMMANDS:  # every command, listed and with its own help (parsed in-process)
        assert re.search(rf"^    {cmd}\s", r.stdout, re.M), cmd  # a long name wraps its help
        with pytest.raises(SystemExit) as done:
            build_parser().parse_args([cmd, "--help"])
        out = capsys.readouterr().out
        assert done.value.code == 0 and out.startswith(f"usage: digitrec {cmd}"), cmd
    r = run_cli("train", "--help")
    assert "--recipe" in r.stdout and "--resume" in r.stdout


def test_models_table():
    r = run_cli("models")
    assert r.returncode == 0
    assert "535,818" in r.stdout and "fast" in r.stdout and "best" in r.stdout


def test_data_verify_and_show(tmp_path):
    r = run_cli("data", "verify")
    assert r.returncode == 0, r.stderr
    assert "6742" in r.stdout and "1135" in r.stdout  # ones in train and test
    r = run_cli("data", "show", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    for png in ("samples.png", "classes.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


def test_train_runs_evaluate(tmp_path):
    env = {"DIGITREC_RUNS_DIR": str(tmp_path / "runs")}
    r = run_cli(
        "train", "--model", "mlp", "--epochs", "1", "--limit", "5000", "--no-progress", env=env
    )
    assert r.returncode == 0, r.stderr
    assert "epoch   1/1" in r.stdout and "next: digitrec evaluate" in r.stdout
    native = use_bfloat16("auto", torch.device("cpu"))  # the run says how it computes
    assert ("seed 0, bfloat16 autocast\n" in r.stdout) == native, r.stdout
    [run] = list((tmp_path / "runs").iterdir())
    assert run.name.endswith("-mlp")
    r = run_cli("runs", env=env)
    assert r.returncode == 0 and run.name in r.stdout and "complete" in r.stdout
    r = run_cli("evaluate", run.name, env=env)
    assert r.returncode == 0, r.stderr
    assert "mlp on mnist test: accuracy 0.8" in r.stdout  # 5,000 images, one epoch: ~89%
    assert "<img" in (run / "report.html").read_text()  # its figures, embedded
    for figure in ("curves", "confusion", "reliability", "misclassified"):
        assert_drawn(run / f"{figure}.png")
    r = run_cli("runs", env=env)
    test_acc = json.loads((run / "report.json").read_text())["accuracy"]
    assert f"{test_acc:.2%}" in r.stdout
    r = run_cli("evaluate", run.name, "--tta", env=env)
    assert r.returncode == 0 and "test with TTA: accuracy" in r.stdout, r.stderr
    assert json.loads((run / "tta" / "report.json").read_text())["tta"] is True
    assert json.loads((run / "report.json").read_text())["accuracy"] == test_acc  # kept


def test_every_training_setting_has_a_flag_that_reaches_the_run(trained_run, tmp_path):
    flags = {"epochs": 1, "batch_size": 64, "lr": 0.002, "optimizer": "sgd",
             "weight_decay": 0.001, "schedule": "cosine", "rotate": 5.0, "elastic": 0.1,
             "strays": 0.1, "outline": 0.2, "pen": 0.3, "styles": 0.4,
             "init": trained_run.run_dir.name,
             "label_smoothing": 0.05, "ema": 0.9, "early_stop": 3, "seed": 4,
             "split_seed": 2, "device": "cpu", "precision": "fp32", "val_size": 1000,
             "limit": 500,
             "dataset": "mnist"}  # fmt: skip
    settings = {f.name for f in fields(TrainConfig)} - {"model", "recipe", "augment"}
    assert settings == set(flags)  # a new setting needs a flag here (and in the CLI)
    args = [f"--{k.replace('_', '-')}={v}" for k, v in flags.items()]
    r = run_cli("train", "--model", "fast", "--augment", *args, "--out", str(tmp_path / "r"),
                "--runs-dir", str(trained_run.run_dir.parent), "--no-progress")  # fmt: skip
    assert r.returncode == 0, r.stderr
    got = json.loads((tmp_path / "r" / "config.json").read_text())["settings"]
    # --init by a run's name, found under --runs-dir, recorded as the file it resolved to
    assert got.pop("init") == str(trained_run.run_dir / "best.safetensors")
    assert {k: got[k] for k in flags if k != "init"} == {
        k: v for k, v in flags.items() if k != "init"
    }
    assert got["augment"] is True
    assert json.loads((tmp_path / "r" / "config.json").read_text())["init"]["run"] == "fast-1epoch"


def test_ctrl_c_saves_and_resume_finishes(tmp_path):
    out = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "digitrec",
        "train",
        "--model",
        "mlp",
        "--epochs",
        "3",
        "--out",
        str(out),
        "--no-progress",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The first state is saved inside the Ctrl-C handler's reach, before the first batch.
    deadline = time.time() + 120
    while not (out / "state.safetensors").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Resume with: digitrec train --resume" in stderr
    assert "Traceback" not in stderr
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["status"] == "interrupted"
    r = run_cli("train", "--resume", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout
    assert json.loads((out / "config.json").read_text())["status"] == "complete"
    assert len((out / "metrics.csv").read_text().splitlines()) == 4


def test_predict_files(trained_run, mnist, tmp_path):
    files = []
    for i in range(6):
        digit = mnist.test_images[i].numpy()
        img = Image.fromarray(255 - digit).resize((280, 280), Image.Resampling.BILINEAR)
        files.append(tmp_path / f"d{i}.png")
        img.save(files[-1])
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(tmp_path / "blank.png")
    model = str(trained_run.run_dir / "best.safetensors")
    r = run_cli(
        "predict",
        *map(str, files),
        str(tmp_path / "broken.png"),
        str(tmp_path / "blank.png"),
        "--model-path",
        model,
    )
    assert r.returncode == 1  # one file could not be read
    lines = r.stdout.splitlines()
    assert "fast" in lines[0]
    right = sum(f"d{i}.png: {int(mnist.test_labels[i])}  top-3" in r.stdout for i in range(6))
    assert right >= 5
    assert "broken.png" in r.stdout and "truncated or corrupt" in r.stdout
    assert "blank.png: no digit found" in r.stdout
    r = run_cli("predict", str(files[0]), "--json", "--tta", "--model-path", model)
    assert r.returncode == 0
    [res] = json.loads(r.stdout)
    assert res["digit"] == int(mnist.test_labels[0]) and len(res["probabilities"]) == 10
    assert res["top3"][0]["label"] == str(res["digit"])


def test_predict_a_folder_reads_its_images_by_name(trained_run, mnist, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in ((0, "b.PNG"), (1, "a.jpg"), (2, "c.webp")):
        Image.fromarray(255 - mnist.test_images[i].numpy()).convert("RGB").save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub.png").mkdir()  # a folder named like an image is not one
    model = str(trained_run.run_dir / "best.safetensors")
    r = run_cli("predict", str(folder), "--json", "--model-path", model)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [Path(o["file"]).name for o in out] == ["a.jpg", "b.PNG", "c.webp"]
    assert out[1]["digit"] == int(mnist.test_labels[0])
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_cli("predict", str(empty), "--model-path", str(tmp_path / "no-model.safetensors"))
    # refused for the folder, before the (missing) model is looked for
    assert r.returncode == 2 and "a folder with no images in it" in r.stderr


def test_predict_random(trained_run, tmp_path):
    grid = tmp_path / "grid.png"
    model = str(trained_run.run_dir / "best.safetensors")
    r = run_cli("predict", "--random", "30", "--grid", str(grid), "--model-path", model)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("true ") == 30 and "accuracy" in r.stdout
    assert grid.read_bytes()[:4] == b"\x89PNG"
    r = run_cli("predict", "--random", "30", "--json", "--grid", str(grid), "--model-path", model)
    out = json.loads(r.stdout)
    assert out["accuracy"] >= 0.9
    assert out["grid_shows"] == [row["index"] for row in out["predictions"]]  # all, in order


def test_predict_random_draws_a_page_of_mistakes_first(trained_run, tmp_path, monkeypatch, capsys):
    """Thousands of images are scored, and the grid shows GRID_MAX of them, mistakes
    first (drawing all 3,000 took two minutes and 2.4 GB)."""
    from digitrec import cli
    from digitrec.cli import images

    monkeypatch.setattr(images, "GRID_MAX", 12)
    grid = tmp_path / "grid.png"
    model = str(trained_run.run_dir / "best.safetensors")
    args = ["predict", "--random", "1000", "--json", "--grid", str(grid), "--model-path", model]
    assert cli.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {row["index"]: row for row in out["predictions"]}
    wrong = [i for i, row in rows.items() if row["predicted"] != row["true"]]
    assert len(rows) == 1000 and len(out["grid_shows"]) == 12 and wrong
    first = out["grid_shows"][: min(len(wrong), 12)]
    assert all(rows[i]["predicted"] != rows[i]["true"] for i in first)
    assert grid.read_bytes()[:4] == b"\x89PNG"


def test_a_folder_of_runs_is_not_taken_for_a_run(trained_run, tmp_path):
    runs = trained_run.run_dir.parent
    r = run_cli("evaluate", str(runs))
    assert r.returncode == 2
    assert f"error: {runs} is a folder of runs, not a run: name one of them" in r.stderr
    r = run_cli("evaluate", str(tmp_path))  # an absolute path is not looked for under runs/
    assert r.stderr.strip() == (
        f"error: No run '{tmp_path}': no config.json in {tmp_path}. `digitrec runs` lists the runs."
    )


def test_user_errors_are_one_line_not_tracebacks(tmp_path, capsys):
    """Run in-process through the CLI's own main (what `python -m digitrec` calls): the
    first case also as a process, which exits with the same code and line."""
    from digitrec.cli import main

    runs = str(tmp_path / "runs")
    cases = [
        (("evaluate", "no-such-run"), "No run 'no-such-run': no config.json in"),
        (("evaluate", str(tmp_path / "missing.safetensors")), "No checkpoint at"),
        (("predict", "x.png", "--model-path", str(tmp_path / "missing.safetensors")),
         "--model-path: no checkpoint at"),
        (("predict",), "give image files to predict, or --random N"),
        (("predict", "--random", "-5"), "--random -5: give a number of test images, 1 or more"),
        (("predict", "--random", "0"), "--random 0: give a number of test images, 1 or more"),
        (("train", "--model", "resnet", "--epochs", "1", "--runs-dir", runs),
         "Unknown model 'resnet'; choose one of: mlp"),
        (("train", "--model", "fast", "--init", "default", "--runs-dir", runs),
         "holds a 'best' model and this run trains 'fast'"),
        (("train", "--init", "no-such-run", "--runs-dir", runs), "No run 'no-such-run'"),
        (("train", "--val-size", "-1", "--runs-dir", runs),
         "validation size -1 must be between 0 and 59999"),
        (("train", "--val-size", "60000", "--runs-dir", runs),
         "validation size 60000 must be between 0 and 59999"),
        (("train", "--val-size", "0", "--early-stop", "2", "--runs-dir", runs),
         "--val-size 0 holds no images out, and --early-stop"),
        (("data", "verify", "--dataset", "cifar"), "Unknown dataset 'cifar'; choose one of"),
    ]  # fmt: skip
    for args, says in cases:
        code, err = main(list(args)), capsys.readouterr().err
        assert code == 2, (args, err)
        assert err.startswith("error: ") and err.count("\n") == 1, (args, err)
        assert says in err, (args, err)
    assert not (tmp_path / "runs").exists()  # a refused run leaves no directory behind
    r = run_cli(*cases[0][0])
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    assert cases[0][1] in r.stderr


def test_export_and_every_backend_from_the_command_line(trained_run, mnist, tmp_path):
    """`digitrec export` (checked and not, int8, -o), then `predict --backend onnx|int8`
    and `evaluate FILE.safetensors`, as a user chains them."""
    run = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run)
    r = run_cli("export", str(run), "--quantize", "int8")
    assert r.returncode == 0, r.stderr
    assert "onnx float32" in r.stdout and "onnx int8" in r.stdout and "100.00%" in r.stdout
    assert (run / "best.onnx").is_file() and (run / "best.int8.onnx").is_file()
    r = run_cli("export", str(run), "--no-check", "-o", str(tmp_path / "copy.onnx"))
    assert r.returncode == 0 and (tmp_path / "copy.onnx").is_file(), r.stderr
    digit = tmp_path / "digit.png"
    Image.fromarray(255 - mnist.test_images[0].numpy()).save(digit)
    label = str(int(mnist.test_labels[0]))
    for backend, says in (("onnx", "onnx)"), ("int8", "onnx int8)"), ("torch", "torch)")):
        r = run_cli("predict", str(digit), "--model-path", str(run), "--backend", backend)
        assert r.returncode == 0 and says in r.stdout.splitlines()[0], (backend, r.stdout)
        assert r.stdout.splitlines()[1].startswith(f"{digit}: {label}"), r.stdout
    r = run_cli("predict", str(digit), "--model-path", str(tmp_path / "copy.onnx"))
    assert r.returncode == 0 and f"{digit}: {label}" in r.stdout, r.stderr
    r = run_cli("evaluate", str(run / "best.safetensors"), cwd=tmp_path)
    assert r.returncode == 0 and "fast on mnist test: accuracy 0.9" in r.stdout, r.stderr
    assert_drawn(tmp_path / "reports" / "best" / "confusion.png")  # not beside the file


def test_read_prints_each_number_and_json_gives_every_digit(tmp_path, glyphs):
    from conftest import compose

    files = {"year.png": ["2026"], "two.png": ["31", "415"], "pi.png": ["3.14"]}
    for name, lines in files.items():
        compose(glyphs, lines)[0].save(tmp_path / name)
    Image.new("L", (200, 80), 255).save(tmp_path / "blank.png")
    r = run_cli("read", str(tmp_path / "year.png"))
    assert r.returncode == 0 and r.stdout.splitlines()[0] == "2026", r.stdout + r.stderr
    r = run_cli("read", str(tmp_path))
    out = r.stdout.splitlines()
    assert r.returncode == 0 and f"{tmp_path / 'blank.png'}: no digits found" in out[0], out
    assert out[1] == f"{tmp_path / 'pi.png'}: 3.14" and out[2] == f"{tmp_path / 'two.png'}: 31"
    assert out[3] == " " * len(f"{tmp_path / 'two.png'}: ") + "415" and out[4].endswith("2026")
    r = run_cli("read", str(tmp_path / "two.png"), str(tmp_path / "missing.png"), "--json")
    two, missing = json.loads(r.stdout)
    assert r.returncode == 1 and "error" in missing and two["text"] == "31\n415"
    assert {"file", "text", "confidence", "uncertain", "digits"} <= set(two)
    first = two["digits"][0]
    assert first["char"] == "3" and first["line"] == 0 and len(first["probabilities"]) == 10
    assert two["digits"][-1]["line"] == 1 and len(first["box"]) == 4


def test_predict_says_when_an_image_holds_a_number(tmp_path, glyphs):
    from conftest import compose

    compose(glyphs, ["4096"])[0].save(tmp_path / "n.png")
    r = run_cli("predict", str(tmp_path / "n.png"))
    assert r.returncode == 0 and "more than one digit ('4096')" in r.stdout, r.stdout
    assert f"digitrec read {tmp_path / 'n.png'}" in r.stdout
    compose(glyphs, ["4"])[0].save(tmp_path / "one.png")
    assert "more than one digit" not in run_cli("predict", str(tmp_path / "one.png")).stdout


def test_evaluate_default_writes_its_report_under_reports_not_into_the_package(
    tmp_path, monkeypatch, capsys, mnist
):
    """`default` names the shipped model for evaluate as for --init and ensemble; its report
    goes to ./reports/default (beside the checkpoint was inside site-packages)."""
    from dataclasses import replace

    from digitrec import cli, data
    from digitrec.runs import shipped_model_path

    small = replace(mnist, test_images=mnist.test_images[:500], test_labels=mnist.test_labels[:500])
    monkeypatch.setattr(data, "load_dataset", lambda *a, **k: small)  # 500 test images
    monkeypatch.chdir(tmp_path)
    package = sorted(shipped_model_path().parent.iterdir())
    assert cli.main(["evaluate", "default"]) == 0
    out = capsys.readouterr().out
    assert "best on mnist test: accuracy" in out and "report: reports/default/report.html" in out
    assert_drawn(tmp_path / "reports" / "default" / "confusion.png")
    assert sorted(shipped_model_path().parent.iterdir()) == package  # nothing written there


def test_runs_says_where_it_looked_and_which_model_is_used(trained_run, tmp_path, capsys):
    from digitrec import cli

    assert cli.main(["runs", "--runs-dir", str(tmp_path / "none")]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"No runs yet in {(tmp_path / 'none').resolve()}")
    assert "predict, serve and gui use the model shipped with digitrec" in said
    shutil.copytree(trained_run.run_dir, tmp_path / "runs" / "fast1")
    assert cli.main(["runs", "--runs-dir", str(tmp_path / "runs")]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("predict, serve and gui use the shipped model (99.")
    assert "the best run fast1 has" in last and "--model-path" in last


def test_predict_a_folder_says_what_it_skipped_and_recursive_reads_subfolders(
    trained_run, mnist, tmp_path, capsys
):
    from digitrec import cli

    folder = tmp_path / "scans"
    (folder / "2026").mkdir(parents=True)
    Image.fromarray(255 - mnist.test_images[0].numpy()).save(folder / "a.png")
    Image.fromarray(255 - mnist.test_images[1].numpy()).save(folder / "2026" / "b.png")
    (folder / "notes.txt").write_text("not an image")
    model = ["--model-path", str(trained_run.run_dir)]
    assert cli.main(["predict", str(folder), "--json", *model]) == 0
    out, err = capsys.readouterr()
    assert [Path(o["file"]).name for o in json.loads(out)] == ["a.png"]
    assert "skipped 2: 1 not an image by name (notes.txt)" in err
    assert "1 folder (2026/): --recursive reads them too" in err
    assert cli.main(["predict", str(folder), "--recursive", "--json", *model]) == 0
    out, err = capsys.readouterr()
    assert [Path(o["file"]).name for o in json.loads(out)] == ["b.png", "a.png"]
    assert err.endswith("skipped 1: 1 not an image by name (notes.txt)\n")
    (tmp_path / "empty.png").write_bytes(b"")
    assert cli.main(["predict", str(tmp_path / "empty.png"), *model]) == 1
    assert f"{tmp_path / 'empty.png'} is empty (0 bytes)" in capsys.readouterr().out
