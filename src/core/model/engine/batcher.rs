//! Continuous batching: one loaded model answers many conversations at once. Requests
//! wait in a bounded queue and join the running batch between decoding steps. A joining
//! sequence's prompt runs alone into its own cache, which is then copied into a row of
//! the cache the batch shares; every row keeps its own length, so sequences of any
//! length decode together, each product (attention included) once for the batch, a mask
//! hiding each row's slots past its length ([`Llama::decode_slots`]). A sequence leaves
//! when it ends, when its client goes away, or at its deadline; the last row moves into
//! its place, and the shared cache grows (rows, slots) as needed and is freed when the
//! batch empties. The template's system prompt before the image is computed once and
//! every prompt that starts with it starts from its cache.
//!
//! [`Llama::decode_slots`]: crate::core::model::arch::llama::Llama::decode_slots

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Instant;

use anyhow::Result;
use candle_core::Tensor;
use image::DynamicImage;
use tokio::sync::mpsc::UnboundedSender;

use crate::core::model::arch::llama::KvCache;
use crate::core::model::arch::llava::{Piece, skip_prefix};
use crate::core::model::engine::captioner::Captioner;
use crate::core::model::engine::generate::{Finish, GenerationConfig, Sampler, prefill, stop_at};
use crate::core::model::engine::prompt::prompt_len;
use crate::core::model::kernels;

/// Slots a joining sequence gets beyond its prompt in the batch's cache; it doubles when
/// full.
const FIRST_ROOM: usize = 128;

/// One request: a conversation and how to answer it.
pub(crate) struct Ask {
    /// The image the conversation is about (none: text alone).
    pub image: Option<DynamicImage>,
    /// The user's messages and the assistant's answers alternating, the user's last.
    pub messages: Vec<String>,
    /// The system message in place of the template's.
    pub system: Option<String>,
    /// Decoding settings.
    pub sampling: Sampling,
    /// When the answer is cut off with [`Failure::Timeout`].
    pub deadline: Option<Instant>,
    /// Where the answer goes; dropping the receiver cancels the request.
    pub events: UnboundedSender<Event>,
}

impl Ask {
    /// A request with no system message of its own and no deadline.
    pub(crate) fn plain(
        image: Option<DynamicImage>,
        messages: Vec<String>,
        sampling: Sampling,
        events: UnboundedSender<Event>,
    ) -> Self {
        Self {
            image,
            messages,
            system: None,
            sampling,
            deadline: None,
            events,
        }
    }
}

/// One request's decoding settings.
#[derive(Debug, Clone)]
pub(crate) struct Sampling {
    /// Most tokens generated.
    pub max_tokens: usize,
    /// 0 = greedy.
    pub temperature: f64,
    /// 1.0 = off.
    pub top_p: f64,
    /// 0 = off.
    pub top_k: usize,
    /// The sampling stream.
    pub seed: u64,
    /// Texts that end the answer (left out of it), besides the template's.
    pub stop: Vec<String>,
    /// Go on past the end-of-sequence tokens (benchmarks).
    pub ignore_eos: bool,
}

/// What a request's client hears, in order: `Started`, `Text`s, then `Done` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// The prompt ran; it has this many tokens (image rows included).
    Started { prompt_tokens: usize },
    /// More of the answer.
    Text(String),
    /// The answer is complete.
    Done {
        /// Why it ended.
        finish: Finish,
        /// Tokens generated (a stop token left out).
        completion_tokens: usize,
    },
    /// The request ended without an answer.
    Failed(Failure),
}

/// Why a request ended without an answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum Failure {
    /// The request cannot be answered as it is (the message says why).
    #[error("{0}")]
    Invalid(String),
    /// Its deadline passed.
    #[error("the answer took longer than allowed")]
    Timeout,
    /// The model failed.
    #[error("{0}")]
    Internal(String),
}

/// Requests waiting and running, for health checks and admission.
#[derive(Debug, Default)]
pub(crate) struct Load {
    /// In the queue.
    pub queued: AtomicUsize,
    /// In the running batch.
    pub running: AtomicUsize,
}

