"""``python -m asgi_rt dashboard`` prints the Grafana dashboard (import it in Grafana);
``python -m asgi_rt schema`` prints the wire protocol's JSON Schema (see :mod:`asgi_rt.wire`)."""

from __future__ import annotations

import argparse
import sys
from importlib.resources import files

from .wire import protocol_schema_text

__all__ = ["main"]


def dashboard_json() -> str:
    return files("asgi_rt").joinpath("grafana/dashboard.json").read_text(encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asgi_rt")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dashboard", help="print the Grafana dashboard JSON")
    commands.add_parser("schema", help="print the wire protocol's JSON Schema")
    args = parser.parse_args(argv)
    sys.stdout.write(protocol_schema_text() if args.command == "schema" else dashboard_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
