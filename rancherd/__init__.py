"""rancherd: decide, without anyone choosing, which node of a fleet creates the cluster."""

__version__ = "0.1.0"
