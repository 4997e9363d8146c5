//! Synthetic knowledge corpus and query timing for `medtrinity::core::knowledge`
//! (bench/knowledge.sh):
//!
//! ```text
//! cargo run --release --example knowledge_bench -- gen N CORPUS.jsonl
//! cargo run --release --example knowledge_bench -- query INDEX_DIR [QUERIES] [K]
//! ```
//!
//! `gen` writes N passages `{id, title, text, source}`, deterministic (a fixed seed): a
//! title of 3-8 medical words and a text of 60-120 words drawn from a Zipf law (s = 1)
//! over ~40,000 words: English function words first, then modality, organ, disease and
//! finding words, then made-up words for the long tail.
//!
//! `query` opens the index and times QUERIES (default 2000) pipeline-like queries of 5-12
//! words (a coarse caption's modality, organ, disease and finding words, with some stop
//! words) at top-K (default 5), one after another on one thread, stored passages read
//! included, after 200 warm-up queries. Prints `queries_per_s p50_ms p99_ms mean_hits
//! checksum`, the checksum being FNV-1a 64 over every query's hit ids.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use medtrinity::core::hash::mix64;
use medtrinity::core::knowledge::KnowledgeIndex;

// Word groups, space-separated.
const STOP: &str = "the of and in with a to is was for on by as at from or are be this that \
    which may not no an";
const MODALITY: &str = "ct mri radiograph ultrasound pet mammography angiography fluoroscopy \
    endoscopy colonoscopy dermoscopy fundus histopathology cytology microscopy \
    echocardiography scintigraphy spect tomography oct";
const ORGAN: &str = "brain lung liver kidney heart spleen pancreas stomach colon bladder \
    prostate breast thyroid bone spine knee hip skin eye retina chest abdomen pelvis esophagus \
    gallbladder adrenal uterus ovary lymph aorta cerebellum duodenum trachea mediastinum femur";
const DISEASE: &str = "carcinoma adenocarcinoma pneumonia fibrosis cirrhosis hemorrhage \
    infarction stenosis aneurysm metastasis lymphoma melanoma glioma meningioma nodule cyst \
    abscess edema effusion fracture tuberculosis sarcoidosis emphysema atelectasis hepatitis \
    nephritis calculus thrombosis embolism ischemia tumor lesion mass polyp ulcer inflammation \
    adenoma hemangioma pneumothorax hydronephrosis";
const FINDING: &str = "opacity enhancement hyperintense hypodense consolidation calcification \
    thickening dilation infiltrate density signal contrast margin irregular defined \
    heterogeneous homogeneous diffuse focal bilateral left right upper lower lobe region \
    segment wall patient image showing shows seen large small central peripheral posterior \
    anterior lateral medial normal abnormal suggestive consistent";
const SOURCES: &str = "pubmed radiopaedia textbook wikipedia guideline";
const TAIL_WORDS: usize = 40_000;
const SEED: u64 = 0x6b6e_6f77;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: usize| -> Result<usize> {
        args.get(i).map_or(Ok(default), |s| {
            s.parse().with_context(|| format!("`{s}` is not a number"))
        })
    };
    match args.first().map(String::as_str) {
        Some("gen") if args.len() == 3 => generate(arg(1, 0)?, Path::new(&args[2])),
        Some("query") if args.len() >= 2 => query(Path::new(&args[1]), arg(2, 2000)?, arg(3, 5)?),
        _ => bail!("usage: knowledge_bench gen N CORPUS.jsonl | query INDEX_DIR [QUERIES] [K]"),
    }
}

/// A splitmix64 stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix64(self.0)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[self.below(words.len())]
    }
}

/// The word groups, split into words.
struct Groups {
    stop: Vec<&'static str>,
    modality: Vec<&'static str>,
    organ: Vec<&'static str>,
    disease: Vec<&'static str>,
    finding: Vec<&'static str>,
    sources: Vec<&'static str>,
}

impl Groups {
    fn new() -> Self {
        let words = |s: &'static str| s.split_whitespace().collect();
        Groups {
            stop: words(STOP),
            modality: words(MODALITY),
            organ: words(ORGAN),
            disease: words(DISEASE),
            finding: words(FINDING),
            sources: words(SOURCES),
        }
    }

