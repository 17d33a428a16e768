"""Where bytes live: one way to open a local, file://, s3:// or memory:// URI, and the lease that keeps two runs off one output."""