/// The model and its running batch.
pub(crate) struct Batcher {
    captioner: Captioner,
    max_batch: usize,
    /// The template's text before the image and its one-row cache.
    prefix: Option<(Vec<u32>, KvCache)>,
}

/// A conversation's cache kept from turn to turn (`mt chat`): a new turn runs only what
/// follows the part of its prompt the cache holds.
#[derive(Default)]
pub(crate) struct Session {
    cache: Option<KvCache>,
    /// What the cache's slots hold ([`keys_of`]).
    keys: Vec<i64>,
}

impl Session {
    /// Forgets the conversation (a new image, `/reset`).
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }
}

/// One answer of [`Batcher::answer_in`].
#[derive(Debug, Default)]
pub(crate) struct Answer {
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Why it ended (none: stopped by the caller).
    pub finish: Option<Finish>,
    /// Prompt tokens taken from the cache instead of run.
    pub reused: usize,
}

/// The key of an image row in [`keys_of`].
const IMAGE_KEY: i64 = -1;

/// A prompt as the cache sees it: a key per slot, the token id or [`IMAGE_KEY`].
fn keys_of(pieces: &[Piece], image_tokens: usize) -> Vec<i64> {
    let mut keys = Vec::with_capacity(prompt_len(pieces, image_tokens));
    for piece in pieces {
        match piece {
            Piece::Text(ids) => keys.extend(ids.iter().map(|&t| i64::from(t))),
            Piece::Image => keys.extend(std::iter::repeat_n(IMAGE_KEY, image_tokens)),
        }
    }
    keys
}

/// The running batch: its sequences and the cache they share, row `b` holding `seqs[b]`.
#[derive(Default)]
struct Batch {
    seqs: Vec<Sequence>,
    cache: Option<KvCache>,
}

/// One running answer.
struct Sequence {
    /// Tokens in its cache row.
    len: usize,
    /// What the cache's prompt slots hold ([`keys_of`]).
    keys: Vec<i64>,
    /// Prompt tokens taken from a cache instead of run.
    reused: usize,
    events: UnboundedSender<Event>,
    sampler: Sampler,
    settings: GenerationConfig,
    stop: Vec<String>,
    deadline: Option<Instant>,
    tokens: Vec<u32>,
    /// Bytes of the answer's text already sent.
    sent: usize,
    done: bool,
}

impl Batcher {
    /// A batcher of at most `max_batch` running answers over `captioner`'s model; runs
    /// the template's system prompt once.
    pub(crate) fn new(captioner: Captioner, max_batch: usize) -> Result<Self> {
        let pieces = captioner
            .codec
            .encode_prompt_with(&captioner.format.chat_prompt(&["?"])?, captioner.tokens)?;
        let prefix = match pieces.as_slice() {
            [Piece::Text(ids), Piece::Image, ..] if !ids.is_empty() => {
                let device = captioner.model.llm.embed.device();
                let cache = kernels::inference(device, || captioner.model.llm.prefix_cache(ids))?;
                Some((ids.clone(), cache))
            }
            _ => None,
        };
        Ok(Self {
            captioner,
            max_batch: max_batch.max(1),
            prefix,
        })
    }

    /// The model's name.
    pub(crate) fn model_name(&self) -> &str {
        &self.captioner.model_name
    }

    /// Answers the requests of `asks` until it closes and every running answer has ended.
    pub(crate) fn run(&self, asks: &Receiver<Ask>, load: &Arc<Load>) {
        let mut batch = Batch::default();
        let mut open = true;
        while open || !batch.seqs.is_empty() {
            while open && batch.seqs.len() < self.max_batch {
                let next = if batch.seqs.is_empty() {
                    asks.recv().map_err(|_| TryRecvError::Disconnected)
                } else {
                    asks.try_recv()
                };
                let ask = match next {
                    Ok(ask) => ask,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                };
                load.queued.fetch_sub(1, Ordering::SeqCst);
                if let Some((seq, own)) = self.admit(ask) {
                    let events = seq.events.clone();
                    if let Err(e) = self.join(&mut batch, seq, &own) {
                        let why = Failure::Internal(format!("{e:#}"));
                        let _ = events.send(Event::Failed(why));
                    }
                }
            }
            load.running.store(batch.seqs.len(), Ordering::SeqCst);
            if batch.seqs.is_empty() {
                batch.cache = None;
                continue;
            }
            if let Err(e) = self.step(&mut batch) {
                let why = format!("{e:#}");
                tracing::error!(error = %why, "decoding step failed");
                for seq in batch.seqs.drain(..) {
                    let failure = Failure::Internal(why.clone());
                    let _ = seq.events.send(Event::Failed(failure));
                }
                batch.cache = None;
            }
            load.running.store(batch.seqs.len(), Ordering::SeqCst);
        }
        load.running.store(0, Ordering::SeqCst);
    }

