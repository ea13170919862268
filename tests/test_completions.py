"""The committed shell completions are current, and the bash one completes for real."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import on_ci
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


def _shell(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if on_ci():
            pytest.fail(f"{name} is missing: scripts/test.sh installs it")
        pytest.skip(f"{name} not installed (scripts/test.sh installs it)")
    return path


def test_zsh_script_parses_and_registers(tmp_path):
    zsh = _shell("zsh")
    script = ROOT / "completions" / "imgtool.zsh"
    subprocess.run([zsh, "-n", str(script)], check=True)
    # Installed as _imgtool on the fpath, as the README says, compinit picks it up.
    (tmp_path / "_imgtool").write_text(script.read_text())
    out = subprocess.run([zsh, "-f", "-c", f"fpath=({tmp_path} $fpath); autoload -U compinit; "
                          f"compinit -u -d {tmp_path}/zcompdump; print -r -- ${{_comps[imgtool]}}"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "_imgtool"


def test_fish_script_parses_and_completes():
    fish = _shell("fish")
    script = ROOT / "completions" / "imgtool.fish"
    subprocess.run([fish, "--no-execute", str(script)], check=True)
    out = subprocess.run([fish, "--no-config", "-c", f"source {script}; complete -C 'imgtool process --back'"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.startswith("--backend")
    out = subprocess.run([fish, "--no-config", "-c", f"source {script}; complete -C 'imgtool process --backend '"],
                         capture_output=True, text=True, check=True)
    assert sorted(line.split("\t")[0] for line in out.stdout.splitlines()) == ["auto", "cpu", "cuda"]
