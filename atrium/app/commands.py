"""What the CLI subcommands do once the config has loaded."""

from __future__ import annotations

import logging
import sys
from typing import Any

from atrium.config.homeserver import HomeServerConfig

# Exit status of a process refusing the database's schema (too old or too new).
EXIT_SCHEMA = 2


def setup_logging(config: HomeServerConfig) -> None:
    handler: logging.Handler
    if config.log_file:
        handler = logging.FileHandler(config.log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s {config.instance_name} %(name)s %(levelname)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level)
    # Twisted's own log (unhandled errors in Deferreds, failures inside
    # twisted.web) is otherwise only buffered in memory and never shown.
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    globalLogBeginner.beginLoggingTo([STDLibLogObserver(name="twisted")], redirectStandardIO=False)


def _run_async(fn: Any) -> int:
    """Run ``fn()`` (a coroutine function) on the reactor and stop; its exit code."""
    from twisted.internet import defer, reactor

    outcome: dict[str, Any] = {"rc": 1}

    from atrium.storage.migrations import SchemaOutdatedError, SchemaTooNewError

    async def main() -> None:
        try:
            outcome["rc"] = await fn()
        except (SchemaOutdatedError, SchemaTooNewError) as e:
            # The operator's next step is in the message: one line, no traceback.
            print(f"atrium: {e}", file=sys.stderr)
            outcome["rc"] = EXIT_SCHEMA
        except Exception as e:
            logging.getLogger("atrium").exception("failed")
            print(f"atrium: {e}", file=sys.stderr)
            outcome["rc"] = 1
        finally:
            reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(main()))
    reactor.run()
    return outcome["rc"]


def run_server(config: HomeServerConfig) -> int:
    from twisted.internet import defer, reactor

    from atrium.app.homeserver import HomeServer
    from atrium.storage.migrations import SchemaOutdatedError, SchemaTooNewError

    setup_logging(config)
    log = logging.getLogger("atrium")
    hs = HomeServer(config, reactor)
    state: dict[str, Any] = {"rc": 0}

    async def start() -> None:
        try:
            # Only the master migrates on start; workers refuse an outdated schema.
            await hs.setup(allow_migrate=not config.is_worker)
            await hs.start()
            hs.start_listening()
        except (SchemaOutdatedError, SchemaTooNewError) as e:
            print(f"atrium: {e}", file=sys.stderr)
            state["rc"] = EXIT_SCHEMA
            reactor.stop()
            return
        except Exception as e:
            log.exception("start-up failed")
            print(f"atrium: start-up failed: {e}", file=sys.stderr)
            state["rc"] = 1
            reactor.stop()
            return
        # SIGTERM / SIGINT stop the reactor: stop the services first, so a
        # worker says goodbye on the bus (CLEAR_USER_SYNC) and flushes what it queued.
        reactor.addSystemEventTrigger("before", "shutdown", lambda: defer.ensureDeferred(stop()))
        url = config.baseurl()
        print(f"atrium: {config.instance_name} serving {config.server_name} at {url}", flush=True)
        if not config.is_worker:
            print(
                f"atrium: create a user with: atrium register-user -c {config.config_dir / 'homeserver.yaml'}"
                " --user NAME --password PASSWORD",
                flush=True,
            )

    async def stop() -> None:
        try:
            await hs.stop()
        except Exception:
            log.exception("clean shutdown failed")

    reactor.callWhenRunning(lambda: defer.ensureDeferred(start()))
    reactor.run()
    return state["rc"]


def register_user(config: HomeServerConfig, user: str, password: str, admin: bool) -> int:
    from twisted.internet import reactor

    from atrium.app.homeserver import HomeServer
    from atrium.errors import MatrixError

    setup_logging(config)

    async def go() -> int:
        hs = HomeServer(config, reactor)
        await hs.setup()
        try:
            localpart = user[1:].split(":", 1)[0] if user.startswith("@") else user
            user_id = await hs.registration.register_user(localpart, password, admin=admin)
        except MatrixError as e:
            print(f"atrium: {e.msg}", file=sys.stderr)
            return 1
        finally:
            await hs.stop()
        print(f"Created {'admin ' if admin else ''}user {user_id}")
        return 0

    return _run_async(go)


def migrate(config: HomeServerConfig) -> int:
    from twisted.internet import reactor

    from atrium.storage.database import DatabasePool
    from atrium.storage.engines import create_engine
    from atrium.storage.migrations import current_version, prepare_database

    setup_logging(config)

    async def go() -> int:
        db = DatabasePool(create_engine(config.database_url), reactor)
        db.start()
        try:
            before = await current_version(db)
            after = await prepare_database(db, allow_migrate=True)
        finally:
            db.close()
        print(
            f"atrium: schema version {before} -> {after}"
            if after != before
            else f"atrium: schema at version {after}, nothing to do"
        )
        return 0

    return _run_async(go)


def generate_key(config: HomeServerConfig) -> int:
    """Write a signing key at ``signing_key_path`` unless one is there (first start)."""
    from atrium.crypto.keys import generate_signing_key, write_signing_key_file

    path = config.signing_key_path
    if path.exists():
        print(f"atrium: signing key {path} exists, kept")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    write_signing_key_file(path, [generate_signing_key()])
    print(f"atrium: wrote signing key {path}")
    return 0
