"""Deployable bundles: manifest, hashes and digest, model card; verification, safe unpacking and
Ed25519 signatures."""
