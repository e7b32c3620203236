//! `neurostream run --pipeline P [--model M]`: a pipeline on its own source — a live headset
//! over LSL (`[source] kind = "lsl"`), or any other source the file names — with its commands
//! served over WebSocket until Ctrl-C.

use std::path::PathBuf;

use clap::Args;
use neurostream::pipeline::{PipelineConfig, SourceConfig};
use neurostream::{Error, Result};

#[derive(Args)]
pub struct RunArgs {
    /// Pipeline file (TOML), e.g. pipelines/live_lsl.toml.
    #[arg(long, short)]
    pub pipeline: PathBuf,
    /// Trained model (from `neurostream train`). Without one, a pipeline with a decoder
    /// calibrates on the stream's cued trials first (`[paradigm]`), then goes online.
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// Where a model calibrated during the session is saved (default:
    /// model-<unix time>.json in the current folder); an existing file is not overwritten.
    #[arg(long)]
    pub model_out: Option<PathBuf>,
    /// Cued calibration trials per class before training (overrides
    /// paradigm.calibration_trials).
    #[arg(long)]
    pub calibration_trials: Option<usize>,
    /// LSL stream name (overrides the pipeline's source.name).
    #[arg(long)]
    pub stream_name: Option<String>,
    /// LSL stream type, e.g. EEG (overrides source.type).
    #[arg(long)]
    pub stream_type: Option<String>,
    /// LSL source id (overrides source.source_id).
    #[arg(long)]
    pub source_id: Option<String>,
    /// Seconds to look for the stream before giving up (overrides
    /// source.resolve_timeout_seconds).
    #[arg(long)]
    pub resolve_timeout: Option<f64>,
    #[command(flatten)]
    pub serve: super::ServeArgs,
}

pub fn run(args: RunArgs) -> Result<()> {
    let mut config = PipelineConfig::from_file(&args.pipeline)?;
    let overrides = args.stream_name.is_some()
        || args.stream_type.is_some()
        || args.source_id.is_some()
        || args.resolve_timeout.is_some();
    match &mut config.source {
        SourceConfig::Lsl(lsl) => {
            if let Some(name) = &args.stream_name {
                lsl.name = Some(name.clone());
            }
            if let Some(kind) = &args.stream_type {
                lsl.stream_type = Some(kind.clone());
            }
            if let Some(id) = &args.source_id {
                lsl.source_id = Some(id.clone());
            }
            if let Some(timeout) = args.resolve_timeout {
                lsl.resolve_timeout_seconds = timeout;
            }
        }
        _ if overrides => {
            return Err(Error::config(
                "--stream-name/--stream-type/--source-id/--resolve-timeout",
                format!(
                    "these select an LSL stream, but {} has no `kind = \"lsl\"` source",
                    args.pipeline.display()
                ),
            ))
        }
        _ => {}
    }
    if let Some(trials) = args.calibration_trials {
        config.paradigm.calibration_trials = trials;
    }
    config.validate()?;
    config.paradigm.validate()?;
    let model = args
        .model
        .as_deref()
        .map(neurostream::model::Model::load)
        .transpose()?;
    let source = config.source.build()?;
    super::serve_session(
        &args.serve,
        source,
        &config,
        model,
        args.model_out.as_deref(),
    )
}
