"""The gettext corpus command (projects/translation/prepare_gettext.py) on .mo files
the tests write themselves (never the machine's /usr/share/locale)."""
import json
import os
import struct

import pytest

from projects.translation import prepare_gettext as pg

HEADER = "Content-Type: text/plain; charset={charset}\nPlural-Forms: nplurals=2; plural=(n != 1);\n"


def write_mo(path, entries, charset="UTF-8", encoding=None):
    """A GNU .mo file (little endian, revision 0, no hash table) holding ``entries``
    (``{msgid: msgstr}``; a plural entry is ``msgid\\0msgid_plural -> form0\\0form1``, a
    context ``ctx\\x04msgid``) and the header, encoded with ``encoding``."""
    encoding = encoding or charset
    items = sorted({"": HEADER.format(charset=charset), **entries}.items())
    ids = [k.encode(encoding) for k, _ in items]
    strs = [v.encode(encoding) for _, v in items]
    n = len(items)
    originals, translations = 28, 28 + 8 * n
    data_start = 28 + 16 * n
    blob, tables = b"", [[], []]
    for table, strings in zip(tables, (ids, strs)):
        for s in strings:
            table.append((len(s), data_start + len(blob)))
            blob += s + b"\0"
    header = struct.pack("<7I", 0x950412DE, 0, n, originals, translations, 0, data_start)
    body = b"".join(struct.pack("<2I", *e) for e in tables[0] + tables[1])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(header + body + blob)


WORDS_EN = ["open", "close", "save", "print", "delete", "copy", "move", "rename", "show", "hide"]
WORDS_FR = ["ouvrir", "fermer", "enregistrer", "imprimer", "supprimer", "copier", "déplacer",
            "renommer", "afficher", "masquer"]
OBJECTS_EN = ["the file", "the folder", "the window", "the document", "the image", "the list"]
OBJECTS_FR = ["le fichier", "le dossier", "la fenêtre", "le document", "l'image", "la liste"]


def _sentences():
    return {f"{v.capitalize()} {o}": f"{w.capitalize()} {p}"
            for v, w in zip(WORDS_EN, WORDS_FR) for o, p in zip(OBJECTS_EN, OBJECTS_FR)}


def test_clean_pair_skips_what_is_not_language():
    assert pg.clean_pair(("file", "files"), ("Datei", "Dateien"))[1] == "plural form"
    assert pg.clean_pair("", "Project-Id-Version: x")[1] == "empty (or the header)"
    assert pg.clean_pair("Quit", "")[1] == "empty (or the header)"
    for fmt in ("%s files", "%d of %d", "%-10s|", "%1$s to %2$s", "%(name)s", "100%% done", "{0} items",
                "{name} left", "{}", "Page %1"):
        assert pg.clean_pair(fmt, "x")[1] == "format string", fmt
    assert pg.clean_pair("first line\nsecond", "a\nb")[1] == "several lines"
    assert pg.clean_pair("Linux", "Linux")[1] == "untranslated copy"
    # context dropped, mnemonics removed, whitespace normalized; identifiers keep their underscore
    assert pg.clean_pair("menu\x04_Save  As", "menu\x04Speichern _unter") == (("Save As", "Speichern unter"), "")
    assert pg.clean_pair("when_clause", "When-Klausel") == (("when_clause", "When-Klausel"), "")
    assert pg.clean_pair("Progress: 50 percent", "Fortschritt: 50 Prozent")[1] == ""


def test_extract_deduplicates_by_source_and_reports_what_it_skipped(tmp_path):
    root = tmp_path / "locale"
    lc = root / "de" / "LC_MESSAGES"
    write_mo(str(lc / "a.mo"), {"Open": "Öffnen", "Close": "Schließen", "%s files": "%s Dateien",
                                "file\0files": "Datei\0Dateien", "Linux": "Linux"})
    write_mo(str(lc / "b.mo"), {"Open": "Aufmachen", "Save": "Speichern"})
    write_mo(str(lc / "c.mo"), {"Open": "Öffnen", "Quit": ""})
    # a catalog whose header says UTF-8 but whose strings are Latin-1 (Debian's net-tools.mo)
    write_mo(str(lc / "d.mo"), {"Route": "Weiterleitungsregel für Straße"}, charset="UTF-8", encoding="latin-1")
    pairs, stats = pg.extract_pairs(pg.find_catalogs(str(root), "de"))
    assert pairs == [("Close", "Schließen"), ("Open", "Öffnen"), ("Save", "Speichern")]  # majority wins
    assert stats.catalogs == 3 and len(stats.unreadable) == 1 and "d.mo" in stats.unreadable[0]
    # gettext stores a plural entry as one (msgid, n) key per form: 2 here
    assert stats.skipped == {"format string": 1, "plural form": 2, "untranslated copy": 1,
                             "empty (or the header)": 4}  # 3 headers + "Quit"
    assert stats.pairs == 4 and stats.sources == 3


