"""Retrieval: caption loaders, the GAIS heads, losses, metrics, training and evaluation."""