    /// Runs a request's prompt and takes its first token; `None` when it ended already
    /// (cancelled, past its deadline, failed, or done in one token). The sequence comes
    /// with the cache of its prompt.
    fn admit(&self, ask: Ask) -> Option<(Sequence, KvCache)> {
        if ask.events.is_closed() {
            return None;
        }
        if ask.deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = ask.events.send(Event::Failed(Failure::Timeout));
            return None;
        }
        let events = ask.events.clone();
        match self.start(ask, None) {
            Ok((seq, own)) => Some((seq, own)).filter(|(s, _)| !s.done),
            Err(failure) => {
                let _ = events.send(Event::Failed(failure));
                None
            }
        }
    }

    /// Puts a started sequence (its prompt's cache `own`) in the batch's next row,
    /// growing the shared cache when it lacks a row or slots.
    fn join(&self, batch: &mut Batch, seq: Sequence, own: &KvCache) -> Result<()> {
        let row = batch.seqs.len();
        // A running sequence has at least one token left.
        let need = seq.len + seq.left().min(FIRST_ROOM);
        let longest = batch.seqs.iter().map(|s| s.len).max().unwrap_or(0);
        let (rows, capacity) = batch
            .cache
            .as_ref()
            .map_or((0, 0), |c| (c.rows(), c.capacity()));
        if row >= rows || need > capacity {
            let rows = if row >= rows {
                (rows * 2).clamp(row + 1, self.max_batch)
            } else {
                rows
            };
            let capacity = capacity.max(need);
            batch.cache = Some(match &batch.cache {
                Some(cache) => cache.regrown(rows, capacity, row, longest)?,
                None => own.regrown(rows, capacity, 0, 0)?,
            });
        }
        let cache = batch.cache.as_mut().expect("made above");
        cache.copy_row(row, own, 0, seq.len)?;
        batch.seqs.push(seq);
        Ok(())
    }

    /// The prompt of `ask`, its prefill, and its first token. The prompt's start that
    /// `session`'s cache holds (else the template's system prompt) is not run again.
    fn start(
        &self,
        ask: Ask,
        session: Option<&Session>,
    ) -> std::result::Result<(Sequence, KvCache), Failure> {
        let c = &self.captioner;
        let invalid = |e: anyhow::Error| Failure::Invalid(format!("{e:#}"));
        let internal = |e: anyhow::Error| Failure::Internal(format!("{e:#}"));
        let pieces = c
            .conversation_pieces(&ask.messages, ask.system.as_deref(), ask.image.is_some())
            .map_err(invalid)?;
        let image_tokens = c.model.cfg.image_tokens();
        let prompt_tokens = prompt_len(&pieces, image_tokens);
        let images = pieces.iter().filter(|p| **p == Piece::Image).count();
        if images != usize::from(ask.image.is_some()) {
            return Err(Failure::Invalid(format!(
                "the prompt has {images} image placeholders for {} images",
                usize::from(ask.image.is_some())
            )));
        }
        let context = c.model.cfg.text.max_position_embeddings;
        if prompt_tokens + 1 > context {
            return Err(Failure::Invalid(format!(
                "the prompt has {prompt_tokens} tokens (the image's {image_tokens} included); \
                 the model's context is {context}"
            )));
        }
        let keys = keys_of(&pieces, image_tokens);
        let (reused, past) = self.reusable(session, &keys, image_tokens);
        let rest = skip_prefix(&pieces, past, image_tokens);
        let device = c.model.llm.embed.device();
        let features = match &ask.image {
            Some(image) if rest.contains(&Piece::Image) => {
                let plane = c
                    .processor
                    .planes(&[image])
                    .pop()
                    .expect("one plane per image")
                    .map_err(invalid)?;
                let features = c.image_features(vec![plane]).map_err(internal)?;
                vec![features.get(0).map_err(|e| internal(e.into()))?]
            }
            _ => Vec::new(),
        };
        let limit = context - prompt_tokens;
        let max_tokens = ask.sampling.max_tokens.min(limit);
        let (cache, logits) = kernels::inference(device, || {
            let own = c.model.embed_prompt(&rest, &features)?;
            let batch = c.model.left_pad_after(past, &[own])?;
            // No room after the prompt: this cache is copied into the batch's.
            prefill(&c.model, &batch, reused, 0)
        })
        .map_err(internal)?;
        let logits = logits
            .get(0)
            .and_then(|l| l.to_vec1::<f32>())
            .map_err(|e| internal(e.into()))?;
        let s = &ask.sampling;
        let settings = GenerationConfig {
            max_new_tokens: max_tokens,
            temperature: s.temperature,
            top_p: s.top_p,
            top_k: s.top_k,
            stop_tokens: match s.ignore_eos {
                true => Vec::new(),
                false => c.decoding.stop_tokens.clone(),
            },
        };
        let mut stop = s.stop.clone();
        if !s.ignore_eos {
            stop.extend(c.stop_strings.iter().cloned());
        }
        stop.retain(|s| !s.is_empty());
        let _ = ask.events.send(Event::Started { prompt_tokens });
        let mut seq = Sequence {
            len: cache.len(),
            keys,
            reused: past,
            events: ask.events,
            sampler: Sampler::new(&settings, s.seed),
            settings,
            stop,
            deadline: ask.deadline,
            tokens: Vec::new(),
            sent: 0,
            done: false,
        };
        let first = seq.sampler.next(&logits);
        seq.accept(first, c).map_err(internal)?;
        Ok((seq, cache))
    }

    /// The cache a prompt (as `keys`) starts from and how many of its tokens that cache
    /// holds already: the session's, as far as it agrees (never into an image, never the
    /// whole prompt), else the template's system prompt when the prompt starts with it.
    fn reusable<'a>(
        &'a self,
        session: Option<&'a Session>,
        keys: &[i64],
        image_tokens: usize,
    ) -> (Option<&'a KvCache>, usize) {
        if let Some((cache, held)) = session.and_then(|s| Some((s.cache.as_ref()?, &s.keys))) {
            let mut n = held.iter().zip(keys).take_while(|(a, b)| a == b).count();
            n = n.min(keys.len() - 1);
            // Back to the image's start when the agreement ends inside it.
            if let Some(start) = keys.iter().position(|&k| k == IMAGE_KEY)
                && (start..start + image_tokens).contains(&n)
            {
                n = start;
            }
            if n > 0 {
                return (Some(cache), n);
            }
        }
        match &self.prefix {
            Some((ids, cache))
                if keys.len() > ids.len()
                    && ids.iter().zip(keys).all(|(&id, &k)| i64::from(id) == k) =>
            {
                (Some(cache), ids.len())
            }
            _ => (None, 0),
        }
    }

    /// Answers one conversation in `session`, whose cache of the earlier turns saves
    /// running them again, and keeps the cache of this turn for the next. `on_text` sees
    /// the answer as it is written and returns false to stop it where it is.
    pub(crate) fn answer_in(
        &self,
        session: &mut Session,
        image: Option<DynamicImage>,
        messages: Vec<String>,
        sampling: Sampling,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> std::result::Result<Answer, Failure> {
        let (events, mut heard) = tokio::sync::mpsc::unbounded_channel();
        let ask = Ask::plain(image, messages, sampling, events);
        let internal = |e: anyhow::Error| Failure::Internal(format!("{e:#}"));
        let (seq, own) = self.start(ask, Some(session))?;
        let mut batch = Batch::default();
        let mut ended = None;
        match seq.done {
            true => ended = Some(seq),
            false => self.join(&mut batch, seq, &own).map_err(internal)?,
        }
        let mut answer = Answer::default();
        let mut listen = |answer: &mut Answer| -> std::result::Result<bool, Failure> {
            while let Ok(event) = heard.try_recv() {
                match event {
                    Event::Started { prompt_tokens } => answer.prompt_tokens = prompt_tokens,
                    Event::Text(t) => {
                        answer.text.push_str(&t);
                        if !on_text(&t) {
                            return Ok(false);
                        }
                    }
                    Event::Done {
                        finish,
                        completion_tokens,
                    } => {
                        answer.finish = Some(finish);
                        answer.completion_tokens = completion_tokens;
                    }
                    Event::Failed(f) => return Err(f),
                }
            }
            Ok(true)
        };
        while listen(&mut answer)? && !batch.seqs.is_empty() {
            ended = self.step(&mut batch).map_err(internal)?.pop().or(ended);
        }
        // Stopped by `on_text`: the sequence is still running.
        let seq = match ended {
            Some(seq) => seq,
            None => batch.seqs.pop().expect("the running sequence"),
        };
        // What the cache holds: the prompt and every answer token fed back so far.
        let cache = match &batch.cache {
            Some(shared) => shared.row(0, seq.len).map_err(internal)?,
            None => own,
        };
        answer.reused = seq.reused;
        if answer.finish.is_none() {
            answer.completion_tokens = seq.tokens.len();
        }
        let mut keys = seq.keys;
        let fed = cache.len() - keys.len();
        keys.extend(seq.tokens[..fed].iter().map(|&t| i64::from(t)));
        session.keys = keys;
        session.cache = Some(cache);
        Ok(answer)
    }

    /// One decoding step of every running sequence. The ones that end (or whose client
    /// left, or whose deadline passed) leave the batch, the last rows taking their places;
    /// they are returned.
    fn step(&self, batch: &mut Batch) -> Result<Vec<Sequence>> {
        let now = Instant::now();
        for seq in &mut batch.seqs {
            if seq.events.is_closed() {
                seq.done = true;
            } else if seq.deadline.is_some_and(|d| now >= d) {
                let _ = seq.events.send(Event::Failed(Failure::Timeout));
                seq.done = true;
            }
        }
        let mut gone = batch.leave_done()?;
        let Some(cache) = batch.cache.as_mut().filter(|_| !batch.seqs.is_empty()) else {
            return Ok(gone);
        };
        let lens: Vec<usize> = batch.seqs.iter().map(|s| s.len).collect();
        let longest = lens.iter().copied().max().unwrap_or(0);
        if longest + 1 > cache.capacity() {
            let want = batch
                .seqs
                .iter()
                .map(|s| s.len + s.left())
                .max()
                .unwrap_or(0);
            let capacity = (cache.capacity() * 2).min(want).max(longest + 1);
            *cache = cache.regrown(cache.rows(), capacity, lens.len(), longest)?;
        }
        let model = &self.captioner.model;
        let device = model.llm.embed.device();
        let next: Vec<u32> = batch
            .seqs
            .iter()
            .map(|s| *s.tokens.last().expect("a running sequence has a token"))
            .collect();
        let rows = next.len();
        kernels::inference(device, || {
            let x = model
                .llm
                .embed_ids(&Tensor::from_vec(next, (rows, 1), device)?)?;
            let hidden = model.llm.decode_slots(&x, cache, &lens)?;
            let logits = model.llm.logits(&hidden.squeeze(1)?)?.to_vec2::<f32>()?;
            for (seq, row) in batch.seqs.iter_mut().zip(&logits) {
                seq.len += 1;
                let token = seq.sampler.next(row);
                seq.accept(token, &self.captioner)?;
            }
            Ok::<_, anyhow::Error>(())
        })?;
        gone.extend(batch.leave_done()?);
        Ok(gone)
    }
}

