"""Module paths of earlier releases, kept working for one release.

Before the stage sub-packages, each part of the toolkit was a module at the top of the package
(``tf_groupsparse.proximal``, ``tf_groupsparse.shrinking``, ...). Importing one of those names
still works: it gives a stand-in module that forwards every attribute to the new module and
warns once with a DeprecationWarning naming the new path. ``tgs.regularizers`` and
``tgs.callbacks`` are not deprecated: they are the stage's Keras-style namespaces.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings

#: old module path (under tf_groupsparse) -> new module path
MOVED = {
    "groups": "tf_groupsparse.penalties.groups",
    "proximal": "tf_groupsparse.penalties",
    "regularize": "tf_groupsparse.penalties.attach",
    "shrinking": "tf_groupsparse.pruning.shrink",
    "sparsity": "tf_groupsparse.pruning.sparsity",
    "surgery": "tf_groupsparse.graph.surgery",
    "planting": "tf_groupsparse.pruning.planting",
    "distillation": "tf_groupsparse.pruning.distillation",
    "structure_learning": "tf_groupsparse.pruning.structure",
    "export": "tf_groupsparse.deploy",
}
#: Keras-style namespaces: other names of stage modules, without a warning.
NAMESPACES = {
    "regularizers": "tf_groupsparse.penalties",
    "callbacks": "tf_groupsparse.penalties.callbacks",
}


class _Moved(types.ModuleType):
    """A stand-in for a moved module: forwards attributes to the new one, warning once."""

    def __init__(self, old, new):
        super().__init__(f"tf_groupsparse.{old}")
        self.__dict__["_new"] = new
        self.__dict__["_warned"] = False
        self.__doc__ = f"Moved to {new}; this name works for one release."

    def _target(self):
        if not self.__dict__["_warned"]:
            self.__dict__["_warned"] = True
            warnings.warn(
                f"{self.__name__} is deprecated; import from {self.__dict__['_new']} instead "
                "(or use the tgs.<name> shortcut).", DeprecationWarning, stacklevel=3,
            )
        return importlib.import_module(self.__dict__["_new"])

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return getattr(self._target(), name)

    def __dir__(self):
        return dir(importlib.import_module(self.__dict__["_new"]))


def install(package):
    """Register the stand-ins and namespaces under `package` (the tf_groupsparse module)."""
    for old, new in MOVED.items():
        sys.modules.setdefault(f"{package.__name__}.{old}", _Moved(old, new))
    for old, new in NAMESPACES.items():
        module = importlib.import_module(new)
        sys.modules.setdefault(f"{package.__name__}.{old}", module)
        setattr(package, old, module)


def moved_attribute(name):
    """The stand-in for `tgs.<name>` when `name` is an old module path, else None."""
    if name in MOVED:
        return sys.modules.get(f"tf_groupsparse.{name}")
    return None
