"""open_clip's CLIP tokenizer without torch: its vocabulary and merges as an HF `tokenizers` configuration.

open_clip/tokenizer.py imports torch at the top, and importing torch costs more than a whole one-query
process may take. Its `SimpleTokenizer` is byte-level BPE over the merges file open_clip ships, and
`tokenizers` carries all of it as configuration: the BPE (merge by rank, "</w>" marking a word's last symbol,
bytes mapped to the same printable characters as GPT-2's), open_clip's pre-tokenising pattern, its two
special tokens matched whole in the text, the framing (start token, text, end token: a template), the cut
at the context length with the end token kept last (truncation counts the template's two tokens) and the
zero padding.

What stays in Python is open_clip's cleaning ("lower"), four lines: `tokenizers` has no counterpart for
two of its steps and differs on a third (tests/test_onnx_query.py holds each of these facts):
- ftfy.fix_text repairs mojibake ("Ã©tÃ©" -> "été"), ligatures, widths, quotes, control characters and
  terminal escapes, then NFC: no normalizer repairs mojibake, and NFKC (the nearest) also rewrites "½" and "²",
  which ftfy keeps;
- html.unescape, twice: ~2,200 named entities and numeric ones ("&#x1F436;"); a Replace normalizer takes a
  fixed string or pattern, not a computed replacement;
- lower case: Python lowers a final capital sigma to "ς" by its context where `tokenizers`' Lowercase maps
  character by character ("σ"), and the two disagree on 55 characters newer than Python 3.11's Unicode tables;
- whitespace could be a Replace normalizer of the pattern \\s+: it differs from str.split() only on U+001C to
  U+001F, which ftfy has already removed; since ftfy runs first, in Python, it stays there too.
A test holds the ids equal to open_clip's on a varied set of texts.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
from functools import lru_cache
from pathlib import Path

import ftfy
import numpy as np

SPECIALS = ("<start_of_text>", "<end_of_text>")
# open_clip's pre-tokenisation: its special tokens, contractions, letter runs, single digits, other symbol runs
PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
MERGES = 49152 - 256 - 2  # the merges open_clip uses of its file (the vocabulary is 49408)


def bundled_bpe() -> Path:
    """open_clip's merges file, found without importing open_clip (whose package import loads torch)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("open_clip is not installed: its bpe_simple_vocab_16e6.txt.gz is the CLIP vocabulary")
    return Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"


def _byte_alphabet() -> list[str]:
    """The 256 printable characters that stand for bytes, in open_clip's (and GPT-2's) order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(rest))]


def clean(text: str) -> str:
    """open_clip's default cleaning ("lower"): ftfy, HTML unescaped twice, whitespace collapsed, lower case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


class ClipTokenizer:
    """`tokenizer(texts) -> [N, context_length] int64`, as open_clip's SimpleTokenizer returns them."""

    def __init__(self, context_length: int = 77, bpe_file: Path | None = None):
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors

        lines = gzip.open(bpe_file or bundled_bpe()).read().decode("utf-8").split("\n")[1 : MERGES + 1]
        merges = [(first, second) for first, second in (line.split() for line in lines)]
        alphabet = _byte_alphabet()
        vocab = [*alphabet, *(c + "</w>" for c in alphabet), *("".join(m) for m in merges), *SPECIALS]
        ids = {token: i for i, token in enumerate(vocab)}
        self.sot, self.eot = ids[SPECIALS[0]], ids[SPECIALS[1]]
        tokenizer = Tokenizer(models.BPE(vocab=ids, merges=merges, end_of_word_suffix="</w>"))
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(PATTERN), behavior="removed", invert=True),  # keep the matches
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tokenizer.add_special_tokens(list(SPECIALS))  # matched whole in the text, as open_clip's pattern does
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{SPECIALS[0]} $A {SPECIALS[1]}", special_tokens=[(SPECIALS[0], self.sot), (SPECIALS[1], self.eot)]
        )
        tokenizer.enable_truncation(max_length=context_length)  # the template's two tokens count: eot stays last
        tokenizer.enable_padding(length=context_length, pad_id=0, pad_token=alphabet[0])  # open_clip pads with 0
        self.tokenizer = tokenizer
        self.context_length = context_length

    clean = staticmethod(clean)

    def __call__(self, texts: str | list[str]) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return np.zeros((0, self.context_length), dtype=np.int64)
        encoded = self.tokenizer.encode_batch([clean(t) for t in texts])
        return np.array([found.ids for found in encoded], dtype=np.int64)


@lru_cache(maxsize=4)
def clip_tokenizer(context_length: int = 77) -> ClipTokenizer:
    return ClipTokenizer(context_length)
