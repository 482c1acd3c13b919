"""Automatic selection of images to annotate (diversity + uncertainty)."""
