"""Spatial graph builders (radius, kNN) and graph models (VGAE with GCN / GAT / SAGE layers)."""
