"""The soak's second process: changes the daemon's keywords at the moments the soak driver names.

`python -m training.bench.soak_mutator --config C --state-dir S --pid P --takes T --others O --seed N` reads
one JSON line per action request on stdin (`{"act": true}`, or `{"stop": true}`), does one randomly chosen
action through the real command line (`python -m edge.cli ...`, as a user would) or a signal or a file
operation, and answers one JSON line: the action, whether it worked, and the keyword set the daemon must
report afterwards (`expect`; null when no reload is due). The keyword the soak must keep finding is only ever
re-enrolled from the same takes (an atomic replacement with an identical template); every other change is made
to throw-away keywords enrolled with threshold 0.99, so they never compete with it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.templates import TemplateStore

__all__ = ["ACTIONS", "main"]

ACTIONS = ("enroll", "remove", "reject", "reenroll", "sighup", "touch_config", "corrupt")
CHURN_THRESHOLD = "0.99"


class Mutator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.store = TemplateStore(args.state_dir)
        self.rng = np.random.default_rng(args.seed)
        self.enrolled = 0
        self.junk = Path(args.state_dir) / "keywords" / "junk.json"

    def _kws(self, *command: str) -> tuple[bool, str]:
        result = subprocess.run(
            [sys.executable, "-m", "edge.cli", *command, "--config", str(self.args.config)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        return result.returncode == 0, result.stderr.strip().splitlines()[-1] if result.returncode else ""

    def _churn(self) -> list[str]:
        return [name for name in self.store.names() if name.startswith("churn-")]

    def act(self, action: str) -> dict[str, Any]:
        churn = self._churn()
        if action in ("remove", "reject") and not churn:
            action = "enroll"
        ok, error, reload_due = True, "", True
        if action == "enroll":
            self.enrolled += 1
            name = f"churn-{self.enrolled}"
            others = [str(p) for p in self.rng.choice(self.args.others, 3, replace=False)]
            ok, error = self._kws("enroll", name, *others, "--no-checks", "--threshold", CHURN_THRESHOLD)
        elif action == "remove":
            ok, error = self._kws("remove", str(self.rng.choice(churn)))
        elif action == "reject":
            ok, error = self._kws(
                "reject", str(self.rng.choice(churn)), str(self.rng.choice(self.args.others))
            )
        elif action == "reenroll":
            ok, error = self._kws("enroll", self.args.keyword, *map(str, self.args.takes))
        elif action == "sighup":
            os.kill(self.args.pid, signal.SIGHUP)
        elif action == "touch_config":
            os.utime(self.args.config)  # configuration changes need a restart: nothing may happen
            reload_due = False
        elif action == "corrupt":  # a torn keyword file without a backup appears, or goes again
            if self.junk.exists():
                self.junk.unlink()
            else:
                text = self.store.path_for(self.args.keyword).read_text()
                self.junk.write_text(text[: len(text) // 2])
        expect = sorted(t.name for t in self.store.list()) if ok and reload_due else None
        return {"action": action, "ok": ok, "error": error, "expect": expect}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="soak_mutator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="the daemon's configuration file")
    parser.add_argument("--state-dir", type=Path, required=True, help="the daemon's state directory")
    parser.add_argument("--pid", type=int, required=True, help="the daemon's process id (for SIGHUP)")
    parser.add_argument("--keyword", required=True, help="the keyword that must keep being found")
    parser.add_argument("--takes", type=Path, nargs="+", required=True, help="its enrollment takes")
    parser.add_argument("--others", type=Path, nargs="+", required=True, help="other words (>= 3 files)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    mutator = Mutator(args)
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("stop"):
            break
        action = str(request.get("action") or mutator.rng.choice(ACTIONS))
        print(json.dumps(mutator.act(action)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
