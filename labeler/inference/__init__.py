"""Inference on featurised batches: the Predictor, its output as label rows, and mood timelines over whole tracks."""
