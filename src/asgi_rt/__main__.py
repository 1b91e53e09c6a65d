"""``python -m asgi_rt dashboard`` prints the Grafana dashboard (import it in Grafana)."""

from __future__ import annotations

import argparse
import sys
from importlib.resources import files

__all__ = ["main"]


def dashboard_json() -> str:
    return files("asgi_rt").joinpath("grafana/dashboard.json").read_text(encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asgi_rt")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dashboard", help="print the Grafana dashboard JSON")
    parser.parse_args(argv)
    sys.stdout.write(dashboard_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
