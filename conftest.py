"""Root conftest: plugins that must see the notebook items nbval collects under notebooks/."""

pytest_plugins = ["tests.nbrecord"]
