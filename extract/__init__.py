"""The extract stage's parts: find videos, decode them, encode frames and sound, write shards."""
