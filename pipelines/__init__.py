"""Beam wiring: the build, similarity and stats pipelines; audio decode/encode; shard writing."""
