"""An example third-party stmm plug-in (install with ``pip install -e examples/stmm-plugin-example``)."""
