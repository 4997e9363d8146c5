//! An opened index: BM25 top-k passages for free text.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::Serialize;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Value as _};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{
    DocAddress, DocId, Index, ReloadPolicy, Score, Searcher, SegmentReader, TantivyDocument, Term,
};

use super::build::{BuildOptions, build};
use super::manifest::{CorpusFile, Manifest};
use super::schema::{self, Fields};
use crate::core::error::usage;

/// How much more a query word counts in a title than in the text.
pub(crate) const TITLE_BOOST: f32 = 2.0;

/// One retrieved passage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub id: String,
    pub title: String,
    pub source: String,
    pub text: String,
    /// BM25 over title (boosted [`TITLE_BOOST`] times) and text.
    pub score: f32,
}

/// A knowledge index opened for searching; cheap to search from many threads at once.
pub struct KnowledgeIndex {
    dir: PathBuf,
    manifest: Manifest,
    searcher: Searcher,
    fields: Fields,
    analyzer: TextAnalyzer,
}

/// The index folder of a corpus file when none is named: `<corpus>.bm25`.
pub(crate) fn default_index_dir(corpus: &Path) -> PathBuf {
    let mut name = corpus.as_os_str().to_owned();
    name.push(".bm25");
    PathBuf::from(name)
}

impl KnowledgeIndex {
    /// Opens an index folder made by `build`, or, given a corpus JSONL file, the index
    /// beside it (`<corpus>.bm25/`), building it first when missing or stale (corpus size
    /// or modification time changed).
    pub(crate) fn open_or_build(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path)
            .map_err(|_| usage(format!("{}: no such file or folder", path.display())))?;
        if meta.is_dir() {
            let index = Self::open(path)?;
            index.warn_if_stale();
            return Ok(index);
        }
        let dir = default_index_dir(path);
        let report = build(&[path.to_path_buf()], &dir, &BuildOptions::default())?;
        if report.built {
            tracing::info!(
                "{}: indexed {} passages in {:.1} s",
                dir.display(),
                report.passages,
                report.seconds
            );
        }
        Self::open(&dir)
    }

    /// Opens the index folder `dir`: an error when it is missing, is not an index made by
    /// `mt convert knowledge-index` (or a build that did not finish), or has another format.
    pub fn open(dir: &Path) -> Result<Self> {
        let manifest = Manifest::read(dir)?;
        let rebuild = "rebuild it with `mt convert knowledge-index --force`";
        let index = Index::open_in_dir(dir)
            .with_context(|| format!("{}: cannot open the index; {rebuild}", dir.display()))?;
        schema::register(&index);
        let fields = Fields::of(&index.schema())
            .with_context(|| format!("{}: unexpected index layout; {rebuild}", dir.display()))?;
        let analyzer = index.tokenizer_for_field(fields.text)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .with_context(|| format!("{}: cannot read the index", dir.display()))?;
        Ok(KnowledgeIndex {
            dir: dir.to_path_buf(),
            manifest,
            searcher: reader.searcher(),
            fields,
            analyzer,
        })
    }

    /// The `k` best passages for the free text `query` by BM25 over title and text: any
    /// passage with at least one of the query's words (after analysis: lower case, no stop
    /// words, stems) can match. No query syntax: every text is accepted, and one without
    /// searchable words gives no hits. Equal scores rank in corpus order.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<Hit>> {
        let k = k.min(usize::try_from(self.len()).unwrap_or(usize::MAX));
        let terms = schema::terms(&mut self.analyzer.clone(), query);
        if k == 0 || terms.is_empty() {
            return Ok(Vec::new());
        }
        let term_query = |field: Field, word: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, word),
                IndexRecordOption::WithFreqs,
            ))
        };
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::with_capacity(2 * terms.len());
        for word in &terms {
            let title = BoostQuery::new(term_query(self.fields.title, word), TITLE_BOOST);
            clauses.push((Occur::Should, Box::new(title)));
            clauses.push((Occur::Should, term_query(self.fields.text, word)));
        }
        // Every match is scored. tantivy's block-max WAND pruning (`order_by_score`) was
        // 2-6 times slower than that on caption-like queries, whose words are all common
        // in a medical corpus (bench/README.md); the hits are the same.
        let every_match =
            TopDocs::with_limit(k).tweak_score(|_: &SegmentReader| |_: DocId, score: Score| score);
        let top = self
            .searcher
            .search(&BooleanQuery::new(clauses), &every_match)
            .with_context(|| format!("{}: search failed", self.dir.display()))?;
        top.into_iter()
            .map(|(score, address)| self.hit(score, address))
            .collect()
    }

    fn hit(&self, score: f32, address: DocAddress) -> Result<Hit> {
        let doc: TantivyDocument = self
            .searcher
            .doc(address)
            .with_context(|| format!("{}: cannot read a stored passage", self.dir.display()))?;
        let get = |field: Field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        Ok(Hit {
            id: get(self.fields.id),
            title: get(self.fields.title),
            source: get(self.fields.source),
            text: get(self.fields.text),
            score,
        })
    }

    /// Number of passages.
    pub fn len(&self) -> u64 {
        self.searcher.num_docs()
    }

    /// True when the index holds no passage (a build never makes one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What to record in a run.json: index path, corpus files (path, bytes, modification
    /// time), passages, analyzer, tantivy and mt versions of the build, built-at.
    pub(crate) fn describe(&self) -> serde_json::Value {
        let m = &self.manifest;
        serde_json::json!({
            "index": std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone()),
            "corpus": m.corpus,
            "passages": self.len(),
            "built_at": m.built_at,
            "analyzer": m.analyzer,
            "format": m.format,
            "tantivy": m.tantivy,
            "mt": m.mt,
        })
    }

    /// Warns when the corpus files changed since the build (a folder is opened as is).
    fn warn_if_stale(&self) {
        let now: Result<Vec<CorpusFile>> = self
            .manifest
            .corpus
            .iter()
            .map(|f| CorpusFile::stat(&f.path))
            .collect();
        if let Some(why) = now.ok().and_then(|now| self.manifest.stale_reason(&now)) {
            tracing::warn!(
                "{}: the corpus changed since this index was built ({why}); rebuild it with \
                 `mt convert knowledge-index`",
                self.dir.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::knowledge::build::tests::{corpus, line};

    /// An index of `lines` (built beside them in a temporary folder).
    fn index(lines: &[String]) -> (tempfile::TempDir, KnowledgeIndex) {
        let (dir, path) = corpus(lines);
        let index = KnowledgeIndex::open_or_build(&path).unwrap();
        (dir, index)
    }

    fn ids(hits: &[Hit]) -> Vec<&str> {
        hits.iter().map(|h| h.id.as_str()).collect()
    }

    /// Twenty ordinary chest CT passages and one about a rare finding.
    fn filler() -> Vec<String> {
        let mut lines: Vec<String> = (0..20)
            .map(|i| {
                line(
                    &format!("f{i}"),
                    "Chest CT",
                    "CT of the chest shows the lung with a small nodule in the upper lobe.",
                )
            })
            .collect();
        lines.push(line(
            "rare",
            "Bowel wall gas",
            "CT of the abdomen shows pneumatosis intestinalis with portal venous gas.",
        ));
        lines
    }

    #[test]
    fn rare_exact_terms_rank_first_and_stems_match() {
        let (_dir, index) = index(&filler());
        assert_eq!(index.len(), 21);
        let hits = index
            .search("CT chest pneumatosis intestinalis", 3)
            .unwrap();
        assert_eq!(hits[0].id, "rare");
        assert_eq!(hits[0].title, "Bowel wall gas");
        assert!(hits[0].text.starts_with("CT of the abdomen"));
        assert!(hits[0].score > hits[1].score);
        // "nodules" and "Lungs" stem to the words of the text.
        let hits = index.search("Nodules Lungs", 100).unwrap();
        assert_eq!(hits.len(), 20);
        assert!(!ids(&hits).contains(&"rare"));
    }

    #[test]
    fn stemming_finds_tumor_for_tumors() {
        let (_dir, index) = index(&[
            line("t", "", "A benign tumor of the liver."),
            line("o", "", "A benign cyst of the kidney."),
        ]);
        assert_eq!(ids(&index.search("tumors", 5).unwrap()), ["t"]);
        assert_eq!(ids(&index.search("Tumorous LIVERS", 5).unwrap()), ["t"]);
    }

    #[test]
    fn title_words_outrank_the_same_words_in_text() {
        let (_dir, index) = index(&[
            line("in-text", "Liver lesion", "benign hepatic adenoma seen"),
            line("in-title", "Hepatic adenoma", "benign liver lesion seen"),
            line("other", "Kidney", "simple renal cyst seen"),
        ]);
        let hits = index.search("hepatic adenoma", 5).unwrap();
        assert_eq!(ids(&hits), ["in-title", "in-text"]);
        assert!(hits[0].score > 1.5 * hits[1].score, "{hits:?}");
    }

    #[test]
    fn any_query_text_is_accepted() {
        let (_dir, index) = index(&filler());
        let long = "liver ".repeat(20_000);
        for q in [
            "AND OR ( ) : ^ * ~ \" [ ]",
            "",
            "   \t\n",
            "the of and a",
            "title:lung^100 AND -chest +nodule~2 \"upper lobe\" [a TO z] *",
            "\u{0}\u{7f}\\",
            "肺 结节 🫁 ﬁbrosis Ünïcödé ملاحظة",
            long.as_str(),
        ] {
            let hits = index.search(q, 5);
            assert!(hits.is_ok(), "{q:?}: {:?}", hits.err());
        }
        assert!(index.search("", 5).unwrap().is_empty());
        assert!(index.search("the of and a", 5).unwrap().is_empty());
        assert!(
            index
                .search("AND OR ( ) : ^ * ~ \" [ ]", 5)
                .unwrap()
                .is_empty()
        );
        // Query syntax is plain words here: `title:lung^100` looks for "titl" and "lung".
        let hits = index.search("title:lung^100", 5).unwrap();
        assert_eq!(hits.len(), 5);
        assert!(index.search("lung", 0).unwrap().is_empty());
        assert_eq!(index.search("lung", usize::MAX).unwrap().len(), 20);
    }

    #[test]
    fn equal_scores_rank_in_corpus_order() {
        let same = "identical passage about the pancreas";
        let (_dir, index) = index(&[
            line("c", "", same),
            line("a", "", same),
            line("b", "", same),
        ]);
        assert_eq!(ids(&index.search("pancreas", 3).unwrap()), ["c", "a", "b"]);
    }

    #[test]
    fn searches_run_from_many_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<KnowledgeIndex>();
        let (_dir, index) = index(&filler());
        let expected = index.search("pneumatosis lung", 5).unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        assert_eq!(index.search("pneumatosis lung", 5).unwrap(), expected);
                    }
                });
            }
        });
    }

    #[test]
    fn describe_records_where_the_passages_come_from() {
        let (dir, index) = index(&filler());
        let d = index.describe();
        assert_eq!(d["passages"], 21);
        assert_eq!(d["analyzer"], schema::ANALYZER);
        assert_eq!(d["format"], super::super::manifest::FORMAT);
        assert!(d["tantivy"].as_str().unwrap().contains("tantivy"));
        let corpus = std::fs::canonicalize(dir.path().join("c.jsonl")).unwrap();
        assert_eq!(d["corpus"][0]["path"], corpus.display().to_string());
        assert!(d["corpus"][0]["bytes"].as_u64().unwrap() > 0);
        assert!(d["index"].as_str().unwrap().ends_with("c.jsonl.bm25"));
        assert!(d["built_at"].as_str().unwrap().ends_with('Z'));
    }
}
