//! # neurostream
//!
//! Real-time brain-machine-interface streaming. Data flows one way:
//!
//! ```text
//!  source ──► preprocess ──► features ──► decoder ──► control ──► sinks
//!  (replay,    (channel       (sliding      (later)     (later)    (stdout CSV/JSON
//!   simulator,  selection,     window,                              lines, file,
//!   LSL later)  band-pass,     band power)                          WebSocket later)
//!               notch, CAR)
//! ```
//!
//! Modules, in reading order:
//!
//! - [`stream`]: the core types every stage shares: [`stream::StreamInfo`] (what a stream is),
//!   [`stream::Chunk`] (channels × samples of `f32`, channel-major, with timestamps) and
//!   [`stream::Event`] (markers: cues, annotations).
//! - [`error`]: the crate's one error type; every message names what was wrong.
//! - [`io`]: recording readers (EDF/EDF+/BDF, XDF) producing a [`io::Recording`].
//! - [`source`]: the [`source::Source`] trait and its implementations (replay of a recording,
//!   simulator). Sources are blocking iterators that run on their own thread at the edge.
//! - [`preprocess`]: causal per-channel stages (channel selection, band-pass, notch, common
//!   average reference) that keep their state across chunks.
//! - [`features`]: the sliding-window ring buffer and feature extractors (band power).
//! - [`pipeline`]: the TOML pipeline file ([`pipeline::PipelineConfig`]) and the synchronous
//!   hot path ([`pipeline::Pipeline`]) that chains the stages above.
//! - [`output`]: sinks that write per-window features as CSV or JSON lines.
//!
//! The per-sample hot path (preprocess → features) is plain synchronous Rust that does not
//! allocate per chunk once warmed up; async code lives only at the edges.

pub mod decoder;
pub mod epochs;
pub mod error;
pub mod evaluate;
pub mod features;
pub mod io;
pub mod linalg;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod preprocess;
pub mod source;
pub mod stream;

pub use error::{Error, Result};
