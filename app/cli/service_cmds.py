"""``autoslim up``, ``serve``, ``worker``, ``migrate`` and ``token create``: running the service.

Settings come from ``AUTOSLIM_*`` environment variables (`store.settings`); with none set, everything
lives under ``~/.autoslim`` (SQLite file, filesystem queue, work directories).
"""

from __future__ import annotations

import argparse
import os
import socket


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="the embedded service: migrate, start the API and a worker, print an admin token")
    _add_bind(p)
    p.add_argument("--demo", action="store_true", help="also submit a small demo search on the digits")
    p.set_defaults(handler=cmd_up)

    p = sub.add_parser("serve", help="the API only (production: workers run elsewhere)")
    _add_bind(p)
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="API processes sharing the port (uvicorn workers); reads scale with them",
    )
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("worker", help="a search worker on this machine (solo pool: one search at a time)")
    p.add_argument("--queue", choices=("cpu", "gpu"), default=None, help="default AUTOSLIM_DEFAULT_QUEUE")
    p.add_argument("--loglevel", default="INFO")
    p.add_argument(
        "--gpus",
        default=None,
        metavar="0,1,...",
        help="run each search on all of these GPUs, one rank each, or cpu:N for N ranks on the CPU "
        "(default AUTOSLIM_WORKER_GPUS)",
    )
    p.add_argument(
        "--max-tasks-per-child",
        type=int,
        default=0,
        metavar="N",
        help="run each search in a child process replaced after N searches, so the GPU memory "
        "(CUDA context included) is handed back; 0 = the solo pool (default)",
    )
    p.set_defaults(handler=cmd_worker)

    p = sub.add_parser("migrate", help="bring the database to the newest schema")
    p.set_defaults(handler=cmd_migrate)

    p = sub.add_parser("token", help="API tokens")
    token_sub = p.add_subparsers(dest="token_command", required=True)
    t = token_sub.add_parser("create", help="create a token and print it (last line)")
    t.add_argument("--name", required=True, help="the owner's name; their searches carry it")
    t.add_argument("--admin", action="store_true", help="may see and manage every search")
    t.set_defaults(handler=cmd_token_create)


def _add_bind(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)


def _migrated_engine(upgrade: bool = False):  # noqa: ANN202 - (settings, engine)
    """Settings and an engine on a database at the newest migration (upgrading it if asked)."""
    from app.cli import CliError
    from app.migrate import SchemaError, require_current
    from app.migrate import upgrade as run_upgrade
    from store.db import engine_for
    from store.settings import get_settings

    settings = get_settings()
    engine = engine_for(settings.db_url)
    if upgrade:
        run_upgrade(engine)
    try:
        require_current(engine)
    except SchemaError as err:
        raise CliError(str(err)) from None
    return settings, engine


def cmd_migrate(args: argparse.Namespace) -> int:
    from app.migrate import head_revision

    _, engine = _migrated_engine(upgrade=True)
    print(f"database {engine.url.render_as_string(hide_password=True)} is at migration {head_revision()}")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    from app.auth import create_token
    from store.db import session_scope

    _, engine = _migrated_engine()
    with session_scope(engine) as session:
        secret = create_token(session, args.name, admin=args.admin)
    print(f"token for {args.name.strip()} ({'admin' if args.admin else 'user'}); shown once, keep it:")
    print(secret)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.celery_app import make_celery
    from worker.ranks import parse_gpus

    settings, _ = _migrated_engine()
    if args.gpus is not None:
        parse_gpus(args.gpus)  # a bad list is a one-line error now, not a failure of every search
        settings = settings.model_copy(update={"worker_gpus": args.gpus})
    queue = args.queue or settings.default_queue
    # solo pool: the search runs in this process.  One search uses a whole GPU (or every core), so
    # there is nothing to gain from a pool; a kill of the worker kills its search too (no orphaned
    # child still writing heartbeats), and no forked child can inherit a CUDA context.  Scale out
    # with more worker processes: one per GPU (CUDA_VISIBLE_DEVICES) and per machine.
    # With --max-tasks-per-child the search runs in one forked child (the parent never imports
    # torch) that exits after N searches, and the parent still answers pings while it works.
    pool = (
        ["--pool", "prefork", "--concurrency", "1", "--max-tasks-per-child", str(args.max_tasks_per_child)]
        if args.max_tasks_per_child > 0
        else ["--pool", "solo"]
    )
    make_celery(settings).worker_main(
        [
            "worker",
            "--queues",
            queue,
            *pool,
            "--loglevel",
            args.loglevel,
            "--hostname",
            f"autoslim-{queue}-{os.getpid()}@{socket.gethostname()}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    settings, _ = _migrated_engine()
    if args.processes > 1:  # each process builds its app from the same environment
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            workers=args.processes,
            host=args.host,
            port=args.port,
            log_level="info",
        )
    else:
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    import uvicorn

    from app.embedded import admin_token, exit_on_sigterm, start_worker, stop_worker, submit_demo
    from app.main import create_app

    settings, engine = _migrated_engine(upgrade=True)
    token = admin_token(engine, settings.home_dir)
    app = create_app(settings)
    worker = start_worker(settings.default_queue)
    url = f"http://{args.host}:{args.port}"
    exit_on_sigterm()
    try:
        print(f"autoslim is up at {url}  (API docs: {url}/docs; data under {settings.home_dir})", flush=True)
        if args.demo:
            search_id = submit_demo(engine, settings)
            print(f"demo search: curl -H 'Authorization: Bearer {token}' {url}/searches/{search_id}")
            print(f"its config:  curl -H 'Authorization: Bearer {token}' '{url}/searches/{search_id}/config?macs=5M'")
        print(f"admin token: {token}", flush=True)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        stop_worker(worker)
    return 0
