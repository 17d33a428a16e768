"""Lyrics features: decoding, cleaning and tokenising text, the lexical (TF-IDF) model, and the named pretrained text encoders."""
