"""Lyrics decoding, cleaning and tokenisation: inline cases, real MoodyLyrics4Q / PMEmo lyrics, bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from labeler.io import storage
from labeler.lyrics.text import (
    MAX_CHARS,
    LyricsConfig,
    LyricsError,
    LyricsTokenizer,
    clean_lyrics,
    decode_lyrics,
    tokenize,
    window_starts,
)
from tiny_models import tiny_tokenizer_dir


@pytest.fixture(scope="module")
def tiny_tok(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir(tmp_path_factory.mktemp("tok")))


# --- cleaning ------------------------------------------------------------------------------------


def test_clean_lrc_time_and_metadata_tags():
    lrc = (
        "[ar:Some Artist]\n[ti:Some Song]\n[by:someone]\n[offset:+250]\n[length: 03:21]\n"
        "[00:12.00][01:30.50]Hello   there\tworld\n[00:15]<00:15.20>Goodbye <00:16.00>now\n[02:01.123]\n"
    )
    assert clean_lyrics(lrc) == "Hello there world\nGoodbye now"


def test_clean_section_tags_keep_parentheses_drop_repeat_marks():
    text = "[Verse 1]\nI walk alone (alone)\n\n[Pre-Chorus: Some Artist]\nShine on  me (x2)\n[Chorus]\nLa la la x2\n[?] lost"
    assert clean_lyrics(text) == "I walk alone (alone)\nShine on me\nLa la la\nlost"


def test_clean_genius_header_and_footer():
    page = "Almost Lyrics[Verse 1]\nI almost got drunk\n\n[Chorus]\nAnd I almost had you\nYou might also like[Outro]\nWish you loved me too5Embed"
    assert clean_lyrics(page) == "I almost got drunk\nAnd I almost had you\nWish you loved me too"
    # header glued straight to the first line, translations list before the title, footer variants
    assert clean_lyrics("Noah LyricsNot everyone can relate\nto whatYou might also likeEmbed") == "Not everyone can relate\nto what"
    assert clean_lyrics("TranslationsEspañolPortuguêsTeeth Lyrics[Intro]\nBite\u2005down1.2KEmbed") == "Bite down"
    assert clean_lyrics("Tone Poem Lyrics!In the sanctuary\nlight\u200b") == "!In the sanctuary\nlight"


def test_clean_keeps_ordinary_lines_mentioning_lyrics():
    text = "I wrote these lyrics for you\nLyrics on the wall\nthe word embedded"
    assert clean_lyrics(text) == text


@pytest.mark.parametrize("empty", [None, "", "   \n\t \r\n", "[Instrumental]", "[00:01.00]\n[ar:Nobody]"])
def test_clean_empty_gives_empty_string(empty):
    assert clean_lyrics(empty) == ""


@pytest.mark.realdata
def test_clean_real_moodylyrics4q_genius_pages(shared_data: Path):
    files = sorted((shared_data / "moodylyrics4q" / "lyrics").glob("*.json"))
    assert len(files) > 1000
    pages = {f.name: json.loads(f.read_text(encoding="utf-8"))["song"] for f in files}
    almost = clean_lyrics(pages["ML1000_Bowling For Soup_Almost.json"]["lyrics"])
    assert almost.split("\n")[0] == "I almost got drunk at school at 14"
    assert almost.split("\n")[-1] == "Wish you would've loved me too"
    assert "(And I almost had you)" in almost.split("\n")
    non_empty = 0
    for name, song in pages.items():
        raw, cleaned = song.get("lyrics") or "", clean_lyrics(song.get("lyrics"))
        non_empty += bool(cleaned)
        lines = cleaned.split("\n")
        assert not cleaned.endswith("Embed"), name
        assert "You might also like" not in cleaned, name
        assert " Lyrics" not in lines[0], name  # the Genius "<Title> Lyrics" header is gone
        assert all(line and line == line.strip() and "  " not in line for line in lines if cleaned), name
        assert len(cleaned) < len(raw) or not raw, name
    assert non_empty >= len(pages) - 2  # the slice holds one page with empty lyrics


@pytest.mark.realdata
def test_clean_real_pmemo_lyrics_and_their_lrc_form(shared_data: Path):
    files = sorted((shared_data / "pmemo" / "lyrics").glob("*.lrc"))
    assert files
    for f in files:
        text = f.read_text(encoding="utf-8")
        cleaned = clean_lyrics(text)
        expected = [line.strip() for line in text.splitlines() if line.strip()]
        assert cleaned.split("\n") == [" ".join(line.split()) for line in expected]
        # the real dataset's .lrc files carry time tags: the same words must come out
        timed = "[ti:x]\n" + "\n".join(f"[{i // 60:02d}:{i % 60:02d}.{i % 100:02d}]{line}" for i, line in enumerate(text.splitlines()))
        assert clean_lyrics(timed) == cleaned


# --- decoding ------------------------------------------------------------------------------------


def test_decode_text_and_legacy_encodings():
    assert decode_lyrics("café") == "café"
    assert decode_lyrics(None) is None
    assert decode_lyrics(float("nan")) is None
    assert decode_lyrics("café coração".encode("latin-1")) == "café coração"
    assert decode_lyrics("“smart” quotes – café".encode("cp1252")) == "“smart” quotes – café"
    assert decode_lyrics("\ufeffcoração".encode("utf-8")) == "coração"
    assert decode_lyrics("coração".encode("utf-16")) == "coração"


def test_decode_binary_is_bad_lyrics():
    rng = random.Random(7)
    noise = bytes(rng.randrange(256) for _ in range(2000))
    with pytest.raises(LyricsError, match=r"^bad_lyrics: "):
        decode_lyrics(noise)
    no_nul = bytes(b for b in noise if b)  # control characters alone also give it away
    with pytest.raises(LyricsError, match="control characters"):
        decode_lyrics(no_nul)
    with pytest.raises(LyricsError, match="int"):
        decode_lyrics(42)


# --- config and tokenisation ---------------------------------------------------------------------


def test_config_round_trip_and_validation():
    cfg = LyricsConfig(max_tokens=512, long_policy="head")
    assert LyricsConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="'middle'"):
        LyricsConfig(long_policy="middle")
    with pytest.raises(ValueError, match="max_tokens"):
        LyricsConfig(max_tokens=2)
    with pytest.raises(ValueError, match="bogus"):
        LyricsConfig.from_dict({"max_tokens": 64, "bogus": 1})


def test_tokenize_masks_and_fixed_padding(tiny_tok):
    texts = ["love sunshine dance", "tears alone cry lost grey cold", ""]
    ids, mask = tokenize(tiny_tok, texts, LyricsConfig(max_tokens=32))
    assert ids.shape == mask.shape == (3, 32)
    assert ids.dtype == np.int32 and mask.dtype == np.int8
    for row, text in enumerate(texts):
        n = len(tiny_tok(text)["input_ids"])  # with [CLS] and [SEP]
        assert mask[row].sum() == n and mask[row, :n].all()
        assert ids[row, :n].tolist() == tiny_tok(text)["input_ids"]
        assert (ids[row, n:] == tiny_tok.pad_token_id).all()
    assert ids[2, :2].tolist() == [tiny_tok.cls_token_id, tiny_tok.sep_token_id]


def test_tokenize_rejects_window_beyond_model(tiny_tok):
    with pytest.raises(ValueError, match="1024"):
        tokenize(tiny_tok, ["love"], LyricsConfig(max_tokens=1024))


class _TokenizerSpy:
    """A tokenizer that records the length of every text it is asked to encode."""

    def __init__(self, tokenizer):
        self._tokenizer, self.lengths = tokenizer, []

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)

    def __call__(self, texts, **kwargs):
        self.lengths += [len(t) for t in texts]
        return self._tokenizer(texts, **kwargs)


def test_long_lyrics_head_tail_and_head_are_cheap(tiny_tok):
    head_words, tail_words = "love sunshine dance happy", "calm gentle breeze quiet"
    filler = " rain" * ((200_000 - 60) // 5)
    text = head_words + filler + " " + tail_words
    assert len(text) >= 199_900
    spy = _TokenizerSpy(tiny_tok)
    ids, mask = tokenize(spy, [text, "love"], LyricsConfig(max_tokens=64, long_policy="head_tail"))
    assert max(spy.lengths) <= MAX_CHARS + 1  # cheap: the tokenizer never sees more than the character cap
    assert ids.shape == (2, 64) and mask[0].all() and mask[1].sum() == 3
    head = tiny_tok(head_words, add_special_tokens=False)["input_ids"]
    tail = tiny_tok(tail_words, add_special_tokens=False)["input_ids"]
    row = ids[0].tolist()
    assert row[0] == tiny_tok.cls_token_id and row[-1] == tiny_tok.sep_token_id
    assert row[1:1 + len(head)] == head and row[-1 - len(tail):-1] == tail
    ids_h, mask_h = tokenize(tiny_tok, [text], LyricsConfig(max_tokens=64, long_policy="head"))
    assert mask_h[0].all() and ids_h[0, 1:1 + len(head)].tolist() == head
    assert not set(tail) & set(ids_h[0].tolist())  # the ending is gone under "head"


def test_window_starts_cover_the_lyric_and_cap_evenly():
    assert window_starts(10, 30, 4, 8) == [0]
    assert window_starts(30, 30, 4, 8) == [0]
    starts = window_starts(100, 30, 4, 8)
    assert starts == [0, 26, 52, 78]  # the last window, [78:100], reaches the lyric's end
    assert window_starts(31, 30, 4, 8) == [0, 26]
    capped = window_starts(10_000, 30, 4, 8)
    assert len(capped) == 8 and capped[0] == 0 and capped[-1] == 9984 and capped[-1] + 30 >= 10_000
    assert capped == sorted(capped)
    with pytest.raises(ValueError, match="max_windows"):
        LyricsConfig(max_windows=0)
    with pytest.raises(ValueError, match="window_overlap"):
        LyricsConfig(max_tokens=32, max_windows=4, window_overlap=20)


def test_tokenize_whole_lyric_windows(tiny_tok):
    words = ("love sunshine dance happy joy bright alive party shine smile " * 6).split()
    content = tiny_tok(" ".join(words), add_special_tokens=False)["input_ids"]
    cfg = LyricsConfig(max_tokens=16, max_windows=4, window_overlap=2)
    ids, mask = tokenize(tiny_tok, [" ".join(words), "love", ""], cfg)
    assert ids.shape == mask.shape == (3, 64)
    windows, wmask = ids.reshape(3, 4, 16), mask.reshape(3, 4, 16)
    starts = window_starts(len(content), 14, 2, 4)
    assert wmask[0].any(axis=1).sum() == len(starts) == 4
    for w, start in enumerate(starts):
        row = windows[0, w][wmask[0, w] == 1].tolist()
        assert row == [tiny_tok.cls_token_id] + content[start:start + 14] + [tiny_tok.sep_token_id]
    assert wmask[1].any(axis=1).tolist() == [True, False, False, False] and wmask[1, 0].sum() == 3
    assert wmask[2, 0, :2].all() and wmask[2].sum() == 2  # "" is [CLS] [SEP] in the first window
    assert LyricsConfig.from_dict(cfg.to_dict()) == cfg
    assert LyricsConfig.from_dict({"max_tokens": 64}).max_windows == 1  # bundles written before windows


# --- the Ray Data callable -----------------------------------------------------------------------


def _batch():
    rng = random.Random(3)
    lyrics = np.array(
        [
            "[Chorus]\nlove sunshine dance",
            None,
            "",
            "   \n ",
            "[Instrumental]",
            "café coração tears".encode("latin-1"),
            bytes(rng.randrange(256) for _ in range(500)),
            float("nan"),
        ],
        dtype=object,
    )
    return {"song_id": np.array([f"s{i}" for i in range(len(lyrics))], dtype=object), "lyrics": lyrics}


def test_lyrics_tokenizer_good_and_bad_rows(tiny_tok):
    out = LyricsTokenizer(tiny_tok, {"max_tokens": 16})(_batch())
    assert out["song_id"].tolist() == [f"s{i}" for i in range(8)]
    assert out["input_ids"].shape == out["attention_mask"].shape == (8, 16)
    assert out["has_lyrics"].tolist() == [True, False, False, False, False, True, False, False]
    errors = out["lyrics_error"].tolist()
    assert errors[0] is None and errors[5] is None
    assert errors[1] == errors[7] == "no_lyrics: null"
    assert errors[2] == errors[3] == errors[4] == "no_lyrics: empty"
    assert errors[6].startswith("bad_lyrics: ")
    texts = out["lyrics_text"].tolist()  # the lexical model's input: cleaned text, "" where unusable
    assert texts[0] and texts[0] == clean_lyrics(_batch()["lyrics"][0]) and texts[1:5] == ["", "", "", ""]
    expected = tiny_tok("love sunshine dance")["input_ids"]
    assert out["input_ids"][0, :len(expected)].tolist() == expected
    assert out["attention_mask"][1].sum() == 2  # [CLS] [SEP]: never an all-padding row


def test_lyrics_tokenizer_from_s3(tmp_path, s3_bucket, monkeypatch):
    from transformers import AutoTokenizer

    local = Path(tiny_tokenizer_dir(tmp_path))
    for f in local.iterdir():
        storage.write_bytes(f"{s3_bucket}/tokenizers/tiny/{f.name}", f.read_bytes())
    monkeypatch.setenv("MOOD_LABELER_CACHE", str(tmp_path / "cache"))
    from_s3 = LyricsTokenizer(f"{s3_bucket}/tokenizers/tiny", LyricsConfig(max_tokens=16))
    assert str(tmp_path / "cache") in from_s3.tokenizer.name_or_path
    batch = _batch()
    got = from_s3(batch)
    want = LyricsTokenizer(AutoTokenizer.from_pretrained(local), LyricsConfig(max_tokens=16))(batch)
    np.testing.assert_array_equal(got["input_ids"], want["input_ids"])
    np.testing.assert_array_equal(got["attention_mask"], want["attention_mask"])


def test_lyrics_tokenizer_in_ray_data(ray_local, tmp_path):
    tok_dir = tiny_tokenizer_dir(tmp_path)
    rows = [{"song_id": "a", "lyrics": "Song Lyrics[Verse]\nlove dance"}, {"song_id": "b", "lyrics": None},
            {"song_id": "c", "lyrics": "love dance " * 10_000}]
    ds = ray_local.data.from_items(rows).map_batches(
        LyricsTokenizer, fn_constructor_kwargs={"tokenizer": tok_dir, "config": {"max_tokens": 24}},
        batch_format="numpy", batch_size=2, concurrency=1,
    )
    out = sorted(ds.take_all(), key=lambda r: r["song_id"])
    assert [r["has_lyrics"] for r in out] == [True, False, True]
    assert [r["lyrics_error"] for r in out] == [None, "no_lyrics: null", None]
    assert all(len(r["input_ids"]) == 24 for r in out) and out[2]["attention_mask"].all()


def test_no_lyrics_column_is_a_clear_error(tiny_tok):
    with pytest.raises(ValueError, match="'lyrics'"):
        LyricsTokenizer(tiny_tok)({"song_id": np.array(["a"], dtype=object)})
