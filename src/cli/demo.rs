//! `neurostream demo`: the embedded default pipeline on simulated EEG — the first thing to run
//! on a fresh machine. By default it replays `recordings/demo.xdf` (a simulator recording
//! embedded in the binary, looped), calibrates a decoder on freshly simulated data at
//! startup and serves commands over WebSocket; `--simulator` runs the live simulator instead,
//! `--print` prints per-window features instead of serving.

use std::path::{Path, PathBuf};

use clap::Args;
use neurostream::engine::Engine;
use neurostream::io::{Recording, StreamData};
use neurostream::output::{FeatureWriter, OutputFormat};
use neurostream::pipeline::{Pipeline, PipelineConfig, SourceConfig};
use neurostream::source::replay::Replay;
use neurostream::source::simulator::{self, SimulatorConfig};
use neurostream::source::{Pace, Source, SourceItem};
use neurostream::stream::{Chunk, StreamInfo};
use neurostream::{epochs, evaluate, Result};

/// `neurostream simulate --seconds 120 --out recordings/demo.xdf` (seed 42, motor16, 160 Hz:
/// the simulator settings of pipelines/demo.toml). Embedded so `demo` works from any folder.
pub const DEMO_RECORDING: &[u8] = include_bytes!("../../recordings/demo.xdf");
const DEMO_RECORDING_NAME: &str = "recordings/demo.xdf";

#[derive(Args)]
pub struct DemoArgs {
    /// Seconds of EEG to run (0 = until interrupted; the demo recording loops).
    #[arg(long, default_value_t = 0.0)]
    pub seconds: f64,
    /// Pace: 1.0 = real time (default), 0 = as fast as possible.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Run the live simulator instead of replaying the embedded demo recording.
    #[arg(long)]
    pub simulator: bool,
    /// Print per-window features (CSV or JSON lines) instead of serving commands.
    #[arg(long)]
    pub print: bool,
    /// Output format with --print.
    #[arg(long, value_enum, requires = "print")]
    pub format: Option<OutputFormat>,
    /// Use this pipeline (and its [source]) instead of the embedded pipelines/demo.toml.
    #[arg(long, short, conflicts_with = "simulator")]
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
    if !(args.seconds.is_finite() && args.seconds >= 0.0) {
        return Err(neurostream::Error::config(
            "--seconds",
            format!(
                "{} is not allowed; allowed: 0 (until interrupted) or a positive number of seconds",
                args.seconds
            ),
        ));
    }
    if let SourceConfig::Simulator(sim) = &mut config.source {
        sim.duration_seconds = (args.seconds > 0.0).then_some(args.seconds);
        sim.speed = args.speed;
    }
    config.validate()?;
    let source: Box<dyn Source> = match (&args.pipeline, args.simulator, &config.source) {
        (None, false, SourceConfig::Simulator(sim)) => Box::new(Looped::new(
            demo_recording()?,
            sim.chunk_samples,
            Pace::from_speed(args.speed),
            args.seconds,
        )?),
        _ => config.source.build()?,
    };
    if args.print {
        return print(&config, source, args.format);
    }
    let model = match (&config.decoder, &config.source) {
        (Some(_), SourceConfig::Simulator(sim)) => {
            Some(calibrate(&config, sim, args.calibration_seconds)?)
        }
        _ => None,
    };
    let pipeline = Pipeline::build(&config, source.stream_info(), model.clone())?;
    super::serve(&args.serve, source, pipeline, &config, model.as_ref())
}

/// The embedded demo recording.
pub fn demo_recording() -> Result<Recording> {
    neurostream::io::xdf::parse(DEMO_RECORDING, Path::new(DEMO_RECORDING_NAME))
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

/// A recording replayed over and over, each pass shifted in time to follow the previous one
/// (time stamps keep increasing, as the controller's refractory time needs), optionally
/// stopped after `seconds` of stream.
struct Looped {
    recording: Recording,
    chunk_samples: usize,
    pace: Pace,
    /// One pass, seconds: the shift between passes.
    period: f64,
    passes: u32,
    inner: Replay,
    info: StreamInfo,
    /// Samples still to emit when limited.
    remaining: Option<u64>,
}

impl Looped {
    fn new(recording: Recording, chunk_samples: usize, pace: Pace, seconds: f64) -> Result<Self> {
        let inner = Replay::new(&recording, None, chunk_samples, pace)?;
        let info = inner.stream_info().clone();
        let signal = recording.primary_signal().expect("Replay::new found one");
        let period = signal.sample_count() as f64 / info.nominal_rate;
        let remaining = (seconds > 0.0).then(|| (seconds * info.nominal_rate).round() as u64);
        Ok(Looped {
            recording,
            chunk_samples,
            pace,
            period,
            passes: 0,
            inner,
            info,
            remaining,
        })
    }

    /// The next pass: every time stamp and marker onset moved by one more period.
    fn next_pass(&mut self) -> Result<()> {
        self.passes += 1;
        let shift = self.period * f64::from(self.passes);
        let mut shifted = self.recording.clone();
        for stream in &mut shifted.streams {
            stream.timestamps.iter_mut().for_each(|t| *t += shift);
            if let StreamData::Markers(events) = &mut stream.data {
                events.iter_mut().for_each(|e| e.onset += shift);
            }
        }
        self.inner = Replay::new(&shifted, None, self.chunk_samples, self.pace)?;
        Ok(())
    }
}

impl Source for Looped {
    fn stream_info(&self) -> &StreamInfo {
        &self.info
    }

    fn marker_info(&self) -> Option<&StreamInfo> {
        self.inner.marker_info()
    }

    fn next_item(&mut self) -> Result<Option<SourceItem>> {
        if self.remaining == Some(0) {
            return Ok(None);
        }
        let item = match self.inner.next_item()? {
            Some(item) => item,
            None => {
                self.next_pass()?;
                match self.inner.next_item()? {
                    Some(item) => item,
                    None => return Ok(None),
                }
            }
        };
        let Some(remaining) = self.remaining.as_mut() else {
            return Ok(Some(item));
        };
        Ok(Some(match item {
            SourceItem::Chunk(chunk) if chunk.samples() as u64 > *remaining => {
                let keep = *remaining as usize;
                *remaining = 0;
                let mut data = Vec::with_capacity(chunk.channels() * keep);
                for c in 0..chunk.channels() {
                    data.extend_from_slice(&chunk.channel(c)[..keep]);
                }
                SourceItem::Chunk(Chunk::from_channel_major(
                    chunk.channels(),
                    data,
                    chunk.timestamps()[..keep].to_vec(),
                ))
            }
            SourceItem::Chunk(chunk) => {
                *remaining -= chunk.samples() as u64;
                SourceItem::Chunk(chunk)
            }
            other => other,
        }))
    }
}

fn print(
    config: &PipelineConfig,
    mut source: Box<dyn neurostream::source::Source>,
    format: Option<OutputFormat>,
) -> Result<()> {
    let pipeline = Pipeline::build(config, source.stream_info(), None)?;
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
    let summary = Engine::new(pipeline, None).run(source.as_mut(), &mut sink, |_| {})?;
    tracing::info!(
        samples = summary.samples,
        windows = summary.windows,
        events = summary.events,
        "demo done"
    );
    Ok(())
}
