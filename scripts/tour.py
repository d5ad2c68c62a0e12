#!/usr/bin/env python3
"""Runs the README's tour as written: every command of the first ```sh block under
"## A short tour", in order, in one bash (so `. .kiln/env` and exports carry on), failing
on the first command that exits non-zero and naming it.

    python3 scripts/tour.py README.md DIR     # DIR: where `.kiln/`, `data/`, `examples/` are

scripts/test.sh runs it against the stack its quickstart run left running.
"""
import re
import subprocess
import sys


def tour_commands(readme: str) -> list[str]:
    """The tour's commands: continuation lines joined, comments and blank lines dropped."""
    section = re.search(r"^## A short tour\n(.*?)(?=^## )", readme, re.S | re.M)
    if not section:
        sys.exit("tour: README.md has no '## A short tour' section")
    block = re.search(r"^```sh\n(.*?)^```", section.group(1), re.S | re.M)
    if not block:
        sys.exit("tour: the tour section has no ```sh block")
    commands, current = [], ""
    for line in block.group(1).splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line + "\n"
        if not line.endswith("\\"):
            commands.append(current.rstrip("\n"))
            current = ""
    if current:
        sys.exit(f"tour: the last command ends in a line continuation: {current!r}")
    return commands


def run(commands: list[str], cwd: str) -> int:
    # One script, one shell: each command echoed first, its exit status checked after it.
    script = ["set -uo pipefail"]
    for i, command in enumerate(commands, 1):
        first = command.splitlines()[0]
        script.append(f"printf '\\n[tour %d/%d] %s\\n' {i} {len(commands)} {shquote(first)}")
        script.append(command)
        script.append(
            f"rc=$?; if [ $rc -ne 0 ]; then printf '\\ntour: command %d failed (exit %d): %s\\n' "
            f"{i} $rc {shquote(first)} >&2; exit 1; fi"
        )
    result = subprocess.run(["bash", "-c", "\n".join(script)], cwd=cwd)
    return 0 if result.returncode == 0 else 1


SELF_TEST = """## A short tour\n\n```sh\n# a comment\nexport A=1\n[ "$A" = 1 ]\necho one \\\n  two\nfalse\necho never\n```\n\n## Next\n"""


def main() -> int:
    if sys.argv[1:] == ["--self-test"]:
        # The runner must carry state across commands, join continuations, and stop at
        # the first failure (here `false`, the 4th command).
        import tempfile

        commands = tour_commands(SELF_TEST)
        assert commands == ["export A=1", '[ "$A" = 1 ]', "echo one \\\n  two", "false", "echo never"], commands
        with tempfile.TemporaryDirectory() as d:
            assert run(commands[:3], d) == 0, "a passing tour failed"
            assert run(commands, d) == 1, "a failing command did not fail the tour"
        print("tour: self-test passed")
        return 0
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    readme, cwd = sys.argv[1], sys.argv[2]
    with open(readme, encoding="utf-8") as f:
        commands = tour_commands(f.read())
    if len(commands) < 10:
        sys.exit(f"tour: only {len(commands)} commands found; is the block intact?")
    if run(commands, cwd) != 0:
        return 1
    print(f"\ntour: all {len(commands)} commands of README.md's tour exited 0")
    return 0


def shquote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


if __name__ == "__main__":
    sys.exit(main())
