"""Training: dataset adapters, manifest and folds, feature cache, Ray Train loops, evaluation."""
