"""``--nproc N``: run ``autoslim train`` / ``autoslim search`` as N ranks on this machine.

The ranks are started by torch's elastic launcher (what ``torchrun --standalone`` runs) and each
runs the very same command without ``--nproc``; a command that already is one rank of a launch
(torchrun, possibly over several machines: ``torchrun --nnodes ... -m app.cli search ...``) runs
as that rank.  When a rank fails, the launcher stops the others and the command fails with the
failed ranks named; the checkpoints left behind resume on any number of ranks.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_nproc(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="ranks on this machine (one per GPU; on the CPU, gloo); default 1",
    )


def launched(args: argparse.Namespace) -> int | None:
    """The exit status of ``args.nproc`` ranks running this command, or None to run it here
    (one process, or this process already is a rank)."""
    from engine.distributed import under_launcher

    if args.nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {args.nproc}")
    if args.nproc == 1 or under_launcher():
        return None
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from engine.distributed import launch

    try:
        statuses = launch(args.nproc, rank_main, [without_nproc(args.argv)])
    except ChildFailedError as err:
        failed = ", ".join(f"rank {rank} ({_cause(f)})" for rank, f in sorted(err.failures.items()))
        print(
            f"autoslim {args.command}: {failed} failed; the other ranks were stopped. "
            "Run the command again to resume from the last checkpoint.",
            file=sys.stderr,
        )
        return 1
    return int(statuses.get(0) or 0)


def rank_main(argv: list[str]) -> int:
    """One rank: the command itself (``app.cli.main``), which joins the launcher's process group."""
    from app.cli import main

    return main(argv)


def without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def _cause(failure: Any) -> str:
    if failure.exitcode is not None and failure.exitcode < 0:
        return f"killed by signal {-failure.exitcode}"
    message = failure.message if isinstance(failure.message, str) else (failure.message or {}).get("message", "")
    return str(message).splitlines()[0] if message else f"exit status {failure.exitcode}"
