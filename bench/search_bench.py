"""make bench-search: the search index next to raw SQLite FTS5 on a real multilingual corpus,
with recall checked against a brute-force scan of the same texts.

Corpus: the translated messages (msgstr) of the gettext catalogs that Debian packages install
under /usr/share/locale: iso-codes (language, country, currency and script names) and the
user-facing strings of git, coreutils, dpkg, bash, libc and others, in every language they
ship (about 100: Chinese, Japanese, Korean, Russian, Ukrainian, Arabic, Greek, Vietnamese and
the Latin-script languages with their diacritics). Real human translations, not generated
text. Read with Python's gettext; deduplicated per language; newlines and tabs become spaces;
texts of 1..300 characters kept, in a fixed order (sorted, then a seeded shuffle).

Queries (seeded, drawn from the corpus): whole words of Latin, Cyrillic and Greek texts,
prefixes of such words (3..5 characters + *), and substrings (2..4 characters) of Chinese,
Japanese and Korean texts. The brute-force scan tokenizes every text as SQLite's unicode61
tokenizer does (letters, digits and private-use characters are token characters, combining
diacritics U+0300..U+036F are dropped inside tokens, everything else separates; Latin
diacritics removed; per-character lower case) and compares, or finds
substrings with Python's `in`. Recall = hits of ours found by the scan too / hits of the
scan, over all queries; any difference is printed.

Usage: search_bench.py BENCH_BINARY [TEXTS]   (TEXTS default 200000, at least 100000)
       search_bench.py --parts PARTS_BINARY [TEXTS]   (bench/search_parts.c on the first
       TEXTS, default 100000, of the same corpus)
"""

import collections
import glob
import gettext
import os
import random
import subprocess
import sys
import tempfile
import time
import unicodedata

DOMAINS = ("iso_639-3", "iso_639-2", "iso_3166-1", "iso_3166", "iso_3166-2", "iso_3166_2",
           "iso_4217", "iso_15924", "git", "coreutils", "dpkg", "bash", "libc", "gnupg2",
           "glib20", "binutils", "tar", "findutils", "grep", "sed", "diffutils", "shadow",
           "util-linux", "apt", "wget", "xkeyboard-config", "shared-mime-info", "gettext-tools")
SEED = 20240521


def corpus(limit):
    seen, texts, langs = set(), [], collections.Counter()
    files = []
    for d in DOMAINS:
        files += glob.glob(f"/usr/share/locale/*/LC_MESSAGES/{d}.mo")
    for path in sorted(files):
        lang = path.split("/")[4]
        try:
            with open(path, "rb") as f:
                cat = gettext.GNUTranslations(f)._catalog
        except Exception:
            continue
        for k, v in cat.items():
            if not k or not isinstance(v, str):
                continue
            t = " ".join(v.replace("\t", " ").split())
            if 1 <= len(t) <= 300 and (lang, t) not in seen:
                seen.add((lang, t))
                texts.append((lang, t))
    texts.sort()
    random.Random(SEED).shuffle(texts)
    texts = texts[:limit]
    for lang, _ in texts:
        langs[lang.split("_")[0].split("@")[0]] += 1
    return [t for _, t in texts], langs, len(files)


def script(c):
    try:
        return unicodedata.name(c).split(" ")[0]
    except ValueError:
        return ""


def fold(c):
    """unicode61 remove_diacritics 2 on one character: Latin letters lose their marks; then
    simple lower case."""
    if script(c) == "LATIN":
        base = "".join(x for x in unicodedata.normalize("NFD", c) if not unicodedata.combining(x))
        c = base or c
    return "".join(x.lower() if len(x.lower()) == 1 else x for x in c)


def tokens(text):
    out, cur = [], []
    for c in text:
        cat = unicodedata.category(c)
        if cat[0] in "LN" or cat == "Co":
            cur.append(fold(c))
        elif 0x300 <= ord(c) <= 0x36F:
            continue  # remove_diacritics: a combining mark is part of the token, then dropped
        elif cur:
            out.append("".join(cur))
            cur = []
    if cur:
        out.append("".join(cur))
    return out


def unspaced(c):
    o = ord(c)
    return (0x3040 <= o <= 0x30FF or 0x3400 <= o <= 0x4DBF or 0x4E00 <= o <= 0x9FFF
            or 0xAC00 <= o <= 0xD7AF)


def clean_word(w):
    return len(w) >= 3 and all(unicodedata.category(c)[0] == "L" and script(c) in ("LATIN", "CYRILLIC", "GREEK")
                                and not unicodedata.combining(c) for c in w)


def make_queries(texts, rnd):
    words, cjk = [], []
    for i, t in enumerate(texts):
        for w in t.split():
            w = w.strip(".,:;!?()[]{}'\"«»“”‘’<>%/\\|=+-*&^$#@~`")
            if clean_word(w):
                words.append(w)
        runs, cur = [], ""
        for c in t:
            if unspaced(c):
                cur += c
            else:
                if len(cur) >= 2:
                    runs.append(cur)
                cur = ""
        if len(cur) >= 2:
            runs.append(cur)
        cjk += runs
    qs = []
    for w in rnd.sample(words, 400):
        qs.append(("word", w))
    for w in rnd.sample(words, 200):
        if len(w) >= 4:
            qs.append(("prefix", w[:rnd.randint(3, min(5, len(w) - 1))] + "*"))
    for r in rnd.sample(cjk, 400):
        k = rnd.randint(2, min(4, len(r)))
        s = rnd.randint(0, len(r) - k)
        qs.append(("sub", r[s:s + k]))
    return qs


