"""Run make targets as the stages of `make test`, two at a time, and print how long each took.

    python3 tools/stages.py venv venv-old unit:venv unit-old:venv-old pages:book-strict ...

Each argument is a make target, optionally followed by ``:`` and the targets it must wait for
(``+``-separated). Stages run as soon as what they wait for has passed, at most JOBS at once
(default 2, this project's machines' cores). Each stage's output goes to
``artifacts/stages/<target>.log``; the table at the end gives each stage's seconds, and a failed
stage's last lines. The exit status is 1 if any stage failed (the stages that wait for it do not run).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

LOGS = Path("artifacts/stages")


def main(argv: list[str]) -> int:
    waits: dict[str, set[str]] = {}
    for arg in argv:
        target, _, after = arg.partition(":")
        waits[target] = set(filter(None, after.split("+")))
    jobs = int(os.environ.get("JOBS", "2"))
    LOGS.mkdir(parents=True, exist_ok=True)
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    result: dict[str, tuple[str, float]] = {}
    start = time.monotonic()
    while len(result) < len(waits):
        for target, after in waits.items():
            if target in result or target in running:
                continue
            if any(result.get(a, ("", 0))[0] in ("FAILED", "skipped") for a in after):
                result[target] = ("skipped", 0.0)
                print(f"[{_clock(start)}] {target}: not run, it waits for a stage that failed", flush=True)
            elif all(result.get(a, ("", 0))[0] == "ok" for a in after) and len(running) < jobs:
                log = (LOGS / f"{target}.log").open("w")
                process = subprocess.Popen(
                    ["make", "--no-print-directory", target], stdout=log, stderr=subprocess.STDOUT
                )
                running[target] = (process, time.monotonic())
                print(f"[{_clock(start)}] {target}: started", flush=True)
        for target, (process, began) in list(running.items()):
            if process.poll() is not None:
                status = "ok" if process.returncode == 0 else "FAILED"
                result[target] = (status, time.monotonic() - began)
                del running[target]
                print(f"[{_clock(start)}] {target}: {status} in {result[target][1]:.0f} s", flush=True)
        time.sleep(0.2)
    wall = time.monotonic() - start
    print("\nstage               seconds  result")
    for target in waits:
        status, seconds = result[target]
        print(f"{target:18}{seconds:9.0f}  {status}")
    print(f"{'total (wall clock)':18}{wall:9.0f}  {JOBS_NOTE.format(jobs=jobs)}")
    failed = [target for target, (status, _) in result.items() if status == "FAILED"]
    for target in failed:
        tail = (LOGS / f"{target}.log").read_text().splitlines()[-60:]
        print(f"\n--- {target} failed; the end of {LOGS / (target + '.log')} ---\n" + "\n".join(tail))
    return 1 if failed else 0


JOBS_NOTE = "({jobs} stages at a time)"


def _clock(start: float) -> str:
    seconds = int(time.monotonic() - start)
    return f"{seconds // 60:2d}:{seconds % 60:02d}"


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
