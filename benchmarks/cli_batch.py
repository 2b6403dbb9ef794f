"""Run many `cxrcl ...` command lines in ONE Python process (imports paid once, ~4 s each saved).

Each non-empty line of FILE is the argument list after `cxrcl` (shell-quoted); it runs through
`cxrcl.cli.main` exactly as the command would, with sys.argv set so that eval JSON records the
command. Stops at the first failing line (its exit code).

    .venv/bin/python benchmarks/cli_batch.py FILE
"""

from __future__ import annotations

import shlex
import sys

from cxrcl.cli import main


def run(path: str) -> int:
    for line in open(path, encoding="utf-8"):
        args = shlex.split(line)
        if not args:
            continue
        sys.argv = ["cxrcl", *args]
        print("+ cxrcl " + shlex.join(args), flush=True)
        code = main(args)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1]))
