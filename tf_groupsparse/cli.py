"""The ``tf-groupsparse`` command.

Each sub-command is a function ``(args) -> int`` registered in ``COMMANDS`` together with a
function that adds its arguments. Errors the user can fix exit with status 2 and one line on
stderr; nothing else in the package prints.

Examples:
    $ tf-groupsparse demo --output saved_models/demo
    $ tf-groupsparse report saved_models/demo/model.keras --threshold 1e-3
    $ tf-groupsparse shrink model.keras --threshold 1e-3 -o small.keras
    $ tf-groupsparse prune model.keras --data data.npz --macs 0.5 -o half.keras
    $ tf-groupsparse export small.keras -o saved_models/small --quantize int8 \\
          --representative-data x_train.npy --sample x_test.npy

Models are always loaded with ``keras.models.load_model(path, safe_mode=True)``; a model that
needs unsafe deserialization (a ``Lambda`` layer holding Python code) is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import tempfile


def is_command(argv):
    """Whether this process is the ``tf-groupsparse`` command (or ``python -m tf_groupsparse.cli``)."""
    first = (argv or [""])[0] or ""
    return os.path.basename(first) == "tf-groupsparse" or first.endswith(os.path.join("tf_groupsparse", "cli.py"))


def quiet_startup(argv):
    """Load TensorFlow without its C++ start-up messages (CUDA probing, CPU features), unless
    the user set TF_CPP_MIN_LOG_LEVEL or passed -v/--verbose. Called by the package's
    ``__init__`` before anything imports TensorFlow, only in the command's own process."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or {"-v", "--verbose"} & set(argv[1:]):
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    with contextlib.suppress(OSError), _stderr_to_devnull():
        import tensorflow  # noqa: F401  (its messages go to file descriptor 2 directly)


@contextlib.contextmanager
def _stderr_to_devnull():
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", default="saved_models/demo", help="directory to write (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the demo's own)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace the previous output of the demo")


def _run_demo(args) -> int:
    from .demo import run_demo

    kwargs = {"output": args.output, "seed": args.seed, "overwrite": args.overwrite, "verbose": 1}
    if args.epochs is not None:
        kwargs["epochs"] = args.epochs
    result = run_demo(**kwargs)
    print(result)
    return 0


# --------------------------------------------------------------------------- shared helpers

# Modules whose Keras objects (regularizers, constraints, layers) must be registered before a
# model that uses them can be loaded with safe_mode=True.
_SERIALIZABLE_MODULES = ("penalties", "layers", "grouping", "pruning")


def _register_project_objects() -> None:
    for name in _SERIALIZABLE_MODULES:
        module = f"{__package__}.{name}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the module exists but something it needs is missing
                raise
            logging.getLogger(__name__).debug("no module %s in this installation", module)


def _load_model(path):
    """Load a .keras file with safe_mode=True; refuse models that need unsafe deserialization."""
    import keras

    if not os.path.isfile(path):
        raise FileNotFoundError(f"Expected an existing .keras model file. Received: MODEL={path!r}")
    if not path.endswith(".keras"):
        raise ValueError(
            f"Expected a Keras 3 model file ending in .keras (save it with model.save('m.keras')). "
            f"Received: MODEL={path!r}"
        )
    _register_project_objects()
    try:
        return keras.models.load_model(path, safe_mode=True)
    except ValueError as exc:
        if "safe_mode" not in str(exc):
            raise
        raise ValueError(
            f"refused to load {path!r}: it needs unsafe deserialization (a Lambda layer or other "
            "Python code that would run while loading), and tf-groupsparse loads models with "
            "safe_mode=True only. Replace the Lambda layer with a registered custom layer and "
            f"save the model again. Keras said: {exc}"
        ) from None


def _load_array(path, option):
    import numpy as np

    if not os.path.isfile(path):
        raise FileNotFoundError(f"Expected an existing .npy file. Received: {option}={path!r}")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"Expected a NumPy .npy array file. Received: {option}={path!r} ({exc})") from None


def _check_output_file(out, overwrite, model_path=None):
    from .deploy.files import check_output_file

    check_output_file(out, overwrite, None, protect=(model_path,), name="-o")


