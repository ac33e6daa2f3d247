"""Indexed search: one embedding per video in FAISS, and a row-addressable store of the heads' inputs."""
