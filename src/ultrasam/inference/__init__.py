"""Inference layer: what runs a loaded model on images (file prediction, batch jobs, tracking).

Sits above the model and weights layers and below data/train/evaluate; modules here import
only from ``ultrasam.io``, ``ultrasam.modeling``, the weights modules and each other.
"""
