//! `[output]`: where per-window features go (written by [`crate::output::FeatureWriter`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Csv,
    Jsonl,
}

/// `[output]`: where per-window features go.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    #[serde(default)]
    pub format: OutputFormat,
    /// File to write; standard output when absent.
    #[serde(default)]
    pub path: Option<PathBuf>,
}
