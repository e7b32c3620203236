//! `neurostream replay FILE [--pipeline P]`: a recording through a pipeline, features out.

use std::path::PathBuf;

use clap::Args;
use neurostream::output::{FeatureWriter, OutputFormat};
use neurostream::pipeline::{self, Pipeline, PipelineConfig, SourceConfig};
use neurostream::source::replay::{Replay, ReplayConfig};
use neurostream::source::Source;
use neurostream::Result;

#[derive(Args)]
pub struct ReplayArgs {
    /// EDF, EDF+, BDF or XDF file.
    pub file: PathBuf,
    /// Pipeline file (TOML); default: the embedded pipelines/motor_imagery.toml. Its [source]
    /// is replaced by FILE.
    #[arg(long, short)]
    pub pipeline: Option<PathBuf>,
    /// Output format; default: the pipeline's [output].format.
    #[arg(long, value_enum)]
    pub format: Option<OutputFormat>,
    /// Write features to this file instead of standard output.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Pace: 1.0 = real time, 2.0 = twice as fast, 0 = as fast as possible (default: the
    /// pipeline's source.speed if it is a replay source, else 0).
    #[arg(long)]
    pub speed: Option<f64>,
    /// Samples per chunk fed to the pipeline.
    #[arg(long)]
    pub chunk_samples: Option<usize>,
    /// Trained model (from `neurostream train`): adds class probabilities and the predicted
    /// class to every window.
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// Name of the stream to replay (XDF files with several signal streams).
    #[arg(long)]
    pub stream: Option<String>,
    /// Serve the pipeline's commands over WebSocket instead of printing features (default
    /// pace then: real time).
    #[arg(long)]
    pub serve: bool,
    #[command(flatten)]
    pub service: super::ServeArgs,
}

pub fn run(args: ReplayArgs) -> Result<()> {
    let mut config = match &args.pipeline {
        Some(path) => PipelineConfig::from_file(path)?,
        None => PipelineConfig::motor_imagery(),
    };
    let (speed, chunk_samples) = match &config.source {
        SourceConfig::Replay(r) => (r.speed, r.chunk_samples),
        _ => (0.0, 16),
    };
    let replay_config = ReplayConfig {
        path: args.file.clone(),
        speed: args.speed.unwrap_or(if args.serve && speed <= 0.0 {
            1.0
        } else {
            speed
        }),
        chunk_samples: args.chunk_samples.unwrap_or(chunk_samples),
        stream: args.stream.clone(),
    };
    replay_config.validate()?;
    config.source = SourceConfig::Replay(replay_config.clone());
    let model = args
        .model
        .as_deref()
        .map(neurostream::model::Model::load)
        .transpose()?;
    let recording = neurostream::io::open(&args.file)?;
    let mut source = Replay::new(
        &recording,
        replay_config.stream.as_deref(),
        replay_config.chunk_samples,
        neurostream::source::Pace::from_speed(replay_config.speed),
    )?;
    drop(recording);
    let mut pipeline = Pipeline::build(&config, source.stream_info(), model)?;
    if args.serve {
        return super::serve(&args.service, Box::new(source), pipeline, &config.control);
    }
    let format = args.format.unwrap_or(config.output.format);
    let out = args.out.as_deref().or(config.output.path.as_deref());
    let mut sink = FeatureWriter::open(out, format, pipeline.feature_names().to_vec())?
        .with_classes(pipeline.class_names().to_vec());
    let bar = super::progress_bar(source.total_samples() as u64, "samples");
    let summary = pipeline::run(&mut source, &mut pipeline, &mut sink, |s| {
        bar.set_position(s.samples)
    })?;
    bar.finish_and_clear();
    tracing::info!(
        samples = summary.samples,
        windows = summary.windows,
        events = summary.events,
        "replay of {} done",
        args.file.display()
    );
    Ok(())
}
