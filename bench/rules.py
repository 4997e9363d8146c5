"""The caption keyword rules of src/core/caption_parts.rs, read from the Rust source so
the Python baselines compute exactly what mt computes (one source of truth)."""
import re
from pathlib import Path

SRC = (Path(__file__).resolve().parents[1] / "src" / "core" / "caption_parts.rs").read_text()
PARTS = ["modality", "organ", "roi_location", "roi_area", "texture", "relations"]


def _table(name):
    body = re.search(rf"pub const {name}: &\[\(&str, &\[&str\]\)\] = &\[(.*?)\n\];", SRC, re.S).group(1)
    return [(m.group(1), re.findall(r'"([^"]*)"', m.group(2)))
            for m in re.finditer(r'\(\s*"([^"]+)",\s*&\[(.*?)\],?\s*\)', body, re.S)]


def _list(name):
    body = re.search(rf"const {name}: &\[&str\] = &\[(.*?)\];", SRC, re.S).group(1)
    return re.findall(r'"([^"]*)"', body)


MODALITIES = _table("MODALITIES")
ORGANS = _table("ORGANS")
OTHER = {"roi_location": _list("LOCATION_TERMS"), "roi_area": _list("AREA_TERMS"),
         "texture": _list("TEXTURE_TERMS"), "relations": _list("RELATION_TERMS")}


def term_regex(terms):
    """Whole-word, case-insensitive alternation; `*` terms match word prefixes
    (ASCII word characters, like mt's boundary rule)."""
    alts = []
    for t in sorted(terms, key=len, reverse=True):
        body = re.escape(t.rstrip("*"))
        alts.append(body if t.endswith("*") else body + r"(?![A-Za-z0-9\x80-\uffff])")
    return r"(?<![A-Za-z0-9\x80-\uffff])(?:" + "|".join(alts) + ")"


AREA_NUMBER = r"[0-9] *%"
