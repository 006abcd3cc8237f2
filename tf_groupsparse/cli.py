"""The ``tf-groupsparse`` command.

Each sub-command is a function ``(args) -> int`` registered in ``COMMANDS`` together with a
function that adds its arguments. Errors the user can fix exit with status 2 and one line on
stderr; nothing else in the package prints.

Example:
    $ tf-groupsparse demo --output saved_models/demo
"""

from __future__ import annotations

import argparse
import logging
import sys


def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", default="saved_models/demo", help="directory to write (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the demo's own)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")


def _run_demo(args) -> int:
    from .demo import run_demo

    kwargs = {"output": args.output, "seed": args.seed, "overwrite": args.overwrite, "verbose": 1}
    if args.epochs is not None:
        kwargs["epochs"] = args.epochs
    result = run_demo(**kwargs)
    print(result)
    return 0


# name -> (help, add_arguments, run)
COMMANDS = {
    "demo": ("train the digits CNN with a hierarchical group sparse regularizer and save it", _add_demo, _run_demo),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tf-groupsparse",
        description="Group sparsity, grouping, shrinking and export for Keras 3 models.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(_run=run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args._run(args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as exc:
        print(f"tf-groupsparse {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
