"""Every numeric flag of the command line takes finite numbers only, and a bad command line is
answered in one line."""

from __future__ import annotations

import pytest

from livepiano.cli import build_parser

FLOAT_FLAGS = [
    ("generate", "--seconds", ["-o", "x.mid"]), ("generate", "--temperature", ["-o", "x.mid"]),
    ("train", "--minutes", ["cache"]), ("train", "--epochs", ["cache"]),
    ("train", "--dropout", ["cache"]), ("train", "--lr", ["cache"]),
    ("train", "--eval-every", ["cache"]), ("play", "--temperature", []), ("play", "--wait", []),
    ("play", "--min-call", []), ("learn", "--timeout", ["temperature"]),
    ("demo", "--seconds", []), ("bench", "--minutes", ["soak"]), ("bench", "--wait", ["duet"]),
]


@pytest.mark.parametrize("command,flag,rest", FLOAT_FLAGS)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e999"])
def test_non_finite_numbers_are_refused_in_one_line(command, flag, rest, value, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([command, *rest, f"{flag}={value}"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert flag in err and "not a finite number" in err and "--help" in err


def test_a_finite_number_passes():
    args = build_parser().parse_args(["generate", "-o", "x.mid", "--seconds", "2.5"])
    assert args.seconds == 2.5


def test_generate_inf_is_one_line_not_a_traceback(run_livepiano, tmp_path):
    done = run_livepiano("generate", "--seconds", "inf", "-o", tmp_path / "x.mid")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
