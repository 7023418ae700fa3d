"""Example stmm image-encoder plug-in (see README.md)."""
