"""The pretrained musicnn music encoders (Pons & Serra 2019), ported to PyTorch without TensorFlow.

`checkpoint` reads TensorFlow checkpoints with struct and numpy; `wheel` finds the `musicnn==0.1.0`
wheel's checkpoints (unpacked by scripts/setup.sh) and checks their pinned sha256; `model` is the
network and the conversion of its weights. The front end (musicnn's log-mel) is in labeler.audio.
"""
