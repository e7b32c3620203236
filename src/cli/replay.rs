//! `neurostream replay FILE [--pipeline P]`: a recording through a pipeline, features out.
//!
//! A recording neurostream made (`--record`) carries its pipeline and model: they are used
//! unless --pipeline / --model say otherwise, and `--commands` recomputes the session's
//! commands (applying its recorded feedback) and checks them against the recorded ones.

use std::path::PathBuf;

use clap::Args;
use neurostream::engine::Engine;
use neurostream::output::{FeatureWriter, OutputFormat};
use neurostream::pipeline::{Pipeline, PipelineConfig, SourceConfig};
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
    /// With --serve and no --model: where the model calibrated on the recording's cues is
    /// saved (default: model-<unix time>.json here; never over an existing file).
    #[arg(long, requires = "serve")]
    pub model_out: Option<PathBuf>,
    /// Print the decoded commands as JSON lines instead of features, recomputed with the
    /// recording's feedback and resets; for a neurostream recording replayed with its own
    /// pipeline and model, fail unless they equal the recorded commands.
    #[arg(long, conflicts_with = "serve")]
    pub commands: bool,
    /// Publish the recording's signal and markers as LSL outlets in real time (like MNE-LSL's
    /// player) instead of processing it, so other LSL tools can consume it.
    #[arg(long, conflicts_with_all = ["serve", "commands", "out", "format", "model"])]
    pub lsl: bool,
    #[command(flatten)]
    pub service: super::ServeArgs,
}

pub fn run(args: ReplayArgs) -> Result<()> {
    // A pipeline given on the command line is checked before the recording is read.
    let given = args
        .pipeline
        .as_deref()
        .map(PipelineConfig::load)
        .transpose()?;
    let recorded = if is_neurostream_recording(&args.file)? {
        Some(neurostream::record::load(&args.file)?)
    } else {
        None
    };
    let mut config = match (given, &recorded) {
        (Some(config), _) => config,
        (None, Some(recorded)) => {
            tracing::info!("using the pipeline stored in {}", args.file.display());
            let mut config = recorded.session.pipeline_config()?;
            config.origin = format!("pipeline stored in {}", args.file.display());
            config
        }
        (None, None) => PipelineConfig::motor_imagery(),
    };
    let (speed, chunk_samples) = match &config.source {
        SourceConfig::Replay(r) => (r.speed, r.chunk_samples),
        _ => (0.0, 16),
    };
    let replay_config = ReplayConfig {
        path: args.file.clone(),
        speed: args
            .speed
            .unwrap_or(if (args.serve || args.lsl) && speed <= 0.0 {
                1.0
            } else {
                speed
            }),
        chunk_samples: args.chunk_samples.unwrap_or(chunk_samples),
        stream: args.stream.clone(),
    };
    config.source = SourceConfig::Replay(replay_config.clone());
    config.validate()?;
    let model = match (&args.model, &recorded) {
        (Some(path), _) => Some(neurostream::model::Model::load(path)?),
        (None, Some(recorded)) => recorded.session.model()?,
        (None, None) => None,
    };
    if args.commands {
        return print_commands(&args, recorded, &config, model);
    }
    let recording = match recorded {
        Some(recorded) => recorded.recording,
        None => neurostream::io::open(&args.file)?,
    };
    let mut source = Replay::new(
        &recording,
        replay_config.stream.as_deref(),
        replay_config.chunk_samples,
        neurostream::source::Pace::from_speed(replay_config.speed),
    )?;
    drop(recording);
    if args.lsl {
        return publish(&args.file, &mut source);
    }
    if args.serve {
        // Without a model, a decoding pipeline calibrates on the recording's own cues first.
        return super::serve_session(
            &args.service,
            Box::new(source),
            &config,
            model,
            args.model_out.as_deref(),
        );
    }
    let pipeline = Pipeline::build(&config, source.stream_info(), model.clone())?;
    let format = args.format.unwrap_or(config.output.format);
    let out = args.out.as_deref().or(config.output.path.as_deref());
    let mut sink = FeatureWriter::open(out, format, pipeline.feature_names().to_vec())?
        .with_classes(pipeline.class_names().to_vec());
    let bar = super::progress_bar(source.total_samples() as u64, "samples");
    let summary =
        Engine::new(pipeline, None).run(&mut source, &mut sink, |s| bar.set_position(s.samples))?;
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

/// An XDF file whose FileHeader carries a neurostream session.
fn is_neurostream_recording(path: &std::path::Path) -> Result<bool> {
    let mut head = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(|e| neurostream::Error::io(path, e))?;
    let read =
        std::io::Read::read(&mut file, &mut head).map_err(|e| neurostream::Error::io(path, e))?;
    if &head[..read] != b"XDF:" {
        return Ok(false);
    }
    let bytes = std::fs::read(path).map_err(|e| neurostream::Error::io(path, e))?;
    let header = neurostream::io::xdf::file_header(&bytes, path)?;
    Ok(neurostream::record::Session::from_file_header(&header)?.is_some())
}

/// `--commands`: the session's commands recomputed, as JSON lines on stdout.
fn print_commands(
    args: &ReplayArgs,
    recorded: Option<neurostream::record::SessionRecording>,
    config: &PipelineConfig,
    model: Option<neurostream::model::Model>,
) -> Result<()> {
    use std::io::Write;
    let own = args.pipeline.is_none() && args.model.is_none();
    let loads_model = recorded.as_ref().is_some_and(|r| {
        r.events
            .iter()
            .any(|e| matches!(e, neurostream::record::SessionEvent::ModelLoaded { .. }))
    });
    if model.is_none() && !loads_model {
        return Err(neurostream::Error::config(
            "--commands",
            format!(
                "{} is not a neurostream recording with a model and no --model was given: \
                 commands need a trained decoder",
                args.file.display()
            ),
        ));
    }
    let recorded = match recorded {
        Some(recorded) => recorded,
        None => neurostream::record::SessionRecording {
            session: Default::default(),
            recording: neurostream::io::open(&args.file)?,
            commands: Vec::new(),
            events: Vec::new(),
        },
    };
    let chunk_samples = args.chunk_samples.unwrap_or(16);
    let commands = neurostream::record::replay_commands(&recorded, config, model, chunk_samples)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let io_err = |e| neurostream::Error::io("<stdout>", e);
    for command in &commands {
        let line = serde_json::to_string(&CommandLine::from(command)).expect("commands serialise");
        writeln!(out, "{line}").map_err(io_err)?;
    }
    out.flush().map_err(io_err)?;
    let session = !recorded.session.pipeline.is_empty();
    if session && own {
        if let Some(i) = (0..commands.len().max(recorded.commands.len()))
            .find(|&i| commands.get(i) != recorded.commands.get(i))
        {
            return Err(neurostream::Error::Data(format!(
                "replayed commands differ from the recording at command #{}: recorded {}, replayed {}",
                i + 1,
                describe(recorded.commands.get(i)),
                describe(commands.get(i))
            )));
        }
        tracing::info!(
            "{} command(s) replayed, identical to the recording ({} feedback/reset event(s) applied)",
            commands.len(),
            recorded.events.len()
        );
    } else {
        tracing::info!("{} command(s) replayed", commands.len());
    }
    Ok(())
}

/// One `--commands` line: the protocol's `command` message (`"type":"command"` first, as
/// `listen` prints them) without its wall-clock `latency_ms`.
#[derive(serde::Serialize)]
struct CommandLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    command: &'a neurostream::record::CommandRecord,
}

