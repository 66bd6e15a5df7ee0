"""A real English->X parallel corpus from the gettext catalogs of a Debian machine.

Every ``<locale-dir>/<lang>/LC_MESSAGES/*.mo`` file holds human translations of a
program's messages (``msgid`` is the English text). This command turns them into
a fairseq data-bin in one go::

    python -m projects.translation.prepare_gettext --locale-dir /usr/share/locale \\
        --lang de --output data/gettext_en_de

1. **extract** every ``msgid -> msgstr`` pair of every catalog of the language
   (``gettext.GNUTranslations(f)._catalog``), skipping the header, empty entries,
   plural forms (tuple keys), format strings (``%s``, ``%1$d``, ``%(name)s``,
   ``{0}``, ``{name}``: their placeholders are code, not language), entries that
   span several lines (command-line help blocks; a line-based corpus cannot hold
   them), untranslated copies (target == source: mostly language and region names
   that a model would learn to copy) and messages longer than ``--max-words``.
   A ``msgctxt`` prefix is dropped and GTK mnemonic underscores (``_Open``) removed;
2. **deduplicate** by English source (the same message in several catalogs): the
   most frequent translation is kept, ties broken by the sorted text, so a source
   sentence is in exactly one split;
3. **split by pair** (not by file) with a fixed seed: ``--valid`` and ``--test``
   pairs, the rest is train;
4. **joint BPE**: one sentencepiece BPE model (``model_type=bpe``, its own
   whitespace pre-tokenization, lossless, so no Moses step is needed) learnt on
   the train split of both languages, applied to every split;
5. **fairseq-preprocess** with a joined dictionary.

Output folder::

    raw/{train,valid,test}.{en,X}     detokenized text (sacreBLEU references)
    spm.model, spm.vocab              the joint BPE model
    bpe/{train,valid,test}.{en,X}     BPE pieces, the fairseq input
    data-bin/                         fairseq-preprocess output (--joined-dictionary)
    stats.json                        what was kept and what was skipped, per reason

Score a model with ``fairseq-generate data-bin ... --beam 5 --post-process sentencepiece``
and sacreBLEU against ``raw/test.X`` (``benchmarks/bench_translation_real.py``).
"""
from __future__ import annotations

import argparse
import collections
import gettext
import glob
import json
import os
import random
import re
import shutil
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = [
    "SOURCE_LANG",
    "find_catalogs",
    "read_catalog",
    "clean_pair",
    "extract_pairs",
    "split_pairs",
    "learn_bpe",
    "prepare",
    "main",
]

SOURCE_LANG = "en"  # gettext msgids are the programs' English messages
SPLITS = ("train", "valid", "test")

# printf conversions (%s, %5.2f, %-10s, %lu, %1$s, %(name)s, %%) and Qt's %1
_PRINTF = re.compile(
    r"%(?:\d+\$|\([^)]*\))?[-+ #0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?"
    r"(?:hh|h|ll|l|L|q|j|z|t|I64|I32|I)?[diouxXeEfFgGaAcCsSpnmr%]"
    r"|%\d"
)
# Python/Rust/C# brace placeholders: {}, {0}, {name}, {0:>5}, {obj.attr}
_BRACES = re.compile(r"\{[\w.\[\]]*(?:![rsa])?(?::[^{}]*)?\}")
# a GTK mnemonic underscore at the start of a word (_Open, Save _As)
_MNEMONIC = re.compile(r"(?<![\w_])_(?=\w)")


@dataclass
class ExtractStats:
    catalogs: int = 0
    unreadable: List[str] = field(default_factory=list)
    entries: int = 0
    skipped: collections.Counter = field(default_factory=collections.Counter)
    pairs: int = 0  # distinct (source, target) pairs kept
    sources: int = 0  # after deduplication by source


def find_catalogs(locale_dir: str, lang: str) -> List[str]:
    """The sorted ``.mo`` files of ``lang``; a clear error if there are none."""
    if not os.path.isdir(locale_dir):
        raise SystemExit(f"error: locale directory {locale_dir!r} does not exist (give --locale-dir, "
                         f"e.g. /usr/share/locale)")
    files = sorted(glob.glob(os.path.join(locale_dir, lang, "LC_MESSAGES", "*.mo")))
    if not files:
        present = sorted(
            d for d in os.listdir(locale_dir)
            if glob.glob(os.path.join(locale_dir, d, "LC_MESSAGES", "*.mo"))
        )
        hint = (f"languages with catalogs there: {' '.join(present[:40])}{' ...' if len(present) > 40 else ''}"
                if present else "that directory holds no gettext catalog for any language "
                                "(on Debian they come with the programs' packages; locales-all does not ship them)")
        raise SystemExit(f"error: no gettext catalogs (*.mo) in {os.path.join(locale_dir, lang, 'LC_MESSAGES')}; {hint}")
    return files


