//! `neurostream info FILE`: what a recording holds.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use neurostream::io::{self, RecordedStream, StreamData};
use neurostream::record;
use neurostream::Result;

#[derive(Args)]
pub struct InfoArgs {
    /// EDF, EDF+, BDF or XDF file.
    pub file: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InfoArgs) -> Result<()> {
    let (recording, warnings) = io::open_with_warnings(&args.file)?;
    let mut streams = Vec::new();
    for stream in &recording.streams {
        let grouping = Grouping::of(stream);
        let mut event_counts: BTreeMap<String, usize> = BTreeMap::new();
        if let StreamData::Markers(events) = &stream.data {
            for e in events {
                *event_counts.entry(grouping.key(&e.label)).or_default() += 1;
            }
        }
        streams.push(serde_json::json!({
            "name": stream.info.name,
            "type": stream.info.stream_type,
            "source_id": stream.info.source_id,
            "format": stream.info.format,
            "channels": stream.info.channel_count(),
            "labels": stream.info.labels().collect::<Vec<_>>(),
            "units": stream.info.channels.iter().map(|c| c.unit.as_str()).collect::<Vec<_>>(),
            "nominal_rate": stream.info.nominal_rate,
            "samples": stream.sample_count(),
            "duration_seconds": stream.duration(),
            "first_timestamp": stream.timestamps.first(),
            "last_timestamp": stream.timestamps.last(),
            "event_counts": event_counts,
            "events_grouped_by": grouping.field(),
        }));
    }
    if args.json {
        let doc = serde_json::json!({"file": args.file, "streams": streams, "warnings": warnings});
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("json values serialize")
        );
        return Ok(());
    }
    println!("{}: {} stream(s)", args.file.display(), streams.len());
    for warning in &warnings {
        println!("  warning: {warning}");
    }
    for (i, s) in streams.iter().enumerate() {
        let rate = s["nominal_rate"].as_f64().unwrap_or(0.0);
        let rate = if rate > 0.0 {
            format!("{rate} Hz")
        } else {
            "irregular".into()
        };
        println!(
            "  [{i}] {} (type {}, {}): {} channel(s), {rate}, {} sample(s), {:.3} s",
            s["name"].as_str().unwrap_or(""),
            s["type"].as_str().unwrap_or(""),
            s["format"].as_str().unwrap_or(""),
            s["channels"],
            s["samples"],
            s["duration_seconds"].as_f64().unwrap_or(0.0),
        );
        let labels: Vec<&str> = s["labels"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        if !labels.is_empty() && s["event_counts"].as_object().is_none_or(|m| m.is_empty()) {
            let shown = labels
                .iter()
                .take(16)
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            let more = if labels.len() > 16 {
                format!(" … (+{})", labels.len() - 16)
            } else {
                String::new()
            };
            println!("      channels: {shown}{more}");
        }
        if let Some(counts) = s["event_counts"].as_object().filter(|m| !m.is_empty()) {
            let total: u64 = counts.values().filter_map(|v| v.as_u64()).sum();
            let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{k}×{v}")).collect();
            let what = match s["events_grouped_by"].as_str() {
                Some("class") => "commands",
                Some("event") => "session events",
                _ => "events",
            };
            println!("      {what}: {total} ({})", parts.join(", "));
        }
    }
    Ok(())
}

/// How the samples of a marker stream are counted: by label, or, for the streams a
/// neurostream session recording adds (one JSON message per sample), by the field that says
/// what each one is, so that 137 commands read "left×70, right×67" rather than 137 lines.
enum Grouping {
    Label,
    /// `neurostream-commands`: by the command's `class`.
    CommandClass,
    /// `neurostream-session`: by the session event's `event`.
    SessionEvent,
}

impl Grouping {
    fn of(stream: &RecordedStream) -> Grouping {
        match stream.info.source_id.as_str() {
            id if id == record::COMMANDS_STREAM => Grouping::CommandClass,
            id if id == record::SESSION_STREAM => Grouping::SessionEvent,
            _ => Grouping::Label,
        }
    }

    /// The JSON field grouped on (`None`: the label itself).
    fn field(&self) -> Option<&'static str> {
        match self {
            Grouping::Label => None,
            Grouping::CommandClass => Some("class"),
            Grouping::SessionEvent => Some("event"),
        }
    }

    fn key(&self, label: &str) -> String {
        let Some(field) = self.field() else {
            return label.to_owned();
        };
        serde_json::from_str::<serde_json::Value>(label)
            .ok()
            .and_then(|v| v.get(field).and_then(|f| f.as_str()).map(str::to_owned))
            .unwrap_or_else(|| format!("(no {field})"))
    }
}
