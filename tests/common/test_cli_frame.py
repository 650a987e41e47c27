import argparse

import pytest

from common.cli import EXIT_ERROR, run_command
from common.errors import BadInput


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t")
    parser.add_argument("path")
    return parser


def test_project_error_becomes_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]):
    def dispatch(args: argparse.Namespace) -> int:
        raise BadInput(f"{args.path}: expected a JSON object,\n got a list")

    assert run_command(_parser(), ["x.json"], dispatch) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err == "error: x.json: expected a JSON object, got a list\n"


def test_unreadable_file_names_the_file(capsys: pytest.CaptureFixture[str], tmp_path):
    missing = tmp_path / "absent.json"

    def dispatch(args: argparse.Namespace) -> int:
        return len(open(args.path).read())

    assert run_command(_parser(), [str(missing)], dispatch) == EXIT_ERROR
    assert str(missing) in capsys.readouterr().err


def test_success_passes_exit_status_through():
    assert run_command(_parser(), ["a"], lambda args: 0) == 0
