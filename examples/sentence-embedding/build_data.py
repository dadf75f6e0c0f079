"""Token ids for the sentence-embedding example, from text that ships with Python.

The sentences are the standard library's own docstrings (modules, classes, functions), split
into sentences: English prose about programming, no download. They are tokenized with the
teacher's own tokenizer.json through the `tokenizers` package (a dependency of transformers),
padded or truncated to one length, and written as an .npz with one int64 array per input name:
input_ids, attention_mask, token_type_ids.

    python examples/sentence-embedding/build_data.py --model-dir DIR --out data.npz
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import random
import re
import warnings
from pathlib import Path

import numpy as np

# Modules whose docstrings are prose (not tables of constants); all import without side effects.
MODULES = (
    "abc argparse ast asyncio base64 bisect calendar cmd codecs collections colorsys concurrent.futures "
    "configparser contextlib copy csv dataclasses datetime decimal difflib dis doctest email.message "
    "enum filecmp fnmatch fractions ftplib functools getopt gettext glob gzip hashlib heapq hmac "
    "html.parser http.client http.cookiejar http.server imaplib inspect io ipaddress itertools json "
    "locale logging lzma mailbox mimetypes multiprocessing numbers operator optparse os pathlib pdb "
    "pickle pkgutil platform plistlib poplib pprint queue quopri random re sched secrets selectors "
    "shelve shlex shutil smtplib socket socketserver sqlite3 ssl statistics string struct subprocess "
    "tarfile tempfile textwrap threading timeit tokenize trace traceback types typing unittest "
    "urllib.parse urllib.request uuid warnings wave weakref xml.dom.minidom xml.etree.ElementTree "
    "zipfile zoneinfo"
).split()

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_CODE = re.compile(r"[=<>{}\[\]|\\]|\w\(|>>>|::|__")  # doctest lines, signatures, markup


def sentences(limit: int | None = None, seed: int = 0, min_words: int = 5, max_words: int = 40) -> list[str]:
    """Distinct prose sentences from the standard library's docstrings, shuffled (seeded)."""
    found: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated modules warn on import
        for name in MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:  # a Python built without this module (e.g. no _ssl, no _lzma)
                continue
            for doc in _docstrings(module):
                found.update(_split(doc, min_words, max_words))
    ordered = sorted(found)  # set order depends on hash seeds: sort before the seeded shuffle
    random.Random(seed).shuffle(ordered)
    return ordered[:limit] if limit else ordered


def _docstrings(module) -> list[str]:
    docs = [inspect.getdoc(module) or ""]
    for _, member in inspect.getmembers(module):
        if getattr(member, "__module__", None) != module.__name__:
            continue  # imported names: their own module is read (or skipped) on its own
        docs.append(inspect.getdoc(member) or "")
        if inspect.isclass(member):
            docs.extend(inspect.getdoc(m) or "" for _, m in vars(member).items() if callable(m))
    return docs


def _split(doc: str, min_words: int, max_words: int) -> list[str]:
    out = []
    for paragraph in doc.split("\n\n"):
        text = " ".join(paragraph.split())
        for sentence in _SENTENCE_END.split(text):
            words = sentence.split()
            if min_words <= len(words) <= max_words and sentence[-1] in ".!?" and not _CODE.search(sentence):
                out.append(sentence)
    return out


def tokenize(texts: list[str], tokenizer_json: Path, length: int) -> dict[str, np.ndarray]:
    """One int64 array per input name, (len(texts), length): padded with the tokenizer's [PAD]."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.enable_truncation(max_length=length)
    tokenizer.enable_padding(length=length)
    encoded = tokenizer.encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="folder with the teacher's tokenizer.json")
    parser.add_argument("--out", type=Path, required=True, help="the .npz to write")
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--length", type=int, default=48, help="tokens per sequence (padded or truncated)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    texts = sentences(args.samples, args.seed)
    arrays = tokenize(texts, args.model_dir / "tokenizer.json", args.length)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **arrays)
    truncated = int((arrays["attention_mask"][:, -1] == 1).sum())
    print(f"wrote {args.out}: {len(texts)} sentences x {args.length} tokens "
          f"({truncated} truncated), arrays {', '.join(arrays)}")


if __name__ == "__main__":
    main()
