"""One module per corpus, each with `prepare_<corpus>(path, ...) -> pyarrow.Table` in the manifest schema."""
