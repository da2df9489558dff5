"""The README quick start and CI must not drift apart."""

from __future__ import annotations

import re

from conftest import REPO_ROOT


def quick_start_commands() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    commands = quick_start_commands()
    assert len(commands) == 2
    assert commands[0].endswith("steercf demo")
    assert "pytest" in commands[1]
    ci_script = (REPO_ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci_script.splitlines()
    for command in commands:
        assert "torch==2.13.0" in command.split("-e")[0]  # torch first, before the package