    /// The four groups a caption's words come from.
    fn medical(&self) -> [&[&'static str]; 4] {
        [&self.modality, &self.organ, &self.disease, &self.finding]
    }
}

/// The vocabulary in rank order and its cumulative Zipf weights.
struct Zipf {
    words: Vec<String>,
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(groups: &Groups) -> Self {
        let mut words: Vec<String> = groups.stop.iter().map(|w| w.to_string()).collect();
        let mut medical: Vec<&str> = groups.medical().concat();
        // A fixed shuffle, so each group spreads over the head of the distribution.
        let mut rng = Rng(SEED);
        for i in (1..medical.len()).rev() {
            medical.swap(i, rng.below(i + 1));
        }
        words.extend(medical.iter().map(|w| w.to_string()));
        const SYLLABLES: &[&str] = &[
            "ka", "lo", "mi", "ne", "ra", "su", "ti", "vo", "xe", "zy", "bra", "cho", "dri", "fen",
            "gly", "hex", "ost", "path", "sarc", "troph",
        ];
        for i in 0..TAIL_WORDS {
            let mut x = i + 1;
            let mut w = String::new();
            while x > 0 {
                w.push_str(SYLLABLES[x % SYLLABLES.len()]);
                x /= SYLLABLES.len();
            }
            w.push_str("ic");
            words.push(w);
        }
        let mut total = 0.0;
        let cumulative = (1..=words.len())
            .map(|rank| {
                total += 1.0 / rank as f64;
                total
            })
            .collect();
        Zipf { words, cumulative }
    }

    fn sample(&self, rng: &mut Rng) -> &str {
        let total = self.cumulative[self.cumulative.len() - 1];
        let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * total;
        let i = self.cumulative.partition_point(|&c| c < u);
        &self.words[i.min(self.words.len() - 1)]
    }
}

fn generate(n: usize, out: &Path) -> Result<()> {
    let groups = Groups::new();
    let zipf = Zipf::new(&groups);
    let mut rng = Rng(SEED ^ 1);
    let mut w = BufWriter::with_capacity(
        1 << 20,
        File::create(out).with_context(|| format!("cannot create {}", out.display()))?,
    );
    let mut text = String::new();
    let mut title = String::new();
    for i in 0..n {
        title.clear();
        for j in 0..3 + rng.below(6) {
            if j > 0 {
                title.push(' ');
            }
            let group = groups.medical()[rng.below(4)];
            title.push_str(rng.pick(group));
        }
        text.clear();
        let words = 60 + rng.below(61);
        for j in 0..words {
            if j > 0 {
                text.push_str(if j % 13 == 0 { ". " } else { " " });
            }
            text.push_str(zipf.sample(&mut rng));
        }
        text.push('.');
        let source = rng.pick(&groups.sources);
        writeln!(
            w,
            r#"{{"id":"kb-{i:07}","title":"{title}","text":"{text}","source":"{source}"}}"#
        )?;
    }
    w.flush()?;
    Ok(())
}

/// A query the caption pipeline could build: modality, organ(s), disease(s), findings.
fn pipeline_query(groups: &Groups, rng: &mut Rng) -> String {
    let mut words = vec![rng.pick(&groups.modality), rng.pick(&groups.organ)];
    let len = 5 + rng.below(8);
    while words.len() < len {
        let group = match rng.below(6) {
            0 => &groups.stop,
            1 => &groups.organ,
            2 | 3 => &groups.disease,
            _ => &groups.finding,
        };
        words.push(rng.pick(group));
    }
    words.join(" ")
}

fn query(dir: &Path, queries: usize, k: usize) -> Result<()> {
    let index = KnowledgeIndex::open(dir)?;
    let groups = Groups::new();
    let mut rng = Rng(SEED ^ 2);
    for _ in 0..200 {
        index.search(&pipeline_query(&groups, &mut rng), k)?;
    }
    let texts: Vec<String> = (0..queries)
        .map(|_| pipeline_query(&groups, &mut rng))
        .collect();
    let mut latencies = Vec::with_capacity(queries);
    let mut hits = 0usize;
    let mut checksum: u64 = 0xcbf2_9ce4_8422_2325;
    let started = Instant::now();
    for q in &texts {
        let t = Instant::now();
        let found = index.search(q, k)?;
        latencies.push(t.elapsed().as_secs_f64());
        hits += found.len();
        for b in found.iter().flat_map(|h| h.id.bytes().chain([b'\n'])) {
            checksum = (checksum ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize] * 1e3;
    println!(
        "{:.1} {:.3} {:.3} {:.2} {checksum:016x}",
        queries as f64 / secs,
        at(0.5),
        at(0.99),
        hits as f64 / queries.max(1) as f64
    );
    Ok(())
}
