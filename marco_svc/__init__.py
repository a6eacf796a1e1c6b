"""marco-svc: scores crystallization-drop images as imagers produce them."""

__version__ = "0.1.0"
