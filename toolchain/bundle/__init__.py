"""Deployable bundles: manifest, hashes, model card; verification."""
