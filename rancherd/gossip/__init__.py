"""Discovery and election engine: a sans-IO core plus its trio driver."""
