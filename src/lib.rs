//! # neurostream
//!
//! Real-time brain-machine-interface streaming. Data flows one way:
//!
//! ```text
//!  source ──► preprocess ──► window ──► features ──► decoder ──► control ──► sinks
//!  (replay,    (channel       (ring      (band power,  (LDA, SVM,   (threshold, (CSV/JSON
//!   simulator,  selection,     buffer,    CSP, tangent  plastic MLP) dwell,      lines;
//!   LSL)        CAR, band-     length,    space)                     refractory) WebSocket)
//!               pass, notch)   hop)
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
//!   simulator, live LSL inlet). Sources are blocking iterators that run on their own thread
//!   at the edge.
//! - [`preprocess`]: causal per-channel stages (channel selection, common average reference,
//!   band-pass, notch) that keep their state across chunks.
//! - [`features`]: the sliding-window ring buffer and the feature extractors: band power,
//!   CSP and Riemannian tangent space (the last two fitted on calibration data), gathered in
//!   [`features::extractor::AnyExtractor`].
//! - [`linalg`]: the small SPD-matrix toolkit behind CSP and tangent space (covariance with
//!   OAS shrinkage, eigendecomposition, matrix functions, Riemannian mean).
//! - [`decoder`]: feature vector → class probabilities behind the [`decoder::Decoder`] trait
//!   (shrinkage LDA, SVM, plastic MLP), plus metrics and stratified cross-validation.
//! - [`config`]: the TOML pipeline file ([`config::PipelineConfig`]), assembled from the
//!   sections each stage declares, and its one validation pass ([`validate::Problems`]: every
//!   bad value with file, key, value and range, before any sample).
//! - [`pipeline`]: the synchronous hot path ([`pipeline::Pipeline`]) that chains the stages
//!   above.
//! - [`engine`]: the session engine ([`engine::Engine`]): pipeline, controller, command
//!   numbering, recent commands for feedback, the sample clock and every recorded state change
//!   ([`engine::SessionEvent`]). The service's DSP thread, `replay`, `replay --commands` and
//!   `evaluate --online` all drive it, so a replay equals the live session by construction.
//! - [`closed_loop`]: calibrate a new user on the stream's (or the page's) cues, train off the
//!   DSP thread, hot-load the model, decide cued online trials and learn from their labels.
//! - [`epochs`]: labelled calibration epochs cut after each cue, through the same
//!   preprocessing the live pipeline runs.
//! - [`evaluate`]: fitting, cross-validation, held-out and online (plastic vs frozen)
//!   evaluation.
//! - [`population`]: a re-centred population prior (other people's tangent vectors, each
//!   person whitened by their own mean) combined with a new person's calibration.
//! - [`tune`]: genetic-algorithm or simulated-annealing search over a pipeline's knobs, by CV.
//! - [`model`]: model files (fitted feature stage + decoder + the pipeline fingerprint).
//! - [`control`]: class probabilities → device commands (confidence threshold, dwell,
//!   refractory time, a rest class that sends nothing).
//! - [`output`]: sinks that write per-window features and probabilities as CSV or JSON lines.
//! - [`paradigm`]: the cue paradigm the service runs on the stream's clock for the
//!   `/paradigm` page (`[paradigm] cues = "page"`), and the virtual subject's cue handle.
//! - [`record`]: recording a live session to XDF (raw signal, markers, decoded commands,
//!   feedback) on a thread that never blocks the DSP thread, and recomputing a recorded
//!   session's commands exactly.
//! - [`service`]: the live service: source and DSP threads, per-client bounded queues, the
//!   axum WebSocket server (protocol in docs/protocol.md), Prometheus metrics, and the
//!   `listen` client; with `[nats]`, the session published to NATS JetStream.
//! - [`nats`]: the `[nats]` settings and the one NATS connection both the publisher
//!   ([`service`]) and `[source] kind = "nats"` ([`source`]) use; below both, so neither
//!   imports the other.
//! - `publish` (feature `lsl`): any source published as LSL outlets (`simulate --lsl`).
//! - [`loopback`]: loopback-only network namespaces for LSL tests and benchmarks.
//!
//! The per-sample hot path (preprocess → features → decoder) is plain synchronous Rust that
//! does not allocate per chunk once warmed up (tangent space and its re-centring included:
//! tests/allocation.rs); async code lives only at the edges.

pub mod closed_loop;
pub mod config;
pub mod control;
pub mod decoder;
pub mod engine;
pub mod epochs;
pub mod error;
pub mod evaluate;
pub mod features;
pub mod io;
pub mod linalg;
pub mod loopback;
pub mod model;
pub mod nats;
pub mod output;
pub mod paradigm;
pub mod pipeline;
pub mod population;
pub mod preprocess;
#[cfg(feature = "lsl")]
pub mod publish;
pub mod record;
pub mod service;
pub mod source;
pub mod stream;
pub mod tune;
pub mod validate;

pub use error::{Error, Result};
