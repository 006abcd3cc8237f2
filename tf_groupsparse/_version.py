"""Version of tf_groupsparse (single source for setup.cfg and the package)."""

__version__ = "0.1.0"
