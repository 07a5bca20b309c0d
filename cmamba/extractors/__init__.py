"""Feature extractors for face, voice and words (not built yet; see issue #4)."""
