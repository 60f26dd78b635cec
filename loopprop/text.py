"""Text for the character-level GPT, offline: a tokenizer whose vocabulary is the corpus's
characters, the default corpus (the ``.py`` sources of Python's own standard library, present on
every Python install) and any UTF-8 file.

    from loopprop.text import CharTokenizer
    tok = CharTokenizer.from_text("hello world")
    ids = tok.encode("hello")          # array([3, 2, 4, 4, 5])
    tok.decode(ids)                    # 'hello'
"""

from __future__ import annotations

import os
import sysconfig
from typing import Any, Iterable

import numpy as np

#: standard-library folders left out of the default corpus: tests (huge, repetitive data),
#: IDLE, installed packages
_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idlelib",
                        "__pycache__"})


class CharTokenizer:
    """One token per character: the vocabulary is the sorted set of characters of a text.

    ``encode`` maps a string to ``int64`` ids, ``decode`` maps ids back; a character outside
    the vocabulary is an error that names it. Saved with a model as ``to_config()`` in
    :attr:`loopprop.Network.metadata` (``loopprop train --model gpt --save`` does it).
    """

    def __init__(self, chars: str) -> None:
        if not isinstance(chars, str) or not chars:
            raise ValueError("chars: expected the vocabulary as a non-empty string of distinct "
                             "characters; build it with CharTokenizer.from_text(text)")
        if len(set(chars)) != len(chars):
            raise ValueError("chars: the vocabulary repeats a character; build it with "
                             "CharTokenizer.from_text(text)")
        self.chars = chars
        self._index = {c: i for i, c in enumerate(chars)}
        self._table = np.array([ord(c) for c in chars], np.int64)

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        """The vocabulary of ``text``: its distinct characters, sorted by code point."""
        if not isinstance(text, str) or not text:
            raise ValueError("text: expected a non-empty string to take the vocabulary from")
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """``text`` as token ids ``(len(text),)`` int64."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected a string, got {type(text).__name__}")
        try:
            return np.fromiter((self._index[c] for c in text), np.int64, len(text))
        except KeyError as exc:
            missing = sorted({c for c in text if c not in self._index})
            shown = ", ".join(repr(c) for c in missing[:10])
            raise ValueError(f"text: {len(missing)} character(s) are not in the vocabulary of "
                             f"{self.vocab_size} characters: {shown}; remove them, or train on "
                             "a text that contains them") from exc

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids back to text."""
        arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
        if arr.size and (arr.dtype.kind not in "iu" or arr.min() < 0
                         or arr.max() >= self.vocab_size):
            raise ValueError(f"ids: expected integers in [0, {self.vocab_size}), got "
                             f"{arr.dtype} values in [{arr.min()}, {arr.max()}]")
        return "".join(self.chars[int(i)] for i in arr.ravel())

    def to_config(self) -> dict[str, Any]:
        """A JSON-ready description (saved with a model)."""
        return {"kind": "char", "chars": self.chars}

    @classmethod
    def from_config(cls, config: Any) -> "CharTokenizer":
        if not (isinstance(config, dict) and config.get("kind") == "char"
                and isinstance(config.get("chars"), str)):
            raise ValueError("the model's metadata holds no character tokenizer: was it trained "
                             "with loopprop train --model gpt?")
        return cls(config["chars"])

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def stdlib_files(root: str | None = None) -> list[str]:
    """The ``.py`` files of Python's standard library (``root``: its folder; default this
    interpreter's), in a fixed order, without tests, IDLE or installed packages."""
    root = root or sysconfig.get_paths()["stdlib"]
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        files.extend(os.path.join(folder, n) for n in sorted(names) if n.endswith(".py"))
    return files


def stdlib_corpus(max_chars: int | None = None) -> str:
    """The default corpus: the standard library's ``.py`` sources (:func:`stdlib_files`)
    joined, each file's text as it is (files that are not UTF-8 are skipped). CPython 3.11 gives
    about 11.4 million characters (222 distinct). ``max_chars`` keeps the first that many."""
    parts, total = [], 0
    for path in stdlib_files():
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except (UnicodeDecodeError, OSError):
            continue
        parts.append(text)
        total += len(text)
        if max_chars is not None and total >= max_chars:
            break
    corpus = "".join(parts)
    if not corpus:
        raise RuntimeError("no .py sources found in the standard library folder "
                           f"{sysconfig.get_paths()['stdlib']}; pass a text file instead")
    return corpus[:max_chars] if max_chars is not None else corpus


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file; a missing, empty or non-UTF-8 file is an error naming the fix."""
    name = os.fspath(path)
    if not os.path.exists(name):
        raise FileNotFoundError(f"{name}: no such text file")
    if os.path.isdir(name):
        raise IsADirectoryError(f"{name}: is a directory; pass a UTF-8 text file")
    try:
        with open(name, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name}: not UTF-8 text (byte {exc.start}: {exc.reason}); convert it, "
                         f"e.g. iconv -f latin1 -t utf-8 {name} > out.txt") from None
    if not text:
        raise ValueError(f"{name}: the file is empty; a language model needs text to learn from")
    return text


def split(ids: np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """``(train, validation)``: the held-out validation part is the corpus's tail."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a fraction in [0, 1), got {val_fraction}")
    cut = len(ids) - int(round(len(ids) * val_fraction))
    return ids[:cut], ids[cut:]


def unigram_entropy(ids: np.ndarray, vocab_size: int) -> float:
    """The entropy (nats per token) of the tokens' frequencies: the loss of the best model that
    ignores context."""
    counts = np.bincount(np.asarray(ids), minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


__all__ = ["CharTokenizer", "read_text", "split", "stdlib_corpus", "stdlib_files",
           "unigram_entropy"]
