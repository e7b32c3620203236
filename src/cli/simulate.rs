//! `neurostream simulate`: synthetic motor-imagery EEG as CSV or JSON lines, or as an XDF
//! recording when `--out` ends in `.xdf`.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use clap::Args;
use neurostream::output::OutputFormat;
use neurostream::source::simulator::SimulatorConfig;
use neurostream::source::{Source, SourceItem};
use neurostream::stream::{Chunk, Event};
use neurostream::{Error, Result};

#[derive(Args)]
pub struct SimulateArgs {
    /// Seconds of EEG to generate.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Random seed: the same seed gives the same EEG.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Sampling rate, Hz.
    #[arg(long, default_value_t = 160.0)]
    pub rate: f64,
    /// Electrode montage: motor16 or eegmmidb64.
    #[arg(long, default_value = "motor16")]
    pub montage: String,
    /// Pace: 0 = as fast as possible (default), 1.0 = real time.
    #[arg(long, default_value_t = 0.0)]
    pub speed: f64,
    /// Output format: csv (timestamp, one column per channel, marker) or jsonl.
    #[arg(long, value_enum, default_value_t = OutputFormat::Csv)]
    pub format: OutputFormat,
    /// Write to this file instead of standard output; a name ending in `.xdf` writes an XDF
    /// recording (signal and marker streams, as LabRecorder would) instead of --format.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Publish as LSL outlets (EEG + cue markers) instead of writing; real time unless
    /// --speed says otherwise; --seconds 0 runs until interrupted.
    #[arg(long, conflicts_with_all = ["out", "format"])]
    pub lsl: bool,
    /// LSL stream name with --lsl (the marker stream gets "-markers" appended).
    #[arg(long, default_value = "neurostream-sim", requires = "lsl")]
    pub name: String,
    /// LSL source id with --lsl (default: derived from the seed). Restarting with the same id
    /// lets consumers recover the stream.
    #[arg(long, requires = "lsl")]
    pub source_id: Option<String>,
}

pub fn run(args: SimulateArgs) -> Result<()> {
    let montage = serde_json::from_value(serde_json::Value::from(args.montage.clone()))
        .map_err(|e| Error::config("--montage", format!("{:?}: {e}", args.montage)))?;
    if args.lsl {
        return publish(&args, montage);
    }
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        return Err(Error::config(
            "--seconds",
            format!("{} must be a positive number of seconds", args.seconds),
        ));
    }
    let config = SimulatorConfig {
        seed: args.seed,
        rate: args.rate,
        montage,
        duration_seconds: Some(args.seconds),
        speed: args.speed,
        ..SimulatorConfig::default()
    };
    config.validate()?;
    let mut source = config.build()?;
    if let Some(path) = args.out.as_deref().filter(|p| is_xdf(p)) {
        return write_xdf(&mut source, path);
    }
    let labels: Vec<String> = source.stream_info().labels().map(str::to_owned).collect();
    let origin = args.out.clone().unwrap_or_else(|| "<stdout>".into());
    let io_err = |e| Error::io(&origin, e);
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(BufWriter::new(
            std::fs::File::create(path).map_err(|e| Error::io(path, e))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    if args.format == OutputFormat::Csv {
        writeln!(out, "timestamp,{},marker", labels.join(",")).map_err(io_err)?;
    }
    let bar = super::progress_bar((args.seconds * args.rate).round() as u64, "samples");
    // Markers follow the chunk that holds their onset, so each chunk waits until the next item
    // and its rows carry the markers of the sample nearest to each onset.
    let mut pending: Option<Chunk> = None;
    let half_period = 0.5 / args.rate;
    let write_chunk =
        |chunk: &Chunk, events: &[Event], out: &mut Box<dyn Write>| -> std::io::Result<()> {
            for (s, &t) in chunk.timestamps().iter().enumerate() {
                let marker = events
                    .iter()
                    .find(|e| (e.onset - t).abs() < half_period)
                    .map(|e| e.label.as_str());
                match args.format {
                    OutputFormat::Csv => {
                        write!(out, "{t:.6}")?;
                        for c in 0..chunk.channels() {
                            write!(out, ",{}", chunk.channel(c)[s])?;
                        }
                        writeln!(out, ",{}", marker.unwrap_or(""))?;
                    }
                    OutputFormat::Jsonl => {
                        let values: Vec<f32> =
                            (0..chunk.channels()).map(|c| chunk.channel(c)[s]).collect();
                        let line = serde_json::json!({"t": t, "values": values, "marker": marker});
                        writeln!(out, "{line}")?;
                    }
                }
            }
            Ok(())
        };
    let mut samples = 0u64;
    while let Some(item) = source.next_item()? {
        match item {
            SourceItem::Chunk(chunk) => {
                if let Some(previous) = pending.replace(chunk) {
                    samples += previous.samples() as u64;
                    write_chunk(&previous, &[], &mut out).map_err(io_err)?;
                    bar.set_position(samples);
                }
            }
            SourceItem::Events(events) => {
                if let Some(previous) = pending.take() {
                    samples += previous.samples() as u64;
                    write_chunk(&previous, &events, &mut out).map_err(io_err)?;
                    bar.set_position(samples);
                }
            }
            SourceItem::Status(_) => {}
        }
    }
    if let Some(previous) = pending.take() {
        write_chunk(&previous, &[], &mut out).map_err(io_err)?;
    }
    out.flush().map_err(io_err)?;
    bar.finish_and_clear();
    Ok(())
}

fn is_xdf(path: &std::path::Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("xdf"))
}

