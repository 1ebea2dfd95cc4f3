"""The ``autoslim`` command.  Each command group lives in its own module and registers itself.

Heavy imports (torch, FastAPI, Celery) happen inside the handlers, so ``autoslim --help`` is fast
and a user error is reported as one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys

from app.cli import engine_cmds, model_cmds, profile_cmds, search_cmds, service_cmds


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoslim", description="Channel-number search for CNNs (AutoSlim).")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (model_cmds, engine_cmds, search_cmds, profile_cmds, service_cmds):
        module.add_commands(sub)
    return parser


NETWORK_COMMANDS = {"archs", "macs", "export", "train", "search", "retrain"}
"""Commands that build networks, so they may name ``MODULE:FUNCTION`` ones (AUTOSLIM_MODEL_MODULES)."""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what `--nproc` ranks run again
    try:
        if args.command in NETWORK_COMMANDS:
            from models import allow_modules
            from store.settings import get_settings

            allow_modules(get_settings().model_modules)
        return int(args.handler(args) or 0)
    except (CliError, ValueError, KeyError, FileNotFoundError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"autoslim {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
