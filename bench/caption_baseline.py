#!/usr/bin/env python3
"""The caption-only statistics of `mt inspect --columns caption,source` done by DuckDB
or polars (Python), for the 25M_full benchmark: counts, character and word length
(min / mean / median / p95 / max and exact value counts for histograms), the six
MedTrinity parts (bench/rules.py, as RE2 / Rust-regex word-boundary patterns), the
first modality and organ term, and source value counts.

    caption_baseline.py duckdb|polars SHARD_DIR
"""
import json
import sys
import time

import rules


def alternation(terms):
    whole = [t for t in terms if not t.endswith("*")]
    prefix = [t.rstrip("*") for t in terms if t.endswith("*")]
    esc = lambda ts: "|".join(sorted((t.replace("&", "\\&").replace("-", "\\-") for t in ts), key=len, reverse=True))
    alts = []
    if whole:
        alts.append(rf"\b(?:{esc(whole)})\b")
    if prefix:
        alts.append(rf"\b(?:{esc(prefix)})")
    return "(?i)(" + "|".join(alts) + ")"


PATTERNS = [alternation([t for _, ts in rules.MODALITIES for t in ts]),
            alternation([t for _, ts in rules.ORGANS for t in ts]),
            alternation(rules.OTHER["roi_location"]),
            alternation(rules.OTHER["roi_area"])[:-1] + r"|[0-9] *%)",
            alternation(rules.OTHER["texture"]),
            alternation(rules.OTHER["relations"])]


def duckdb_stats(path):
    import duckdb
    con = duckdb.connect()
    src = f"read_parquet('{path}/**/*.parquet')"
    flags = ", ".join(f"sum(regexp_matches(caption, '{p}')::INT) AS {n}" for n, p in zip(rules.PARTS, PATTERNS))
    main = con.execute(f"""
        WITH t AS (SELECT caption, length(caption) AS c, len(regexp_extract_all(caption, '\\S+')) AS w FROM {src})
        SELECT count(*), min(c), avg(c), quantile_disc(c, 0.5), quantile_disc(c, 0.95), max(c), histogram(c),
               min(w), avg(w), quantile_disc(w, 0.5), quantile_disc(w, 0.95), max(w), histogram(w), {flags}
        FROM t""").fetchone()
    firsts = [con.execute(f"SELECT lower(regexp_extract(caption, '{p}', 1)) AS m, count(*) FROM {src} GROUP BY m").fetchall()
              for p in PATTERNS[:2]]
    sources = con.execute(f"SELECT source, count(*) FROM {src} GROUP BY source").fetchall()
    return {"rows": main[0], "chars": main[1:6], "words": main[7:12], "parts": dict(zip(rules.PARTS, main[13:])),
            "modality_terms": len(firsts[0]), "organ_terms": len(firsts[1]), "sources": len(sources)}


def polars_stats(path):
    import polars as pl
    lf = pl.scan_parquet(f"{path}/**/*.parquet").select("caption", "source")
    c = pl.col("caption").str.len_chars()
    w = pl.col("caption").str.count_matches(r"\S+")
    flags = [pl.col("caption").str.contains(p).sum().alias(n) for n, p in zip(rules.PARTS, PATTERNS)]
    main = lf.select(pl.len().alias("rows"), c.min().alias("cmin"), c.mean().alias("cmean"), c.median().alias("cmed"),
                     c.quantile(0.95, "lower").alias("cp95"), c.max().alias("cmax"), c.value_counts().implode().alias("chist"),
                     w.min().alias("wmin"), w.mean().alias("wmean"), w.median().alias("wmed"),
                     w.quantile(0.95, "lower").alias("wp95"), w.max().alias("wmax"), w.value_counts().implode().alias("whist"),
                     *flags).collect()
    firsts = [lf.select(pl.col("caption").str.extract(p, 1).str.to_lowercase().alias("m")).group_by("m").len().collect()
              for p in PATTERNS[:2]]
    sources = lf.group_by("source").len().collect()
    row = main.row(0, named=True)
    return {"rows": row["rows"], "chars": [row[k] for k in ("cmin", "cmean", "cmed", "cp95", "cmax")],
            "words": [row[k] for k in ("wmin", "wmean", "wmed", "wp95", "wmax")],
            "parts": {n: row[n] for n in rules.PARTS}, "modality_terms": firsts[0].height,
            "organ_terms": firsts[1].height, "sources": sources.height}


if __name__ == "__main__":
    engine, path = sys.argv[1], sys.argv[2]
    t = time.perf_counter()
    out = (duckdb_stats if engine == "duckdb" else polars_stats)(path)
    out["seconds"] = time.perf_counter() - t
    print(json.dumps(out, default=str))