def _save_model(model, out, overwrite, model_path=None):
    """Save to `out` through a temporary file and os.replace, so a failure leaves no file."""
    _check_output_file(out, overwrite, model_path)
    directory = os.path.dirname(os.path.abspath(out))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".keras", dir=directory)
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _show(report, markdown):
    return f"## {report.title}\n\n{report.to_markdown()}" if markdown else str(report)


# --------------------------------------------------------------------------- report


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.keras", help="the model to describe")
    p.add_argument("--threshold", type=float, default=1e-3,
                   help="a weight counts as zero when |w| < threshold (default: %(default)s)")
    p.add_argument("--markdown", action="store_true", help="print markdown tables instead of text")


def _run_report(args) -> int:
    from .metrics import layer_costs
    from .pruning.sparsity import sparsity_report

    model = _load_model(args.model)
    reports = [layer_costs(model), sparsity_report(model, threshold=args.threshold)]
    print("\n\n".join(_show(r, args.markdown) for r in reports))
    return 0


# --------------------------------------------------------------------------- shrink


def _add_shrink(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.keras", help="the trained group-sparse model")
    p.add_argument("--threshold", type=float, required=True,
                   help="a channel is removed when its group norm is below this value")
    p.add_argument("-o", "--output", required=True, metavar="OUT.keras", help="where to save the smaller model")
    p.add_argument("--norm", "--criterion", dest="norm", choices=("l2", "l1"), default="l2",
                   help="group norm compared with the threshold (default: %(default)s)")
    p.add_argument("--keep-min", type=int, default=1, help="channels kept at least per layer (default: %(default)s)")
    p.add_argument("--round-to", "--channel-multiple", dest="round_to", type=int, default=None, metavar="N",
                   help="keep a multiple of N channels per Dense/Conv layer, for CPU kernels that tile "
                        "channels; measure the latency both ways (default: no rounding)")
    p.add_argument("--unsupported", choices=("error", "freeze"), default="error",
                   help="layers without a graph handler: fail, or keep their channels (default: %(default)s)")
    p.add_argument("--constants", choices=("fold", "keep", "error"), default="fold",
                   help="channels that carry a nonzero constant: fold it into the consumers' biases, "
                        "keep them, or fail (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def _run_shrink(args) -> int:
    from .pruning.shrink import shrink

    _check_output_file(args.output, args.overwrite, args.model)
    model = _load_model(args.model)
    small, report = shrink(model, args.threshold, norm=args.norm, keep_min=args.keep_min,
                           round_to=args.round_to, unsupported=args.unsupported,
                           constants=args.constants, return_report=True)
    _save_model(small, args.output, args.overwrite, args.model)
    print(report)
    print(f"saved {args.output}")
    return 0


# --------------------------------------------------------------------------- export


def _add_export(p: argparse.ArgumentParser) -> None:
    from .deploy import FORMATS, QUANTIZE_MODES, TARGETS

    p.add_argument("model", metavar="MODEL.keras", help="the model to export")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to create")
    p.add_argument("--quantize", choices=[q for q in QUANTIZE_MODES if q], default=None,
                   help="TFLite quantization (default: float32)")
    p.add_argument("--representative-data", metavar="NPY", help="calibration inputs (.npy), required for int8")
    p.add_argument("--sample", metavar="NPY", help="inputs (.npy) to verify the exported files on")
    p.add_argument("--reference", metavar="REF.keras", help="unshrunk model to compare outputs and latency with")
    p.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS),
                   help="what to write (default: %(default)s)")
    p.add_argument("--target", choices=TARGETS, default="xnnpack",
                   help="form of grouped layers (default: %(default)s)")
    p.add_argument("--latency-runs", type=int, default=50, help="timed LiteRT calls (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a previous export at -o (never the input model or a foreign directory)")


