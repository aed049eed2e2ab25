"""``renkei`` start-up: wall and CPU time of whole commands, this tree beside a baseline tree.

    git archive <commit> | tar -x -C /tmp/headtree
    .venv/bin/python bench/cli_startup.py --before /tmp/headtree --runs 10

Each command runs as a new process (``python -c`` calling the console script's ``app``, with
``PYTHONPATH`` at one tree or the other), the two trees alternating, ``--runs`` times each; the
median wall time and the median CPU time (user + system of the child) are printed as a
Markdown table with the ratio before / after. The read commands (``dlq list``…) read a fresh
SQLite store in a temporary ``RENKEI_DATA_DIR``, created by one run before the timed ones.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
RUN = 'import sys; from bus.cli import app; sys.argv[0] = "renkei"; sys.exit(app())'
COMMANDS = (
    "--help",
    "catalog --json",
    "destinations list --help",
    "dlq list",
    "destinations list",
    "messages list",
    "users list",
    "keys list",
)


def once(tree: Path, data: Path, command: list[str]) -> tuple[float, float]:
    env = {**os.environ, "RENKEI_DATA_DIR": str(data), "PYTHONPATH": str(tree)}
    env.pop("RENKEI_DATABASE_URL", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", RUN, *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=data,
        check=True,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the baseline tree")
    parser.add_argument("--after", type=Path, default=HERE, help="this tree by default")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("commands", nargs="*", default=COMMANDS, help='e.g. "dlq list"')
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    with tempfile.TemporaryDirectory() as temporary:
        data = Path(temporary)
        once(trees["after"], data, ["dlq", "list"])  # creates the store
        print(f"load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
        print(
            "| command | wall before ms | wall after ms | ratio | CPU before ms | "
            "CPU after ms | ratio | CPU saved ms |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for line in args.commands:
            command = line.split()
            times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in trees}
            for _ in range(args.runs):
                for side, tree in trees.items():
                    wall, cpu = once(tree, data, command)
                    times[side][0].append(wall * 1000)
                    times[side][1].append(cpu * 1000)
            bw, bc = (statistics.median(v) for v in times["before"])
            aw, ac = (statistics.median(v) for v in times["after"])
            print(
                f"| `renkei {line}` | {bw:.0f} | {aw:.0f} | {bw / aw:.2f}× | {bc:.0f} | "
                f"{ac:.0f} | {bc / ac:.2f}× | {bc - ac:.0f} |",
                flush=True,
            )
        print(f"load average {os.getloadavg()[0]:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
