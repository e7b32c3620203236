//! `neurostream demo`: the embedded default pipeline on the simulator — the first thing to run
//! on a fresh machine.

use std::path::PathBuf;

use clap::Args;
use neurostream::output::{FeatureWriter, OutputFormat};
use neurostream::pipeline::{self, Pipeline, PipelineConfig, SourceConfig};
use neurostream::Result;

#[derive(Args)]
pub struct DemoArgs {
    /// Seconds of simulated EEG to run (0 = until interrupted).
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Pace: 1.0 = real time (default), 0 = as fast as possible.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Output format.
    #[arg(long, value_enum)]
    pub format: Option<OutputFormat>,
    /// Use this pipeline instead of the embedded pipelines/demo.toml.
    #[arg(long, short)]
    pub pipeline: Option<PathBuf>,
}

pub fn run(args: DemoArgs) -> Result<()> {
    let mut config = match &args.pipeline {
        Some(path) => PipelineConfig::from_file(path)?,
        None => PipelineConfig::default_demo(),
    };
    if let SourceConfig::Simulator(sim) = &mut config.source {
        sim.duration_seconds = (args.seconds > 0.0).then_some(args.seconds);
        sim.speed = args.speed;
    }
    config.validate()?;
    let mut source = config.source.build()?;
    let model = None;
    let mut pipeline = Pipeline::build(&config, source.stream_info(), model)?;
    tracing::info!(
        "demo: {} ({} channels at {} Hz) → {} features per window; Ctrl-C to stop",
        source.stream_info().name,
        source.stream_info().channel_count(),
        source.stream_info().nominal_rate,
        pipeline.feature_names().len()
    );
    let format = args.format.unwrap_or(config.output.format);
    let mut sink = FeatureWriter::open(
        config.output.path.as_deref(),
        format,
        pipeline.feature_names().to_vec(),
    )?
    .line_buffered();
    let summary = pipeline::run(source.as_mut(), &mut pipeline, &mut sink, |_| {})?;
    tracing::info!(
        samples = summary.samples,
        windows = summary.windows,
        events = summary.events,
        "demo done"
    );
    Ok(())
}