def read_catalog(path: str) -> Dict:
    """``msgid -> msgstr`` of one ``.mo`` file (plural entries have tuple keys)."""
    with open(path, "rb") as f:
        return gettext.GNUTranslations(f)._catalog


def clean_pair(source, target) -> Tuple[Optional[Tuple[str, str]], str]:
    """``((source, target), "")`` for an entry the corpus keeps, else ``(None, reason)``."""
    if isinstance(source, tuple):
        return None, "plural form"
    if not source or not target:
        return None, "empty (or the header)"
    # "context\x04message": msgctxt is a disambiguation tag for the program, not text
    source, target = source.split("\x04")[-1], target.split("\x04")[-1]
    if _PRINTF.search(source) or _BRACES.search(source) or _PRINTF.search(target) or _BRACES.search(target):
        return None, "format string"
    if any(c in s for s in (source, target) for c in "\n\r\t"):
        return None, "several lines"
    source = " ".join(_MNEMONIC.sub("", source).split())
    target = " ".join(_MNEMONIC.sub("", target).split())
    if not source or not target:
        return None, "empty (or the header)"
    if source == target:
        return None, "untranslated copy"
    return (source, target), ""


def extract_pairs(catalogs: Sequence[str], max_words: int = 50) -> Tuple[List[Tuple[str, str]], ExtractStats]:
    """Clean pairs of all ``catalogs``, deduplicated by source: for each English
    message the most frequent translation (ties: the first in sorted order).
    Returns the pairs sorted by source, and what was kept and skipped."""
    stats = ExtractStats()
    counts: Dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for path in catalogs:
        try:
            catalog = read_catalog(path)
        except (OSError, UnicodeDecodeError, LookupError, ValueError) as err:
            # e.g. a catalog whose header names a charset its strings are not in
            stats.unreadable.append(f"{os.path.basename(path)} ({type(err).__name__}: {err})")
            continue
        stats.catalogs += 1
        for source, target in catalog.items():
            stats.entries += 1
            pair, reason = clean_pair(source, target)
            if pair is not None and max(len(pair[0].split()), len(pair[1].split())) > max_words:
                pair, reason = None, f"longer than {max_words} words"
            if pair is None:
                stats.skipped[reason] += 1
            else:
                counts[pair[0]][pair[1]] += 1
    stats.pairs = sum(len(c) for c in counts.values())
    pairs = [(src, min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0]) for src, c in sorted(counts.items())]
    stats.sources = len(pairs)
    return pairs, stats


def split_pairs(
    pairs: Sequence[Tuple[str, str]], n_valid: int, n_test: int, seed: int = 0
) -> Dict[str, List[Tuple[str, str]]]:
    """Shuffle ``pairs`` with ``seed`` and cut valid, test, train (the rest)."""
    if n_valid < 1 or n_test < 1:
        raise ValueError(f"need at least one valid and one test pair, got {n_valid} and {n_test}")
    if n_valid + n_test >= len(pairs):
        raise SystemExit(f"error: only {len(pairs)} pairs, not enough for {n_valid} valid + {n_test} test "
                         f"pairs and a training set (lower --valid/--test)")
    order = list(pairs)
    random.Random(seed).shuffle(order)
    return {"valid": order[:n_valid], "test": order[n_valid:n_valid + n_test], "train": order[n_valid + n_test:]}


