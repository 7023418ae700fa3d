"""Sections (counts + coordinates + image), readers, lazy images and tiling."""
