//! `neurostream demo`: the embedded default pipeline on the simulator — the first thing to run
//! on a fresh machine. By default it calibrates a decoder on simulated data at startup and
//! serves commands over WebSocket; `--print` prints per-window features instead.

use std::path::PathBuf;

use clap::Args;
use neurostream::output::{FeatureWriter, OutputFormat};
use neurostream::pipeline::{self, Pipeline, PipelineConfig, SourceConfig};
use neurostream::source::simulator::{self, SimulatorConfig};
use neurostream::{epochs, evaluate, Result};

#[derive(Args)]
pub struct DemoArgs {
    /// Seconds of simulated EEG to run (0 = until interrupted).
    #[arg(long, default_value_t = 0.0)]
    pub seconds: f64,
    /// Pace: 1.0 = real time (default), 0 = as fast as possible.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Print per-window features (CSV or JSON lines) instead of serving commands.
    #[arg(long)]
    pub print: bool,
    /// Output format with --print.
    #[arg(long, value_enum, requires = "print")]
    pub format: Option<OutputFormat>,
    /// Use this pipeline instead of the embedded pipelines/demo.toml.
    #[arg(long, short)]
    pub pipeline: Option<PathBuf>,
    /// Seconds of simulated calibration data the decoder is trained on at startup.
    #[arg(long, default_value_t = 120.0)]
    pub calibration_seconds: f64,
    #[command(flatten)]
    pub serve: super::ServeArgs,
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
    let source = config.source.build()?;
    if args.print {
        return print(&config, source, args.format);
    }
    let model = match (&config.decoder, &config.source) {
        (Some(_), SourceConfig::Simulator(sim)) => {
            Some(calibrate(&config, sim, args.calibration_seconds)?)
        }
        _ => None,
    };
    let pipeline = Pipeline::build(&config, source.stream_info(), model)?;
    super::serve(&args.serve, source, pipeline, &config.control)
}

/// Train the pipeline's decoder on `seconds` of simulated calibration data (another seed than
/// the live stream, so the demo decodes data it has not seen).
fn calibrate(
    config: &PipelineConfig,
    sim: &SimulatorConfig,
    seconds: f64,
) -> Result<neurostream::model::Model> {
    let calibration = SimulatorConfig {
        seed: sim.seed.wrapping_add(1),
        ..sim.clone()
    };
    let recording = simulator::record(&calibration, seconds)?;
    let epochs = epochs::cut(&recording, config)?;
    tracing::info!(
        "demo: calibrating on {} simulated epochs ({seconds} s)",
        epochs.len()
    );
    evaluate::train(config, &epochs, vec!["simulated calibration".into()])
}

fn print(
    config: &PipelineConfig,
    mut source: Box<dyn neurostream::source::Source>,
    format: Option<OutputFormat>,
) -> Result<()> {
    let mut pipeline = Pipeline::build(config, source.stream_info(), None)?;
    tracing::info!(
        "demo: {} ({} channels at {} Hz) → {} features per window; Ctrl-C to stop",
        source.stream_info().name,
        source.stream_info().channel_count(),
        source.stream_info().nominal_rate,
        pipeline.feature_names().len()
    );
    let format = format.unwrap_or(config.output.format);
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
