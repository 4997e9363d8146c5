//! `mt serve`: an OpenAI-compatible HTTP server over one loaded model, with continuous
//! batching (the batcher in `model::engine::batcher`). `openai` is the wire format,
//! `server` the routes, limits, auth, streaming and shutdown.

pub(crate) mod openai;
pub(crate) mod server;