def brute(texts, toks, kind, q):
    if kind == "sub":
        return {i for i, t in enumerate(texts) if q in t}
    if kind == "word":
        w = "".join(fold(c) for c in q)
        return {i for i, ts in enumerate(toks) if w in ts}
    p = "".join(fold(c) for c in q[:-1])
    return {i for i, ts in enumerate(toks) if any(x.startswith(p) for x in ts)}


def parts(binary, limit):
    texts, _, _ = corpus(max(limit, 100000))
    with tempfile.TemporaryDirectory(prefix="search-parts-") as d:
        cpath = os.path.join(d, "corpus.txt")
        with open(cpath, "w", encoding="utf-8") as f:
            f.write("".join(t + "\n" for t in texts[:limit]))
        work = os.path.join(d, "work")
        os.mkdir(work)
        subprocess.run([binary, cpath, work, str(limit)], check=True)


def main():
    if sys.argv[1] == "--parts":
        parts(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 100000)
        return
    binary = sys.argv[1]
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 200000
    t0 = time.time()
    texts, langs, nfiles = corpus(limit)
    if len(texts) < 100000:
        sys.exit(f"search bench: only {len(texts)} texts in the gettext catalogs of {nfiles} "
                 "files: install the Debian packages iso-codes and libc-l10n (deploy/deps.sh)")
    rnd = random.Random(SEED)
    queries = make_queries(texts, rnd)
    print(f"corpus: {len(texts)} texts from {nfiles} gettext catalogs, {len(langs)} languages "
          f"(top: {', '.join(f'{k} {v}' for k, v in langs.most_common(12))}); "
          f"mean {sum(map(len, texts)) / len(texts):.0f} characters; built in {time.time() - t0:.1f} s")
    with tempfile.TemporaryDirectory(prefix="search-bench-") as d:
        cpath, qpath, rpath = (os.path.join(d, n) for n in ("corpus.txt", "queries.txt", "results.txt"))
        with open(cpath, "w", encoding="utf-8") as f:
            f.write("".join(t + "\n" for t in texts))
        with open(qpath, "w", encoding="utf-8") as f:
            f.write("".join(f"{k}\t{q}\n" for k, q in queries))
        work = os.path.join(d, "work")
        os.mkdir(work)
        out = subprocess.run([binary, cpath, qpath, work, rpath], check=True, capture_output=True,
                             text=True).stdout
        fig = dict(line.split(" ", 1) for line in out.strip().splitlines())
        fig = {k: float(v) for k, v in fig.items()}
        got = {}
        with open(rpath, encoding="utf-8") as f:
            for line in f:
                idx, _, ids = line.rstrip("\n").partition("\t")
                got[int(idx)] = {int(x) for x in ids.split()} if ids else set()
    toks = [set(tokens(t)) for t in texts]
    want_total = found = extra = 0
    by_kind = collections.defaultdict(lambda: [0, 0, 0, 0])  # queries, want, found, extra
    diffs = []
    for i, (kind, q) in enumerate(queries):
        want = brute(texts, toks, kind, q)
        have = got.get(i, set())
        k = by_kind[kind]
        k[0] += 1
        k[1] += len(want)
        k[2] += len(want & have)
        k[3] += len(have - want)
        want_total += len(want)
        found += len(want & have)
        extra += len(have - want)
        if want != have and len(diffs) < 5:
            miss = sorted(want - have)[:2]
            more = sorted(have - want)[:2]
            diffs.append(f"  {kind} {q!r}: missed {[texts[j][:60] for j in miss]}, extra {[texts[j][:60] for j in more]}")
    for kind, (nq, w, f_, x) in sorted(by_kind.items()):
        print(f"recall {kind:6}: {nq} queries, {w} expected hits, {f_} found "
              f"({100.0 * f_ / max(w, 1):.2f}%), {x} not in the scan")
    print(f"recall all   : {100.0 * found / max(want_total, 1):.3f}% of {want_total} hits; "
          f"{extra} hits the scan does not have")
    if diffs:
        print("differences (first 5):\n" + "\n".join(diffs))
    io, ir = fig["index_ours_per_s"], fig["index_raw_per_s"]
    print(f"indexing {int(fig['texts'])} texts (batches interleaved): ours {io:,.0f}/s | raw FTS5 "
          f"{ir:,.0f}/s | ratio {io / ir:.2f}x")
    io, ir = fig["index_ours_cpu_per_s"], fig["index_raw_cpu_per_s"]
    print(f"indexing, per CPU second of the thread: ours {io:,.0f}/s | raw FTS5 {ir:,.0f}/s | "
          f"ratio {io / ir:.2f}x")
    for p in ("p50", "p99"):
        o, r = fig[f"query_ours_{p}_ms"], fig[f"query_raw_{p}_ms"]
        print(f"newest-20 query {p} over {int(fig['queries'])} queries: ours {o:.3f} ms | raw FTS5 "
              f"{r:.3f} ms | ratio {o / r:.2f}x | difference {o - r:+.3f} ms")
    for p in ("p50", "p99"):
        o, r = fig[f"query_ours_cpu_{p}_ms"], fig[f"query_raw_cpu_{p}_ms"]
        print(f"newest-20 query {p}, CPU time: ours {o:.3f} ms | raw FTS5 {r:.3f} ms | "
              f"difference {o - r:+.3f} ms")
    if found != want_total or extra:
        sys.exit(1)


if __name__ == "__main__":
    main()
