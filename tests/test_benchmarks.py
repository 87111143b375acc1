"""Every benchmark and tool as someone re-running it would: its help, and a tiny run that
prints the whole table (the figures of a tiny run mean nothing; that it runs does)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import assert_drawn
from digitrec.checkpoint import read_meta
from digitrec.predictor import Predictor
from digitrec.runs import companion_or_shipped, shipped_model_path

pytestmark = pytest.mark.slow  # each trains, serves or scores through the whole pipeline

ROOT = Path(__file__).parents[1]
BENCHMARKS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py"))


def run(script: str, *args: str, timeout: float = 600) -> str:
    path = ROOT / script
    r = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True,
                       timeout=timeout, cwd=path.parent)  # fmt: skip
    assert r.returncode == 0, (script, r.stdout[-2000:], r.stderr[-2000:])
    return r.stdout


@pytest.mark.parametrize(
    "script", [*BENCHMARKS, "../tools/ship_default_model.py", "../tools/make_examples.py"]
)
def test_every_benchmark_and_tool_explains_itself(script):
    path = ROOT / "benchmarks" / script
    r = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True,
                       timeout=120, cwd=path.parent)  # fmt: skip
    if script == "variants.py":  # a module of the others, not a command
        assert r.returncode == 0 and not r.stderr
        return
    assert r.returncode == 0 and r.stdout.startswith("usage:"), (script, r.stderr)


def rows(out: str, pattern: str) -> list[str]:
    return [line for line in out.splitlines() if re.match(pattern, line)]


def test_train_speed_races_the_reference_and_the_zoo_on_a_few_images():
    out = run("benchmarks/train_speed.py", "--limit", "500")
    for name in (
        "pytorch/examples",
        "digitrec fast",
        "digitrec mid",
        "digitrec mid + test-time views",
    ):
        assert rows(out, rf"{re.escape(name)}\s.* 99\.[05]%"), (name, out)
    zoo = rows(out, r"(mlp|cnn|cnn4|classic|fast|mid|best)\s+\w+\s+1\s+[\d.]+\s+[\d.]+%$")
    assert len(zoo) == 7, out


def test_stroke_training_renders_trains_and_saves_a_model(tmp_path):
    out_path = tmp_path / "stroke.safetensors"
    out = run("benchmarks/stroke_training.py", "--n", "40", "--val-n", "40", "--epochs", "1",
              "--limit", "300", "--out", str(out_path))  # fmt: skip
    assert "shipped model: clean" in out and "epoch 1/1" in out, out
    assert Predictor.load(out_path).meta["model"] == "best"


def test_robustness_scores_every_variant_against_the_textbook_pipeline():
    out = run("benchmarks/robustness.py", "--n", "5")
    variants = rows(out, r".+\s+\d+\.\d\d%\s+\d+\.\d\d%\s+[\d.]+$")
    assert len(variants) >= 20 and rows(out, r"\s+(PASS|MISS)\s"), out


def test_photos_reads_each_kind_of_phone_photo():
    out = run("benchmarks/photos.py", "--n", "2")
    assert len(rows(out, r".+\s[\d.]+x$")) == 6, out  # four kinds of photo, two blank


def test_trust_flags_every_outlier_kind_and_digits_against_the_reference(tmp_path):
    misses = tmp_path / "misses.png"
    out = run("benchmarks/trust.py", "--n", "5", "--renders", "2", "--photos", "1",
              "--digits", "100", "--misses", str(misses))  # fmt: skip
    assert rows(out, r"calibrated \(T = [\d.]+\)\s+0\.00\d\d"), out
    kinds = ["scribble", "letter", "symbol", "blot", "dot", "Fashion-MNIST", "MNIST test",
             "real-input renders", "photo, small", "photo, framed",
             "photo of something else"]  # fmt: skip
    for kind in kinds:
        assert rows(out, rf"{re.escape(kind)}.*\s[\d.]+%\s+[\d.]+%\s+[\d.]+%"), (kind, out)
    assert len(rows(out, r"\s+(PASS|MISS)\s")) == 4, out
    assert Image.open(misses).height == 3 * 30 * 7  # a row per kind of junk


def test_inference_times_every_backend_and_compares_with_the_targets():
    out = run("benchmarks/inference.py", "--seconds", "0.1", "--quick")
    for runtime in ("torch eager", "torch frozen", "onnx float32", "onnx int8"):
        assert len(rows(out, rf"(best|fast)\s+{runtime}\s")) == 2, (runtime, out)
    assert "targets (issue 7):" in out and "end to end p50" in out, out


def test_serve_load_compares_the_server_with_the_framework_ceiling():
    out = run("benchmarks/serve_load.py", "--requests", "20", "--seconds", "1",
              "--client", "python")  # fmt: skip
    served = rows(out, r"digitrec /api/predict\s+\d+\s")
    assert served and all(line.split()[-2] == "0" for line in served), out  # no errors
    assert "of the framework's ceiling" in out


def test_ship_default_model_makes_the_seven_files_elsewhere(tmp_path):
    out = run("tools/ship_default_model.py", "--to", str(tmp_path), "--limit", "300")
    files = {p.name for p in tmp_path.iterdir()}
    assert files == {"default.safetensors", "default.onnx", "default.int8.onnx", "default.json",
                     "default.reader.safetensors", "default.reader.onnx",
                     "default.lines.safetensors"}  # fmt: skip
    record = json.loads((tmp_path / "default.json").read_text())
    assert "--limit 300" in record["command"] and record["test"]["accuracy"] > 0.1, record
    assert f"shipped {tmp_path / 'default.safetensors'}" in out
    assert read_meta(tmp_path / "default.safetensors")["shipped"] is True
    shipped = Predictor.load(tmp_path / "default.safetensors", backend="onnx")
    assert shipped.meta["model"] == "best"
    assert shipped.reading_model().classes[-1] == "none"
    assert shipped.reading_model().backend == "onnx"  # its export, found beside it
    assert companion_or_shipped(tmp_path / "default.safetensors", "lines").parent == tmp_path


def test_ship_default_model_refuses_a_quick_model_in_the_package(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "tools/ship_default_model.py"), "--limit",
                        "300"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "give --to, not the package's assets" in r.stderr
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    for wrong in (shipped_model_path(), junk):  # --lines names a line model, not any file
        r = subprocess.run([sys.executable, str(ROOT / "tools/ship_default_model.py"), "--to",
                            str(tmp_path), "--lines", str(wrong)], capture_output=True,
                           text=True, timeout=60)  # fmt: skip
        assert r.returncode == 2 and "not a line model" in r.stderr, r.stderr


def test_whole_numbers_reads_every_category_against_the_digits_alone(tmp_path):
    out = run("benchmarks/whole_numbers.py", "--n", "3", "--split", "val",
              "--sheet", str(tmp_path / "sheet.png"))  # fmt: skip
    cats = rows(out, r".+\s+\d+\.\d%\s+\d+\.\d%\s+\d+\.\d%\s+[\d.]+\s")
    assert len(cats) == 7 and "point placed right" in out, out
    assert_drawn(tmp_path / "sheet.png")


def test_learning_corrects_a_simulated_user_and_prints_each_count(trained_run):
    model = str(trained_run.run_dir / "best.safetensors")
    out = run("benchmarks/learning.py", "--quick", "--counts", "12", "--unseen", "40",
              "--split", "val", "--model-path", model)  # fmt: skip
    assert "written to find 12 misread" in out, out
    [row] = rows(out, r"\s+12\s+\d+\.\d\d%\s+\d+\.\d\d%\s+[+-]\d+\.\d\s+\d+\.\d\d%")
    assert re.search(r"\s(passed|refused: .+)$", row), row
