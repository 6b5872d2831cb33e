"""SeaweedFS (``weed``), the real S3-compatible server of the integration tier."""
