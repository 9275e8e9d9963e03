"""Device profiles and (later) latency/memory measurement and prediction."""
