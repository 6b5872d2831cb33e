"""The replica store kept at each peer: backends, format, packs, manifests."""