impl Batch {
    /// Takes the sequences that are done out, moving the last rows into their places.
    fn leave_done(&mut self) -> Result<Vec<Sequence>> {
        let mut gone = Vec::new();
        let mut row = 0;
        while row < self.seqs.len() {
            if !self.seqs[row].done {
                row += 1;
                continue;
            }
            let last = self.seqs.len() - 1;
            if row != last
                && let Some(cache) = self.cache.as_mut()
            {
                cache.move_row(last, row, self.seqs[last].len)?;
            }
            gone.push(self.seqs.swap_remove(row));
        }
        Ok(gone)
    }
}

impl Sequence {
    /// Tokens it may still generate.
    fn left(&self) -> usize {
        self.settings
            .max_new_tokens
            .saturating_sub(self.tokens.len())
    }

    /// Takes the next token: sends the text it completes, or ends the answer (a stop
    /// token, a stop text, or the length limit) with the rest of the text, cut at the
    /// first stop text.
    fn accept(&mut self, token: u32, c: &Captioner) -> Result<()> {
        let stop_token = self.settings.stop_tokens.contains(&token);
        if !stop_token {
            self.tokens.push(token);
        }
        let decoded = c.codec.decode(&self.tokens)?;
        let text = decoded.trim_start();
        let cut = stop_at(text, &self.stop);
        let finish = if stop_token || cut.is_some() {
            Some(Finish::Stop)
        } else {
            Some(Finish::Length).filter(|_| self.left() == 0)
        };
        if let Some(finish) = finish {
            self.send_text(text, cut.unwrap_or(text.len()));
            let _ = self.events.send(Event::Done {
                finish,
                completion_tokens: self.tokens.len(),
            });
            self.done = true;
            return Ok(());
        }
        // Hold back an unfinished character and what may be the start of a stop text.
        let held = self
            .stop
            .iter()
            .flat_map(|s| {
                (1..s.len()).filter(|&n| s.is_char_boundary(n) && text.ends_with(&s[..n]))
            })
            .max()
            .unwrap_or(0);
        let mut end = text.len() - held;
        if text[..end].ends_with('\u{FFFD}') {
            end -= '\u{FFFD}'.len_utf8();
        }
        self.send_text(text, end);
        Ok(())
    }

