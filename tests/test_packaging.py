"""What a user of the installed package sees: its version (one number everywhere) and its licence."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from typer.testing import CliRunner

import hrtemnet
from hrtemnet.cli import app

REPO = Path(__file__).resolve().parents[1]


def test_version_option_prints_the_installed_version_and_exits():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"hrtemnet {importlib.metadata.version('hrtemnet')}"
    assert hrtemnet.__version__ == importlib.metadata.version("hrtemnet")


def test_version_is_eager_and_needs_no_command():
    result = CliRunner().invoke(app, ["--version", "no-such-command"])
    assert result.exit_code == 0 and result.output.startswith("hrtemnet ")


def test_the_licence_file_is_the_one_the_metadata_names():
    assert "MIT" in importlib.metadata.metadata("hrtemnet")["License"]
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "hrtemnet developers" in text
