"""The ``atrium`` command line.

    atrium run [-c homeserver.yaml]      the master (a monolith with no workers)
    atrium worker -c homeserver.yaml -c workers/NAME.yaml
    atrium generate-config --server-name NAME --data-dir DIR [...]
    atrium register-user -c homeserver.yaml --user NAME --password PW [--admin]
    atrium migrate -c homeserver.yaml
    atrium generate-key -c homeserver.yaml
    atrium routes --format nginx|json [-c homeserver.yaml] [--listen PORT]
    atrium status -c homeserver.yaml [--timeout S] [--json]

A config mistake prints one line naming the key and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from atrium.config.homeserver import ConfigError, HomeServerConfig, load_config

DEFAULT_DATA_DIR = Path("atrium-data")
EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atrium", description="Atrium Matrix homeserver")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run", help="run the main process (everything, when no workers are configured)"
    )
    run.add_argument(
        "-c",
        "--config",
        action="append",
        help="homeserver.yaml (default: ./atrium-data/homeserver.yaml, created on first run)",
    )

    worker = sub.add_parser("worker", help="run a worker process")
    worker.add_argument(
        "-c",
        "--config",
        action="append",
        required=True,
        help="homeserver.yaml, then the worker's file",
    )
    worker.add_argument(
        "--worker-name",
        default=os.environ.get("ATRIUM_WORKER_NAME") or None,
        help="replaces the worker file's worker_name; {hostname} is this host's name, so"
        " replicas of one scaled service differ (default: $ATRIUM_WORKER_NAME)",
    )

    gen = sub.add_parser(
        "generate-config", help="write a data directory with homeserver.yaml and a signing key"
    )
    gen.add_argument("--server-name", required=True)
    gen.add_argument("--data-dir", required=True, type=Path)
    gen.add_argument("--database-url")
    gen.add_argument("--redis-url")
    gen.add_argument("--http-port", type=int, default=8008)
    gen.add_argument("--bind-address", default="127.0.0.1")
    gen.add_argument("--enable-registration", action="store_true")
    gen.add_argument("--workers", help="e.g. sync:2,event_writer:2,federation_reader:1,generic:1")
    gen.add_argument("--worker-base-port", type=int)
    gen.add_argument("--federation-port", type=int)
    gen.add_argument("--tls-cert")
    gen.add_argument("--tls-key")
    gen.add_argument("--federation-skip-verify", action="store_true")
    gen.add_argument("--federation-allow-private-ips", action="store_true")
    gen.add_argument("--force", action="store_true", help="overwrite an existing homeserver.yaml")
    gen.add_argument("--public-baseurl", help="the URL clients use (default: the listener's)")
    gen.add_argument(
        "--containers",
        action="store_true",
        help="one container per process (docker-compose): every process on 0.0.0.0, the"
        " others reached by instance name, data in /data, secrets from ${ATRIUM_...}"
        " environment variables, no signing key written (see docs/deployment.md)",
    )

    key = sub.add_parser(
        "generate-key", help="write the signing key the config names, unless it exists"
    )
    key.add_argument("-c", "--config", action="append", required=True)

    reg = sub.add_parser("register-user", help="create a local user")
    reg.add_argument("-c", "--config", action="append", required=True)
    reg.add_argument("--user", required=True)
    reg.add_argument("--password", required=True)
    reg.add_argument("--admin", action="store_true")

    mig = sub.add_parser("migrate", help="apply database schema migrations and exit")
    mig.add_argument("-c", "--config", action="append", required=True)

    routes = sub.add_parser(
        "routes", help="print reverse-proxy routing (which process serves which endpoint)"
    )
    routes.add_argument("--format", choices=("nginx", "json"), default="nginx")
    routes.add_argument(
        "-c",
        "--config",
        type=Path,
        help="homeserver.yaml: upstreams from its instance_map and worker files"
        " (default: one upstream per worker type named after it, port 8008)",
    )
    routes.add_argument(
        "--worker-config",
        action="append",
        type=Path,
        help="a worker file (repeatable; default: workers/*.yaml beside homeserver.yaml)",
    )
    routes.add_argument("--listen", default="8008", help="nginx listen address (default 8008)")
    routes.add_argument("-o", "--output", type=Path, help="write here instead of stdout")

    status = sub.add_parser(
        "status",
        help="show every process of the deployment: ready or not, stream positions and lag",
    )
    status.add_argument("-c", "--config", action="append", required=True)
    status.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for each process (default 5)"
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of tables")
    status.add_argument(
        "--workers-dir", type=Path, help="worker files to include (default: <config dir>/workers)"
    )
    return parser


def _first_run_config() -> list[str]:
    """./atrium-data/homeserver.yaml, generated with defaults on first run."""
    from atrium.config.generate import generate_config

    path = DEFAULT_DATA_DIR / "homeserver.yaml"
    if not path.exists():
        generate_config(DEFAULT_DATA_DIR, "localhost")
        print(
            f"atrium: created {path} (server name 'localhost', SQLite database, registration closed)"
        )
    return [str(path)]


def _cmd_generate(args: argparse.Namespace) -> int:
    from atrium.config.generate import generate_config, parse_workers_spec

    workers = parse_workers_spec(args.workers) if args.workers else None
    federation = None
    if any(
        [
            args.federation_port,
            args.tls_cert,
            args.federation_skip_verify,
            args.federation_allow_private_ips,
        ]
    ):
        federation = {
            "port": args.federation_port or 8448,
            "tls_certificate_path": args.tls_cert,
            "tls_private_key_path": args.tls_key,
            "verify_certificates": not args.federation_skip_verify,
            "allow_private_ips": args.federation_allow_private_ips,
        }
    config_path, worker_files = generate_config(
        args.data_dir,
        args.server_name,
        database_url=args.database_url,
        redis_url=args.redis_url,
        http_port=args.http_port,
        bind_address=args.bind_address,
        enable_registration=args.enable_registration,
        workers=workers,
        worker_base_port=args.worker_base_port,
        federation=federation,
        overwrite=args.force,
        containers=args.containers,
        public_baseurl=args.public_baseurl,
    )
    print(f"Wrote {config_path}")
    print(f"Start the main process:  atrium run -c {config_path}")
    for wf in worker_files:
        print(f"Start worker {wf.stem}:  atrium worker -c {config_path} -c {wf}")
    return 0


def _cmd_routes(args: argparse.Namespace) -> int:
    from atrium.app import proxy
    from atrium.app.routes import collect_routes

    max_body = 10 * 1024 * 1024
    if args.config is not None:
        upstreams = proxy.configured_upstreams(args.config, args.worker_config)
        max_body = load_config([str(args.config)]).max_request_size
    else:
        upstreams = proxy.default_upstreams()
    routes = collect_routes()
    if args.format == "json":
        text = proxy.render_json(routes, upstreams)
    else:
        shown = "".join(
            [
                f" -c {args.config}" if args.config else "",
                "".join(f" --worker-config {w}" for w in args.worker_config or []),
                f" --listen {args.listen}" if args.listen != "8008" else "",
            ]
        )
        text = proxy.render_nginx(
            routes, upstreams, listen=args.listen, max_body_size=max_body, generated_by=shown
        )
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "generate-config":
            return _cmd_generate(args)
        if args.command == "routes":
            return _cmd_routes(args)
        paths = args.config or (_first_run_config() if args.command == "run" else [])
        config: HomeServerConfig = load_config(paths, getattr(args, "worker_name", None))
        if args.command == "run" and config.is_worker:
            raise ConfigError(
                "config", "a worker file was given to `atrium run`; use `atrium worker`"
            )
        if args.command == "worker" and not config.is_worker:
            raise ConfigError(
                "config", "`atrium worker` needs homeserver.yaml and a worker file (-c twice)"
            )
    except ConfigError as e:
        print(f"atrium: config error: {e}", file=sys.stderr)
        return EXIT_CONFIG

    if args.command == "status":
        from atrium.app.status import run_status

        code, text = run_status(config, args.timeout, args.json, args.workers_dir)
        print(text)
        return code

    from atrium.app import commands

    if args.command in ("run", "worker"):
        return commands.run_server(config)
    if args.command == "register-user":
        return commands.register_user(config, args.user, args.password, args.admin)
    if args.command == "migrate":
        return commands.migrate(config)
    if args.command == "generate-key":
        return commands.generate_key(config)
    return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
