"""The `atrium` command line: run, generate-config, register-user, worker..."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="atrium", description="Atrium Matrix homeserver")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the homeserver")
    args = parser.parse_args(argv)
    if args.command == "run":
        from atrium.events.room_versions import KNOWN_ROOM_VERSIONS

        print(f"atrium: core loaded, room versions {', '.join(KNOWN_ROOM_VERSIONS)}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
