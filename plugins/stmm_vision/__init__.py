"""Image encoders: any timm model (ResNet-50 for StereoMM, ViTs for Magic) as a frozen tile encoder.

Importing this package is cheap; :mod:`stmm_vision.encoders` imports torch and timm.
"""
