//! `neurostream check PIPELINE [--recording FILE]`: validate a pipeline file.

use std::path::PathBuf;

use clap::Args;
use neurostream::pipeline::{Pipeline, PipelineConfig, SourceConfig};
use neurostream::source::Source;
use neurostream::Result;

#[derive(Args)]
pub struct CheckArgs {
    /// Pipeline file (TOML).
    pub pipeline: PathBuf,
    /// Also build the pipeline against this recording's primary stream (checks channel labels
    /// and frequencies against its rate). Without it, the pipeline's own source is used (an LSL
    /// source is not contacted).
    #[arg(long)]
    pub recording: Option<PathBuf>,
    /// Also check that this trained model fits the pipeline and the stream.
    #[arg(long)]
    pub model: Option<PathBuf>,
}

pub fn run(args: CheckArgs) -> Result<()> {
    let config = PipelineConfig::from_file(&args.pipeline)?;
    let model = args
        .model
        .as_deref()
        .map(neurostream::model::Model::load)
        .transpose()?;
    config.validate()?;
    let source: Box<dyn Source> = match &args.recording {
        Some(path) => Box::new(neurostream::source::replay::Replay::new(
            &neurostream::io::open(path)?,
            None,
            16,
            neurostream::source::Pace::AsFastAsPossible,
        )?),
        // Checking a file must not go looking for a headset on the network.
        None if matches!(config.source, SourceConfig::Lsl(_)) => {
            println!(
                "{}: ok (syntax and ranges; the LSL stream was not contacted: add --recording \
                 FILE to check channels and rate against a recording of the headset)",
                args.pipeline.display()
            );
            return Ok(());
        }
        None => config.source.build()?,
    };
    let pipeline = Pipeline::build(&config, source.stream_info(), model)?;
    println!(
        "{}: ok ({} input channel(s) at {} Hz → {} feature(s) per window)",
        args.pipeline.display(),
        source.stream_info().channel_count(),
        source.stream_info().nominal_rate,
        pipeline.feature_names().len()
    );
    Ok(())
}