def write_lines(path: str, lines: Sequence[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)


def learn_bpe(train_files: Sequence[str], model_prefix: str, vocab_size: int):
    """A joint sentencepiece BPE model on ``train_files`` (deterministic: BPE merges
    the most frequent pair, sentencepiece samples nothing for it); returns the processor."""
    try:
        import sentencepiece as spm
    except ImportError as err:  # pragma: no cover - make setup installs it
        raise SystemExit("error: sentencepiece is not installed (make setup installs it; "
                         "or pip install sentencepiece)") from err
    spm.SentencePieceTrainer.train(
        input=",".join(train_files), model_prefix=model_prefix, model_type="bpe",
        vocab_size=vocab_size, character_coverage=1.0,
        # fairseq builds its own dictionary with <s> <pad> </s> <unk>; sentencepiece
        # keeps only <unk> (never emitted as a piece for covered characters)
        bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0,
        hard_vocab_limit=False,  # a small corpus may not have vocab_size pieces
        num_threads=1, minloglevel=2,
    )
    return spm.SentencePieceProcessor(model_file=model_prefix + ".model")


def prepare(
    locale_dir: str,
    lang: str,
    output: str,
    n_valid: int = 1000,
    n_test: int = 1000,
    vocab_size: int = 8000,
    max_words: int = 50,
    seed: int = 0,
    run_preprocess: bool = True,
) -> dict:
    """The whole pipeline; returns the statistics written to ``stats.json``."""
    from . import toy_task  # fairseq_cli and the environment of the fairseq commands

    if lang == SOURCE_LANG:
        raise SystemExit(f"error: --lang {lang}: the catalogs' source language is already {SOURCE_LANG}")
    catalogs = find_catalogs(locale_dir, lang)
    pairs, stats = extract_pairs(catalogs, max_words)
    print(f"{len(catalogs)} catalogs in {os.path.join(locale_dir, lang, 'LC_MESSAGES')}: "
          f"{stats.catalogs} read, {len(stats.unreadable)} unreadable")
    for bad in stats.unreadable:
        print(f"  skipped unreadable catalog {bad}")
    print(f"{stats.entries} entries; skipped: " + ", ".join(f"{n} {why}" for why, n in stats.skipped.most_common()))
    print(f"{stats.pairs} distinct pairs, {stats.sources} distinct English sources (one translation each)")
    splits = split_pairs(pairs, n_valid, n_test, seed)

    raw, bpe = os.path.join(output, "raw"), os.path.join(output, "bpe")
    os.makedirs(raw, exist_ok=True)
    os.makedirs(bpe, exist_ok=True)
    for split in SPLITS:
        for side, l in enumerate((SOURCE_LANG, lang)):
            write_lines(os.path.join(raw, f"{split}.{l}"), [p[side] for p in splits[split]])
    sp = learn_bpe([os.path.join(raw, f"train.{l}") for l in (SOURCE_LANG, lang)],
                   os.path.join(output, "spm"), vocab_size)
    tokens = {}
    for split in SPLITS:
        for side, l in enumerate((SOURCE_LANG, lang)):
            pieces = sp.encode([p[side] for p in splits[split]], out_type=str)
            tokens[f"{split}.{l}"] = sum(map(len, pieces))
            write_lines(os.path.join(bpe, f"{split}.{l}"), [" ".join(p) for p in pieces])
    data_bin = os.path.join(output, "data-bin")
    if run_preprocess:
        if os.path.isdir(data_bin):  # from an earlier run of this command: fairseq-preprocess refuses to overwrite
            shutil.rmtree(data_bin)
        toy_task.run(toy_task.fairseq_cli("fairseq-preprocess") + [
            "--source-lang", SOURCE_LANG, "--target-lang", lang,
            "--trainpref", os.path.join(bpe, "train"), "--validpref", os.path.join(bpe, "valid"),
            "--testpref", os.path.join(bpe, "test"), "--destdir", data_bin,
            "--joined-dictionary", "--workers", "1",
        ], env=toy_task.cli_env(1))
    summary = {
        "locale_dir": locale_dir, "lang": lang, "seed": seed, "max_words": max_words,
        "catalogs": stats.catalogs, "unreadable_catalogs": stats.unreadable,
        "entries": stats.entries, "skipped": dict(stats.skipped.most_common()),
        "distinct_pairs": stats.pairs, "pairs": stats.sources,
        "split_pairs": {s: len(splits[s]) for s in SPLITS},
        "bpe_vocab_size": sp.get_piece_size(), "bpe_tokens": tokens,
    }
    with open(os.path.join(output, "stats.json"), "w") as f:
        json.dump(summary, f, indent=1, ensure_ascii=False)
    for split in SPLITS:
        print(f"{split:5s}: {len(splits[split]):6d} pairs, {tokens[f'{split}.{SOURCE_LANG}']:7d} "
              f"{SOURCE_LANG} / {tokens[f'{split}.{lang}']:7d} {lang} BPE tokens")
    print(f"joint BPE vocabulary: {sp.get_piece_size()} pieces; "
          + (f"fairseq data-bin: {data_bin}" if run_preprocess else "fairseq-preprocess not run"))
    return summary


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m projects.translation.prepare_gettext",
        description="English->X parallel corpus from gettext catalogs: extract, deduplicate, split by "
                    "pair, joint sentencepiece BPE, fairseq-preprocess.",
    )
    parser.add_argument("--locale-dir", default="/usr/share/locale",
                        help="folder with <lang>/LC_MESSAGES/*.mo (default: %(default)s)")
    parser.add_argument("--lang", default="de", help="target language folder name, e.g. de, fr, pt_BR (default: %(default)s)")
    parser.add_argument("--output", required=True, help="output folder (raw/, bpe/, spm.model, data-bin/, stats.json)")
    parser.add_argument("--valid", type=int, default=1000, help="validation pairs (default: %(default)s)")
    parser.add_argument("--test", type=int, default=1000, help="test pairs (default: %(default)s)")
    parser.add_argument("--vocab-size", type=int, default=8000, help="joint BPE vocabulary (default: %(default)s)")
    parser.add_argument("--max-words", type=int, default=50,
                        help="skip messages with more words on either side (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/valid/test split (default: %(default)s)")
    parser.add_argument("--no-preprocess", action="store_true", help="stop after the BPE (no fairseq-preprocess)")
    args = parser.parse_args(argv)
    return prepare(args.locale_dir, args.lang, args.output, args.valid, args.test, args.vocab_size,
                   args.max_words, args.seed, run_preprocess=not args.no_preprocess)


if __name__ == "__main__":
    main(sys.argv[1:])