def test_a_folder_without_catalogs_is_refused_by_name(tmp_path):
    root = tmp_path / "locale"
    write_mo(str(root / "fr" / "LC_MESSAGES" / "x.mo"), {"Open": "Ouvrir"})
    with pytest.raises(SystemExit, match=r"no gettext catalogs \(\*\.mo\) in .*de/LC_MESSAGES.*fr"):
        pg.find_catalogs(str(root), "de")
    with pytest.raises(SystemExit, match="does not exist"):
        pg.find_catalogs(str(tmp_path / "missing"), "de")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="holds no gettext catalog for any language"):
        pg.main(["--locale-dir", str(tmp_path / "empty"), "--lang", "de", "--output", str(tmp_path / "out")])


def test_split_is_by_pair_disjoint_and_fixed_by_the_seed():
    pairs = [(f"s{i}", f"t{i}") for i in range(50)]
    a, b, c = pg.split_pairs(pairs, 5, 7, seed=0), pg.split_pairs(pairs, 5, 7, seed=0), pg.split_pairs(pairs, 5, 7, seed=1)
    assert a == b and a != c
    assert [len(a[s]) for s in ("train", "valid", "test")] == [38, 5, 7]
    assert sorted(sum(a.values(), [])) == sorted(pairs)
    with pytest.raises(SystemExit, match="not enough"):
        pg.split_pairs(pairs, 25, 25)


def test_the_command_builds_a_fairseq_corpus_for_another_language(tmp_path):
    pytest.importorskip("sentencepiece")
    pytest.importorskip("fairseq")
    root, out = tmp_path / "locale", tmp_path / "corpus"
    sentences = _sentences()
    items = list(sentences.items())
    write_mo(str(root / "fr" / "LC_MESSAGES" / "one.mo"), dict(items[:30]))
    write_mo(str(root / "fr" / "LC_MESSAGES" / "two.mo"), dict(items[30:] + [("%d files", "%d fichiers")]))
    summary = pg.main(["--locale-dir", str(root), "--lang", "fr", "--output", str(out),
                       "--valid", "5", "--test", "5", "--vocab-size", "60", "--seed", "3"])
    assert summary["split_pairs"] == {"train": 50, "valid": 5, "test": 5}
    assert summary["skipped"]["format string"] == 1
    assert json.loads((out / "stats.json").read_text()) == summary
    # the raw files are the detokenized pairs, line by line, in the same order on both sides
    kept = {}
    for split in ("train", "valid", "test"):
        en = (out / "raw" / f"{split}.en").read_text(encoding="utf-8").splitlines()
        fr = (out / "raw" / f"{split}.fr").read_text(encoding="utf-8").splitlines()
        assert len(en) == len(fr) == summary["split_pairs"][split]
        kept.update(zip(en, fr))
    assert kept == sentences
    # the BPE is lossless: decoding the pieces gives the raw text back
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(out / "spm.model"))
    pieces = (out / "bpe" / "test.fr").read_text(encoding="utf-8").splitlines()
    assert [sp.decode(p.split()) for p in pieces] == (out / "raw" / "test.fr").read_text(encoding="utf-8").splitlines()
    # fairseq-preprocess ran with one joined dictionary
    data_bin = out / "data-bin"
    for split in ("train", "valid", "test"):
        for lang in ("en", "fr"):
            assert (data_bin / f"{split}.en-fr.{lang}.bin").exists()
    assert (data_bin / "dict.en.txt").read_text() == (data_bin / "dict.fr.txt").read_text()
