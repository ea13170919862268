"""The committed shell completions are current, and the bash one completes for real."""

import shutil
import subprocess
from pathlib import Path

import pytest

from imgtool.cli import cli
from imgtool.completion import SHELLS, generate

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("shell", SHELLS)
def test_completions_are_current(shell):
    committed = (ROOT / "completions" / f"imgtool.{shell}").read_text()
    assert committed == generate(shell, cli), (
        f"completions/imgtool.{shell} is stale: run scripts/gen_completions.sh")


def _bash_complete(words: list[str]) -> list[str]:
    script = ROOT / "completions" / "imgtool.bash"
    line = " ".join(words)
    cmd = (f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
           f"_imgtool_complete; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, check=True).stdout
    return out.split()


def test_bash_completes_commands_options_and_choices():
    assert {"process", "watch", "queue"} <= set(_bash_complete(["imgtool", "''"]))
    assert "--blur-sigma" in _bash_complete(["imgtool", "process", "--blur"])
    assert _bash_complete(["imgtool", "process", "--backend", "c"]) == ["cuda", "cpu"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh not installed")
def test_zsh_script_parses():
    subprocess.run(["zsh", "-n", str(ROOT / "completions" / "imgtool.zsh")], check=True)


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish not installed")
def test_fish_script_parses():
    subprocess.run(["fish", "--no-execute", str(ROOT / "completions" / "imgtool.fish")], check=True)