/// The simulator as an XDF file. Deterministic: the same arguments give the same bytes (no
/// date in the header, clock offsets every 5 s of *stream* time rather than wall time).
fn write_xdf(source: &mut dyn Source, path: &std::path::Path) -> Result<()> {
    use neurostream::io::xdf::write::XdfWriter;
    const CLOCK_OFFSET_SECONDS: f64 = 5.0;
    let io_err = |e| Error::io(path, e);
    let mut file = BufWriter::new(std::fs::File::create(path).map_err(io_err)?);
    let mut writer = XdfWriter::new("");
    let signal = writer.add_stream(source.stream_info(), 0.0, "");
    let marker_info = source
        .marker_info()
        .cloned()
        .unwrap_or_else(|| neurostream::record::marker_stream_info("markers"));
    let markers = writer.add_stream(&marker_info, 0.0, "");
    let mut next_offset = 0.0;
    while let Some(item) = source.next_item()? {
        match item {
            SourceItem::Chunk(chunk) => {
                writer.signal(signal, &chunk);
                if let Some(t) = chunk.last_timestamp().filter(|&t| t >= next_offset) {
                    writer.clock_offsets(t, 0.0);
                    writer.boundary();
                    next_offset = t + CLOCK_OFFSET_SECONDS;
                }
            }
            SourceItem::Events(events) => {
                writer.strings(markers, events.iter().map(|e| (e.onset, e.label.as_str())));
            }
            SourceItem::Status(_) => {}
        }
        writer.write_to(&mut file).map_err(io_err)?;
    }
    writer.footers();
    writer.write_to(&mut file).map_err(io_err)?;
    file.flush().map_err(io_err)
}

#[cfg(feature = "lsl")]
fn publish(args: &SimulateArgs, montage: neurostream::source::simulator::Montage) -> Result<()> {
    if !(args.seconds.is_finite() && args.seconds >= 0.0) {
        return Err(Error::config(
            "--seconds",
            format!(
                "{} must be 0 (until interrupted) or a positive number",
                args.seconds
            ),
        ));
    }
    let config = SimulatorConfig {
        seed: args.seed,
        rate: args.rate,
        montage,
        duration_seconds: (args.seconds > 0.0).then_some(args.seconds),
        // An LSL outlet is a live stream: as fast as possible would flood every consumer.
        speed: if args.speed > 0.0 { args.speed } else { 1.0 },
        ..SimulatorConfig::default()
    };
    config.validate()?;
    let mut source = config
        .build()?
        .renamed(&args.name, args.source_id.as_deref());
    tracing::info!(
        "publishing LSL stream '{}' ({} channels at {} Hz) and '{}-markers'; Ctrl-C to stop",
        args.name,
        source.stream_info().channel_count(),
        args.rate,
        args.name
    );
    let stop = std::sync::atomic::AtomicBool::new(false);
    let published = neurostream::publish::run(&mut source, &stop, |_| {})?;
    tracing::info!(
        samples = published.samples,
        markers = published.markers,
        "simulation ended"
    );
    Ok(())
}

#[cfg(not(feature = "lsl"))]
fn publish(_: &SimulateArgs, _: neurostream::source::simulator::Montage) -> Result<()> {
    Err(Error::Unsupported(
        "this neurostream was built without LSL support; rebuild with the default features".into(),
    ))
}
