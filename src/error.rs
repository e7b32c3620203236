//! One error type for the crate. Every variant names what was wrong and where, because the
//! people reading these messages are debugging a headset or a recording at 2 a.m.

use std::path::PathBuf;

/// Crate-wide result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A recording file that cannot be read: truncated, inconsistent header, bad numbers.
    /// `format` is "EDF", "BDF" or "XDF"; `detail` says what and, where known, at which byte.
    #[error("{format} file {path}: {detail}")]
    Format {
        format: &'static str,
        path: PathBuf,
        detail: String,
    },

    /// A pipeline or search-space file that is not valid: unknown key, value out of range.
    #[error("config {origin}: {detail}")]
    Config { origin: String, detail: String },

    /// A stream that does not fit what a stage expects (missing channel label, wrong rate...).
    #[error("stream: {0}")]
    Stream(String),

    /// Not enough, or unusable, data for what was asked: too few trials or windows, a class
    /// without examples, scores that are not finite, no recordings: more (or other) data fixes
    /// it, not another configuration.
    #[error("{0}")]
    Data(String),

    /// A numerical method failed on the data it was given: a matrix that must be positive
    /// definite is not, an iteration that left its domain.
    #[error("{0}")]
    Numeric(String),

    /// A model file that cannot be used: not a model, an unknown version, or it does not fit
    /// the pipeline it is loaded into. `origin` is the file (or what holds the model).
    #[error("model {origin}: {detail}")]
    Model { origin: String, detail: String },

    /// A peer over the network: a bad URL, a refused connection, a download that failed, a
    /// socket that cannot be bound.
    #[error("{0}")]
    Network(String),

    /// What this build or machine cannot do: LSL left out of the build, no loopback-only
    /// network namespace, a thread or runtime the OS refused.
    #[error("{0}")]
    Unsupported(String),

    /// A broken invariant inside neurostream (a worker thread that panicked, a value that
    /// cannot be serialised): a bug to report, not something the caller can fix.
    #[error("internal error (please report): {0}")]
    Internal(String),

    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn format(
        format: &'static str,
        path: impl Into<PathBuf>,
        detail: impl Into<String>,
    ) -> Self {
        Error::Format {
            format,
            path: path.into(),
            detail: detail.into(),
        }
    }

    /// Writing to a closed pipe (`neurostream replay f.edf | head`): not a failure to report.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
    }

    pub fn config(origin: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Config {
            origin: origin.into(),
            detail: detail.into(),
        }
    }
}
