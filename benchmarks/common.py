"""What every benchmark records beside its figures: the command, versions and the machine."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict:
    """Versions and machine facts that make a figure reproducible."""
    import keras
    import numpy
    import sklearn
    import tensorflow as tf

    try:
        from importlib.metadata import version

        litert = version("ai-edge-litert")
    except Exception:  # pragma: no cover - only when LiteRT is missing
        litert = "not installed"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
        "ai-edge-litert": litert,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
    }


def command() -> str:
    """The command line that produced the results, as a user would type it."""
    return "python -m benchmarks." + Path(sys.argv[0]).stem + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")


def write_results(name: str, payload: dict, markdown: str) -> tuple[Path, Path]:
    """Write results/<name>.json and results/<name>.md (the markdown gets the command and machine)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = environment()
    payload = {"command": command(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "environment": env, **payload}
    json_path = RESULTS / f"{name}.json"
    json_path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    md = [markdown.rstrip(), "", f"Command: `{payload['command']}`  ", f"Date: {payload['date']}  ",
          "Machine: " + ", ".join(f"{k} {v}" for k, v in env.items())]
    md_path = RESULTS / f"{name}.md"
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")
    return json_path, md_path


def plain_copy(model):
    """The same architecture and weights without regularizers or constraints (for plain
    fine-tuning and for loss evaluation without the penalty)."""
    import keras

    def clone_fn(layer):
        config = layer.get_config()
        for key in list(config):
            if key.endswith("_regularizer") or key.endswith("_constraint"):
                config[key] = None
        return layer.__class__.from_config(config)

    new = keras.models.clone_model(model, clone_function=clone_fn)
    new.set_weights(model.get_weights())
    return new
