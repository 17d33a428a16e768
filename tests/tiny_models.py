"""Tiny Hugging Face models and tokenizers built offline, for tests.

The real loading code takes a Hugging Face id, a local directory or an S3 path; tests hand it
directories written here, so nothing is downloaded. (In transformers 5, `BertTokenizer(vocab_file=...)`
silently ignores the file, so tokenizers are saved and reloaded with `from_pretrained`.)
"""

from __future__ import annotations

from pathlib import Path

_CORPUS = [
    "love sunshine dance happy joy bright alive party shine smile",
    "rage fight scream burn hate war anger blood break fire",
    "tears alone cry lost grey cold empty sorrow goodbye rain",
    "calm gentle breeze quiet peace soft dream slow warm home",
    "the a and i you we in on of to my your is it be",
] * 20


def tiny_tokenizer_dir(root: str | Path) -> str:
    """A WordPiece (BERT-style, uncased) tokenizer trained on a few words, saved in HF layout."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    out = Path(root) / "tiny_tokenizer"
    if (out / "tokenizer.json").exists():
        return str(out)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train_from_iterator(_CORPUS, trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=512,
    )
    fast.save_pretrained(out)
    return str(out)


def tiny_bert_dir(root: str | Path, hidden_size: int = 32) -> str:
    """A 2-layer BERT with random weights and the tiny tokenizer, in one HF directory."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = Path(root) / f"tiny_bert_{hidden_size}"
    if (out / "config.json").exists():
        return str(out)
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir(root))
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=hidden_size * 2, max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def tiny_albert_dir(root: str | Path, hidden_size: int = 32) -> str:
    """A 2-layer ALBERT with random weights (sharing the tiny WordPiece tokenizer)."""
    from transformers import AlbertConfig, AlbertModel, AutoTokenizer

    out = Path(root) / f"tiny_albert_{hidden_size}"
    if (out / "config.json").exists():
        return str(out)
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir(root))
    config = AlbertConfig(
        vocab_size=len(tokenizer), embedding_size=16, hidden_size=hidden_size, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=hidden_size * 2, max_position_embeddings=512,
    )
    AlbertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)
