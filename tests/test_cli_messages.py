"""Every command's bad input reads the same: exit 2, one line, starting 'error: ' and naming the thing."""

import pytest
from click.testing import CliRunner

from exporter.cli.bench import cli as bench_cli
from exporter.cli.main import cli

CASES = [
    (cli, ["nosuch"], "nosuch"),
    (cli, ["tflite"], "--model"),
    (cli, ["tflite", "--model", "{tmp}/nope.keras"], "nope.keras"),
    (cli, ["onnx", "--model", "{tmp}/x", "--opset", "3"], "--opset"),
    (cli, ["train", "--data", "{tmp}/nope", "--out", "{tmp}/run"], "nope"),
    (cli, ["data", "check", "{tmp}/nope"], "nope"),
    (cli, ["data", "synth"], "--out"),
    (cli, ["pack", "{tmp}", "--out", "{tmp}/x.pack"], "model.keras"),
    (cli, ["prune", "{tmp}/nope"], "manifest"),
    (cli, ["pipeline", "--out", "{tmp}/run", "--data", "{tmp}/nope"], "nope"),
    (bench_cli, ["run"], "TARGET"),
    (bench_cli, ["run", "{tmp}/nope.pack"], "nope.pack"),
    (bench_cli, ["run", "{tmp}", "--devices", "tpu"], "tpu"),
    (bench_cli, ["compare", "{tmp}/nope.json"], "nope.json"),
    (bench_cli, ["compare", "{tmp}/bad.json"], "bad.json"),
]


@pytest.mark.parametrize(("command", "args", "names"), CASES, ids=[" ".join(c[1][:2]) for c in CASES])
def test_bad_input_is_one_line_error_exit_2(command, args, names, tmp_path):
    (tmp_path / "bad.json").write_text("[1, 2")
    result = CliRunner().invoke(command, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    assert names in result.output and "Traceback" not in result.output
