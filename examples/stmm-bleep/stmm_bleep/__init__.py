"""stmm-bleep: a BLEEP-style image–expression pipeline family for stmm, as a third-party package (see README.md)."""