def _run_export(args) -> int:
    from .deploy import export

    from .deploy.exporter import WRITTEN_BY
    from .deploy.files import check_output_dir

    inputs = (args.model, args.reference, args.representative_data, args.sample)
    check_output_dir(args.output, args.overwrite, WRITTEN_BY, None, protect=inputs, name="-o")
    model = _load_model(args.model)
    reference = _load_model(args.reference) if args.reference else None
    representative = (
        _load_array(args.representative_data, "--representative-data") if args.representative_data else None
    )
    sample = _load_array(args.sample, "--sample") if args.sample else None
    report = export(model, args.output, formats=tuple(args.formats), quantize=args.quantize,
                    representative_data=representative, sample=sample, reference=reference,
                    target=args.target, overwrite=args.overwrite, latency_runs=args.latency_runs,
                    verbose=1 if args.verbose else 0)
    print(report)
    return 0


# --------------------------------------------------------------------------- prune


def _add_prune(p: argparse.ArgumentParser) -> None:
    from .pruning.budget import RANKINGS
    from .pruning.importance import NAMES

    p.add_argument("model", metavar="MODEL.keras", help="the trained model to prune")
    p.add_argument("-o", "--output", required=True, metavar="OUT.keras", help="where to save the pruned model")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--macs", type=float, help="fraction of the multiply-adds to keep, e.g. 0.5")
    target.add_argument("--params", type=float, help="fraction of the parameters to keep")
    target.add_argument("--latency", type=float, help="fraction of the LiteRT latency to keep")
    p.add_argument("--data", metavar="DATA.npz", help="an .npz file with arrays x and y (importance by loss, "
                   "the untrained-model check, the loss figures); required by --importance taylor/loss")
    p.add_argument("--importance", choices=tuple(NAMES), default="l2", help="how groups are ranked (default: %(default)s)")
    p.add_argument("--steps", type=int, default=1, help="prune in this many steps (default: %(default)s)")
    p.add_argument("--round-to", type=int, default=None, metavar="N", help="keep widths at multiples of N")
    p.add_argument("--max-fraction", type=float, default=0.9,
                   help="largest fraction of a layer's channels to remove (default: %(default)s)")
    p.add_argument("--ranking", choices=RANKINGS, default="global",
                   help="rank channel groups across the model, or remove the same share of every layer "
                   "(default: %(default)s)")
    p.add_argument("--samples", type=int, default=512, help="samples drawn from --data (default: %(default)s)")
    p.add_argument("--allow-untrained", action="store_true", help="prune even if the model looks untrained")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def _load_npz(path):
    import numpy as np

    if not os.path.isfile(path):
        raise FileNotFoundError(f"Expected an existing .npz file with arrays x and y. Received: --data={path!r}")
    with np.load(path, allow_pickle=False) as data:
        missing = {"x", "y"} - set(data.files)
        if missing:
            raise ValueError(f"Expected --data to hold arrays named x and y. Received: {path!r} with {sorted(data.files)}")
        return data["x"], data["y"]


def _run_prune(args) -> int:
    from .pruning.budget import prune

    _check_output_file(args.output, args.overwrite, args.model)
    data = _load_npz(args.data) if args.data else None
    model = _load_model(args.model)
    target = {k: getattr(args, k) for k in ("macs", "params", "latency") if getattr(args, k) is not None}
    small, report = prune(model, data, importance=args.importance, steps=args.steps, round_to=args.round_to,
                          max_fraction=args.max_fraction, ranking=args.ranking, samples=args.samples,
                          allow_untrained=args.allow_untrained, verbose=1 if args.verbose else 0, **target)
    _save_model(small, args.output, args.overwrite, args.model)
    print(report)
    print(f"saved {args.output}")
    return 0


# name -> (help, add_arguments, run)
COMMANDS = {
    "demo": ("train the digits CNN with a hierarchical group sparse regularizer and save it", _add_demo, _run_demo),
    "report": ("print per-layer parameters, multiply-adds and group sparsity of a .keras model", _add_report, _run_report),
    "shrink": ("remove zero channels of a .keras model and save the smaller model", _add_shrink, _run_shrink),
    "prune": ("prune a .keras model to a fraction of its MACs, parameters or latency", _add_prune, _run_prune),
    "export": ("write SavedModel + .tflite, verify them in LiteRT and time them", _add_export, _run_export),
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
    except (ValueError, TypeError, OSError) as exc:  # OSError covers FileNotFound/FileExists
        message = " ".join(str(exc).split())  # one line
        print(f"tf-groupsparse {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
