"""The field's own spatial-domain packages (GraphST, BANKSY) as benchmark pipelines beside stmm's recipes.

Optional: ``pip install .[peers]`` installs the pinned packages. The recipes are always listed; running one
without its package stops with one message naming that command.
"""