impl<'a> From<&'a neurostream::record::CommandRecord> for CommandLine<'a> {
    fn from(command: &'a neurostream::record::CommandRecord) -> Self {
        CommandLine {
            kind: "command",
            command,
        }
    }
}

fn describe(command: Option<&neurostream::record::CommandRecord>) -> String {
    command.map_or("nothing".into(), |c| {
        serde_json::to_string(c).expect("commands serialise")
    })
}

/// `--lsl`: the recording as LSL outlets, at the replay's pace.
#[cfg(feature = "lsl")]
fn publish(file: &std::path::Path, source: &mut Replay) -> Result<()> {
    let info = source.stream_info();
    tracing::info!(
        "publishing {} on LSL: '{}' ({} channels at {} Hz) and its markers; Ctrl-C to stop",
        file.display(),
        info.name,
        info.channel_count(),
        info.nominal_rate
    );
    let bar = super::progress_bar(source.total_samples() as u64, "samples");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut samples = 0u64;
    let published = neurostream::publish::run(source, &stop, |item| {
        if let neurostream::source::SourceItem::Chunk(chunk) = item {
            samples += chunk.samples() as u64;
            bar.set_position(samples);
        }
    })?;
    bar.finish_and_clear();
    tracing::info!(
        samples = published.samples,
        markers = published.markers,
        "replay on LSL done"
    );
    Ok(())
}

#[cfg(not(feature = "lsl"))]
fn publish(_: &std::path::Path, _: &mut Replay) -> Result<()> {
    Err(neurostream::Error::Unsupported(
        "this neurostream was built without LSL support; rebuild with the default features".into(),
    ))
}
