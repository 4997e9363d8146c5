//! The index layout: fields, the English analyzer and the settings that keep documents in
//! corpus order.

use anyhow::{Context as _, Result};
use tantivy::schema::{
    FAST, Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    StopWordFilter, TextAnalyzer,
};
use tantivy::{Index, IndexSettings, IndexSortByField, Order};

/// The analyzer's name in the index (and in `mt-knowledge.json`): words of letters and
/// digits, at most 40 bytes, lower-cased, accents folded, Lucene's English stop words
/// removed, Snowball English stems. A change of these steps gets a new name.
pub(crate) const ANALYZER: &str = "mt_en_v1";

/// The position of the passage in the corpus files (a fast field the index is sorted by).
const ORD: &str = "ord";

/// The fields of a knowledge index.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fields {
    pub ord: Field,
    pub id: Field,
    pub title: Field,
    pub text: Field,
    pub source: Field,
}

impl Fields {
    /// The fields of `schema`; an error if one is missing (not an index made by `mt`).
    pub(super) fn of(schema: &Schema) -> Result<Self> {
        let get = |name: &str| {
            schema
                .get_field(name)
                .with_context(|| format!("the index has no `{name}` field"))
        };
        Ok(Fields {
            ord: get(ORD)?,
            id: get("id")?,
            title: get("title")?,
            text: get("text")?,
            source: get("source")?,
        })
    }
}

/// The schema: `ord` (fast), `id` (raw, stored), `title` and `text` (analyzed with term
/// frequencies, no positions, stored), `source` (stored).
pub(super) fn schema() -> Schema {
    let mut b = Schema::builder();
    let analyzed = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqs),
        )
        .set_stored();
    b.add_u64_field(ORD, FAST);
    b.add_text_field("id", STRING | STORED);
    b.add_text_field("title", analyzed.clone());
    b.add_text_field("text", analyzed);
    b.add_text_field("source", STORED);
    b.build()
}

/// Documents sorted by `ord`: whatever the indexing threads do, document ids follow the
/// corpus, so equal scores rank in corpus order and every build gives the same answers.
pub(super) fn settings() -> IndexSettings {
    IndexSettings {
        sort_by_field: Some(IndexSortByField {
            field: ORD.to_string(),
            order: Order::Asc,
        }),
        ..IndexSettings::default()
    }
}

/// The analyzer [`ANALYZER`] names.
pub(super) fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(StopWordFilter::new(Language::English).expect("tantivy has English stop words"))
        .filter(Stemmer::new(Language::English))
        .build()
}

/// Registers the analyzer with `index` (needed after every open).
pub(super) fn register(index: &Index) {
    index.tokenizers().register(ANALYZER, analyzer());
}

/// The terms `text` gives with [`analyzer`]: in order, each once.
pub(super) fn terms(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut seen = rustc_hash::FxHashSet::default();
    let mut out = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while let Some(token) = stream.next() {
        if seen.insert(token.text.clone()) {
            out.push(token.text.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analyzer_lowercases_folds_drops_stop_words_and_stems() {
        let mut a = analyzer();
        assert_eq!(
            terms(
                &mut a,
                "The Tumors of the LIVER, and a tumor in Sjögren syndrome"
            ),
            ["tumor", "liver", "sjogren", "syndrom"]
        );
        assert_eq!(
            terms(&mut a, "AND OR ( ) : ^ * ~ \" [ ]"),
            Vec::<String>::new()
        );
        assert_eq!(terms(&mut a, &"x".repeat(41)), Vec::<String>::new());
    }
}