    /// Sends `text[sent..end]` when there is any.
    fn send_text(&mut self, text: &str, end: usize) {
        if end > self.sent && text.is_char_boundary(self.sent) && text.is_char_boundary(end) {
            let _ = self
                .events
                .send(Event::Text(text[self.sent..end].to_string()));
            self.sent = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use candle_core::{DType, Device};

    use super::*;
    use crate::core::model::engine::captioner::CaptionInput;
    use crate::core::model::load::checkpoint::Checkpoint;

    fn captioner(max_new_tokens: usize) -> Captioner {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/models/tiny-llava-hf");
        let ckpt = Checkpoint::open(&dir, None, &Device::Cpu, DType::F32).unwrap();
        let decoding = GenerationConfig {
            max_new_tokens,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            stop_tokens: Vec::new(),
        };
        Captioner::new(ckpt, "", decoding, Vec::new(), true, 0, None).unwrap()
    }

    fn picture(name: &str) -> DynamicImage {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/images")
            .join(name);
        image::open(path).unwrap()
    }

    /// Greedy decoding of at most `max_tokens`.
    fn greedy(max_tokens: usize, ignore_eos: bool) -> Sampling {
        Sampling {
            max_tokens,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
            stop: Vec::new(),
            ignore_eos,
        }
    }

    /// (image, messages, max_tokens) of the test conversations.
    fn conversations() -> Vec<(Option<DynamicImage>, Vec<String>, usize)> {
        let texts = |m: &[&str]| m.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        vec![
            (Some(picture("phantom.png")), texts(&["What is shown?"]), 5),
            (
                Some(picture("retina.jpg")),
                texts(&["Describe it.", "A scan.", "Which organ?"]),
                11,
            ),
            (None, texts(&["Hello there"]), 7),
            (Some(picture("cell.png")), texts(&["Any lesion?"]), 3),
        ]
    }

    /// Every conversation's answer and completion tokens, with at most `max_batch` at once.
    fn answers(batcher: &Batcher, ignore_eos: bool) -> Vec<(String, usize)> {
        let (asks, queue) = std::sync::mpsc::sync_channel(16);
        let mut receivers = Vec::new();
        let load = Arc::new(Load::default());
        for (image, messages, max_tokens) in conversations() {
            let (events, receiver) = tokio::sync::mpsc::unbounded_channel();
            let sampling = greedy(max_tokens, ignore_eos);
            load.queued.fetch_add(1, Ordering::SeqCst);
            asks.send(Ask::plain(image, messages, sampling, events))
                .unwrap();
            receivers.push(receiver);
        }
        drop(asks);
        batcher.run(&queue, &load);
        receivers
            .into_iter()
            .map(|mut r| {
                let (mut text, mut tokens) = (String::new(), None);
                while let Ok(event) = r.try_recv() {
                    match event {
                        Event::Text(t) => text.push_str(&t),
                        Event::Done {
                            completion_tokens, ..
                        } => tokens = Some(completion_tokens),
                        Event::Started { .. } => {}
                        Event::Failed(f) => panic!("{f:?}"),
                    }
                }
                (text, tokens.expect("a Done event"))
            })
            .collect()
    }

    /// Sequences that start while others are decoding (batch of 2, four conversations
    /// of different lengths, one without an image) answer exactly as each alone, and as
    /// the captioner's batched generation (checked against transformers elsewhere).
    #[test]
    fn continuous_batching_answers_as_each_request_alone() {
        let alone = answers(&Batcher::new(captioner(16), 1).unwrap(), true);
        let together = answers(&Batcher::new(captioner(16), 2).unwrap(), true);
        assert_eq!(together, alone);
        let lengths: Vec<usize> = alone.iter().map(|a| a.1).collect();
        assert_eq!(lengths, [5, 11, 7, 3]);
        assert!(alone.iter().all(|a| !a.0.is_empty()));

        let got = answers(&Batcher::new(captioner(16), 3).unwrap(), false);
        for ((image, messages, max_tokens), (text, tokens)) in conversations().into_iter().zip(got)
        {
            let Some(pixels) = image else { continue };
            let item = CaptionInput {
                id: "x".into(),
                image: String::new(),
                pixels,
                messages: Some(messages),
            };
            let want = captioner(max_tokens).caption(&[item], &mut |_| {}).unwrap();
            let want = want.into_iter().next().unwrap().unwrap();
            assert_eq!(
                (text.trim(), tokens),
                (want.caption.as_str(), want.new_tokens)
            );
        }
    }

    /// A conversation's second and third turns start from the cache of the earlier ones
    /// (the image and the first prompt are not run again) and answer exactly as a fresh
    /// session that runs the whole prompt; a reset session reuses nothing.
    #[test]
    fn a_session_reuses_the_cache_of_earlier_turns() {
        let batcher = Batcher::new(captioner(16), 1).unwrap();
        let sampling = greedy(6, true);
        let image = picture("phantom.png");
        let mut kept = Session::default();
        let mut turns: Vec<String> = Vec::new();
        let mut shown = String::new();
        for (n, question) in ["What is shown?", "Which modality?", "Any lesion?"]
            .iter()
            .enumerate()
        {
            turns.push(question.to_string());
            let mut on_text = |t: &str| {
                shown.push_str(t);
                true
            };
            let answer = batcher
                .answer_in(
                    &mut kept,
                    Some(image.clone()),
                    turns.clone(),
                    sampling.clone(),
                    &mut on_text,
                )
                .unwrap();
            let fresh = batcher
                .answer_in(
                    &mut Session::default(),
                    Some(image.clone()),
                    turns.clone(),
                    sampling.clone(),
                    &mut |_| true,
                )
                .unwrap();
            assert_eq!(answer.text, fresh.text, "turn {n}");
            assert_eq!(answer.completion_tokens, 6);
            let system = batcher.prefix.as_ref().map_or(0, |(ids, _)| ids.len());
            assert_eq!(fresh.reused, system);
            if n == 0 {
                assert_eq!(answer.reused, system);
            } else {
                let image_tokens = batcher.captioner.model.cfg.image_tokens();
                assert!(
                    answer.reused > system + image_tokens,
                    "turn {n}: {answer:?}"
                );
            }
            turns.push(answer.text.trim().to_string());
        }
        assert!(shown.contains(&turns[1]));
        kept.reset();
        let again = batcher
            .answer_in(
                &mut kept,
                Some(image),
                vec!["Hi".into()],
                sampling,
                &mut |_| true,
            )
            .unwrap();
        assert!(again.reused < 200, "{again:?}");
    }
}
