"""open_clip's CLIP tokenizer without torch: the same vocabulary and merges, run by HF `tokenizers`.

open_clip/tokenizer.py imports torch at the top, and importing torch costs more than a whole one-query
process may take. Its `SimpleTokenizer` is byte-level BPE over the merges file open_clip ships; the
`tokenizers` library runs exactly that BPE (merge by rank, "</w>" marking a word's last symbol, bytes
mapped to the same printable characters as GPT-2's). What stays in Python is open_clip's cleaning
(ftfy, HTML unescaped twice, whitespace collapsed, lower case) and its framing (start token, text, end
token, cut at the context length with the end token kept last). A test holds the ids equal to open_clip's.
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


class ClipTokenizer:
    """`tokenizer(texts) -> [N, context_length] int64`, as open_clip's SimpleTokenizer returns them."""

    def __init__(self, context_length: int = 77, bpe_file: Path | None = None):
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers

        lines = gzip.open(bpe_file or bundled_bpe()).read().decode("utf-8").split("\n")[1 : MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        alphabet = _byte_alphabet()
        vocab = [*alphabet, *(c + "</w>" for c in alphabet), *("".join(m) for m in merges), *SPECIALS]
        ids = {token: i for i, token in enumerate(vocab)}
        bpe = models.BPE(vocab=ids, merges=merges, end_of_word_suffix="</w>")
        self.tokenizer = Tokenizer(bpe)
        self.tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(PATTERN), behavior="removed", invert=True),  # keep the matches
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        self.tokenizer.add_special_tokens(list(SPECIALS))  # matched whole in the text, as open_clip's pattern does
        self.sot, self.eot = ids[SPECIALS[0]], ids[SPECIALS[1]]
        self.context_length = context_length

    @staticmethod
    def clean(text: str) -> str:
        """open_clip's default cleaning ("lower")."""
        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        return " ".join(text.split()).lower()

    def __call__(self, texts: str | list[str]) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        encoded = self.tokenizer.encode_batch([self.clean(t) for t in texts], add_special_tokens=False)
        for row, found in zip(out, encoded):
            tokens = [self.sot, *found.ids, self.eot][: self.context_length]
            tokens[-1] = self.eot
            row[: len(tokens)] = tokens
        return out


@lru_cache(maxsize=4)
def clip_tokenizer(context_length: int = 77) -> ClipTokenizer:
    return ClipTokenizer(context_length)
