"""Training data: dataset adapters -> one manifest row per song, cross-validation folds, and the lexical source corpus."""
