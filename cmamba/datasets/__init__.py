"""Training datasets over feature shards (not built yet; see issue #5)."""
