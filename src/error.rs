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
