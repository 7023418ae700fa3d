"""Fusion components: cross-modal attention (StereoMM, trained and memory-efficient) and weighted concatenation."""
