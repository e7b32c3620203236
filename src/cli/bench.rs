//! `neurostream bench`: throughput and per-window latency of the hot path, per stage and for
//! the whole pipeline, at 8/64/256 channels × 160/1000 Hz (synthetic) and on a real recording,
//! printed as a Markdown table; with `--peer`, the same workload through the Python pipeline in
//! `benches/peer/` on the same recording, and the throughput ratio.
//!
//! The workload is the motor-imagery chain (`pipelines/motor_imagery.toml`): order-4
//! Butterworth 1–40 Hz band-pass, 60 Hz notch (Q 30), 1 s window every 0.1 s, Welch band power
//! (0.5 s Hann segments, 50 % overlap) in mu (8–12 Hz) and beta (13–30 Hz), log; then an RBF
//! SVM (C 1, γ "scale", standardised, Platt probabilities). The SVM is fitted before timing on
//! every [`TRAIN_EVERY`]-th window, labelled `(index / LABEL_BLOCK) % 2`: a rule the Python
//! peer applies too, so both decoders are fitted on the same examples and keep a comparable
//! number of support vectors (what their prediction cost depends on).
//!
//! Definitions (one thread, everything in memory, the source is not timed):
//! - throughput: channel-samples (input channels × samples) per second of processing time;
//! - per-window latency: the duration of the `process` call of the chunk that completed a
//!   window (filtering that chunk + band power + SVM), pooled over all passes;
//! - stage figures: each stage alone over the same chunks (preprocess; windowing + band power
//!   on the filtered chunks; SVM `predict_proba` per window).
//!
//! Timings are wall-clock: on a shared machine they depend on its load, so report `uptime`
//! next to them.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use clap::Args;
use ndarray::Array2;
use neurostream::decoder::svm::{Svm, SvmConfig};
use neurostream::decoder::Decoder;
use neurostream::features::window::Windower;
use neurostream::features::FeatureExtractor;
use neurostream::pipeline::{Pipeline, PipelineConfig};
use neurostream::source::replay::Replay;
use neurostream::source::{Pace, Source, SourceItem};
use neurostream::stream::{ChannelInfo, Chunk, StreamInfo, ValueFormat};
use neurostream::{io, Error, Result};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

/// Fit the SVM on one window in this many (about 120 examples per 2 minutes of signal: the
/// size of a calibration session, so the support-vector count is a realistic one).
pub const TRAIN_EVERY: usize = 10;
/// Alternate the training label every this many windows (4 s at a 0.1 s hop, a trial's length).
pub const LABEL_BLOCK: usize = 40;

#[derive(Args)]
pub struct BenchArgs {
    /// The real recording (default: $NEUROSTREAM_DATA/eegmmidb/S001/S001R04.edf).
    #[arg(long)]
    pub recording: Option<PathBuf>,
    /// Seconds of synthetic signal per shape.
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    /// Samples per chunk, as a headset delivers them.
    #[arg(long, default_value_t = 16)]
    pub chunk: usize,
    /// Passes over each signal; throughputs are the best pass, latencies pooled over all.
    #[arg(long, default_value_t = 3)]
    pub passes: usize,
    /// Only the real recording (skip the synthetic shapes).
    #[arg(long)]
    pub recording_only: bool,
    /// Run this Python peer (benches/peer/peer.py) on the same recording after ours and
    /// report the throughput ratio.
    #[arg(long)]
    pub peer: Option<PathBuf>,
    /// Python interpreter for --peer.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// The tangent-space workload instead (`pipelines/live_lsl.toml`'s chain: 8–32 Hz
    /// band-pass, 3 s windows every 0.1 s, OAS covariance, tangent space, shrinkage LDA,
    /// re-centring on) at 64 ch × 160 Hz and 64 ch × 1000 Hz (synthetic) and on the real
    /// recording; with --peer (benches/peer/tangent_peer.py), pyRiemann on the same windows.
    #[arg(long)]
    pub tangent_space: bool,
}

/// One signal to run: its stream description and its chunks.
struct Case {
    name: String,
    info: StreamInfo,
    chunks: Vec<Chunk>,
}

/// What one case measured.
#[derive(Debug, Clone, Default)]
struct Row {
    name: String,
    channels: usize,
    rate: f64,
    preprocess: f64,
    window_band_power: f64,
    svm_us: f64,
    pipeline: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    windows: usize,
    support_vectors: usize,
    feature_mean: f64,
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.chunk == 0 || args.passes == 0 {
        return Err(Error::Other(
            "--chunk and --passes must be at least 1".into(),
        ));
    }
    if args.tangent_space {
        return tangent::run(&args);
    }
    let config = workload();
    let mut rows = Vec::new();
    if !args.recording_only {
        for channels in [8, 64, 256] {
            for rate in [160.0, 1000.0] {
                let case = synthetic(channels, rate, args.seconds, args.chunk);
                eprintln!("bench: {} ...", case.name);
                rows.push(measure(&case, &config, args.passes)?);
            }
        }
    }
    let path = args.recording.clone().unwrap_or_else(default_recording);
    let case = recorded(&path, args.chunk)?;
    eprintln!("bench: {} ...", case.name);
    let ours = measure(&case, &config, args.passes)?;
    rows.push(ours);
    print_table(&rows);

    if let Some(peer) = &args.peer {
        let ours = rows.last().expect("the recording row");
        eprintln!(
            "bench: Python peer {} on {} ...",
            peer.display(),
            path.display()
        );
        let output = Command::new(&args.python)
            .arg(peer)
            .arg(&path)
            .args(["--chunk", &args.chunk.to_string()])
            .args(["--passes", &args.passes.to_string()])
            .args(["--train-every", &TRAIN_EVERY.to_string()])
            .args(["--label-block", &LABEL_BLOCK.to_string()])
            .output()
            .map_err(|e| Error::Other(format!("cannot run {}: {e}", args.python)))?;
        if !output.status.success() {
            return Err(Error::Other(format!(
                "the Python peer failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        let report: serde_json::Value = serde_json::from_slice(&output.stdout)
            .map_err(|e| Error::Other(format!("the Python peer's output is not JSON: {e}")))?;
        let get = |key: &str| {
            report[key].as_f64().ok_or_else(|| {
                Error::Other(format!("the Python peer's report has no number {key:?}"))
            })
        };
        let peer_row = Row {
            name: format!("{} (Python peer)", ours.name),
            channels: ours.channels,
            rate: ours.rate,
            preprocess: get("preprocess")?,
            window_band_power: get("window_band_power")?,
            svm_us: get("svm_us")?,
            pipeline: get("pipeline")?,
            p50_us: get("p50_us")?,
            p99_us: get("p99_us")?,
            p999_us: get("p999_us")?,
            windows: get("windows")? as usize,
            support_vectors: get("support_vectors")? as usize,
            feature_mean: get("feature_mean")?,
        };
        println!();
        println!("Same recording, same chunks, same workload, one session:");
        print_table(&[ours.clone(), peer_row]);
        let peer_pipeline = get("pipeline")?;
        println!();
        println!(
            "throughput ratio (neurostream / Python peer): {:.1}x  ({} vs {})",
            ours.pipeline / peer_pipeline,
            mega(ours.pipeline),
            mega(peer_pipeline)
        );
        println!(
            "peer: {}",
            report["versions"]
                .as_str()
                .unwrap_or("(versions not reported)")
        );
    }
    Ok(())
}

/// The motor-imagery chain with an RBF SVM on top (the decoder is fitted by [`measure`]).
fn workload() -> PipelineConfig {
    let mut config = PipelineConfig::motor_imagery();
    config.decoder = None;
    config
}

fn default_recording() -> PathBuf {
    std::env::var_os("NEUROSTREAM_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/data/eeg"))
        .join("eegmmidb/S001/S001R04.edf")
}

fn recorded(path: &std::path::Path, chunk: usize) -> Result<Case> {
    let recording = io::open(path)?;
    let mut replay = Replay::new(&recording, None, chunk, Pace::AsFastAsPossible)?;
    let info = replay.stream_info().clone();
    let mut chunks = Vec::new();
    while let Some(item) = replay.next_item()? {
        if let SourceItem::Chunk(c) = item {
            chunks.push(c);
        }
    }
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "recording".into());
    Ok(Case { name, info, chunks })
}

/// EEG-like test signal: per channel a 10 Hz rhythm whose amplitude drifts slowly, a 22 Hz
/// rhythm, 60 Hz mains, a slow baseline wander and white noise, in µV, seeded. Only its shape
/// matters for speed; the content keeps every filter and band busy with realistic magnitudes.
fn synthetic(channels: usize, rate: f64, seconds: f64, chunk: usize) -> Case {
    let total = (seconds * rate).round() as usize;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let noise = Normal::new(0.0f32, 8.0).expect("valid normal");
    let tau = std::f64::consts::TAU;
    let mut data = vec![0.0f32; channels * total];
    for c in 0..channels {
        let phase = c as f64 * 0.37;
        for (s, v) in data[c * total..(c + 1) * total].iter_mut().enumerate() {
            let t = s as f64 / rate;
            let alpha = 20.0 * (1.0 + 0.5 * (tau * 0.2 * t + phase).sin());
            let x = alpha * (tau * 10.0 * t + phase).sin()
                + 6.0 * (tau * 22.0 * t + 2.0 * phase).sin()
                + 5.0 * (tau * 60.0 * t).sin()
                + 30.0 * (tau * 0.3 * t + phase).sin();
            *v = x as f32 + noise.sample(&mut rng);
        }
    }
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < total {
        let n = chunk.min(total - start);
        let mut buf = Vec::with_capacity(channels * n);
        for c in 0..channels {
            buf.extend_from_slice(&data[c * total + start..c * total + start + n]);
        }
        let stamps = (start..start + n).map(|s| s as f64 / rate).collect();
        chunks.push(Chunk::from_channel_major(channels, buf, stamps));
        start += n;
    }
    let info = StreamInfo {
        name: "synthetic".into(),
        stream_type: "EEG".into(),
        source_id: String::new(),
        channels: (0..channels)
            .map(|c| ChannelInfo::new(format!("ch{c}"), "uV"))
            .collect(),
        nominal_rate: rate,
        format: ValueFormat::Float32,
    };
    Case {
        name: format!("synthetic {channels} ch × {rate} Hz"),
        info,
        chunks,
    }
}

fn measure(case: &Case, config: &PipelineConfig, passes: usize) -> Result<Row> {
    let info = &case.info;
    let rate = info.nominal_rate;
    let channel_samples: usize = case.chunks.iter().map(|c| c.channels() * c.samples()).sum();
    let mut work = case.chunks.clone();
    let refill = |work: &mut [Chunk]| {
        for (w, original) in work.iter_mut().zip(&case.chunks) {
            w.data_mut().copy_from_slice(original.data());
        }
    };

    // Untimed: the features of every window, to fit the SVM and to time it alone.
    let mut pipeline = Pipeline::build(config, info, None)?;
    let dim = pipeline.feature_names().len();
    let mut all_features: Vec<f32> = Vec::new();
    for chunk in work.iter_mut() {
        pipeline.process(chunk, |w| all_features.extend_from_slice(w.values));
    }
    let windows = all_features.len() / dim;
    if windows < 2 * LABEL_BLOCK {
        return Err(Error::Other(format!(
            "{}: {windows} windows is too short to fit the SVM; use more --seconds",
            case.name
        )));
    }
    let feature_mean =
        all_features.iter().map(|&v| f64::from(v)).sum::<f64>() / all_features.len() as f64;
    let train: Vec<usize> = (0..windows).step_by(TRAIN_EVERY).collect();
    let mut x = Array2::<f32>::zeros((train.len(), dim));
    let mut labels = Vec::with_capacity(train.len());
    for (row, &w) in train.iter().enumerate() {
        x.row_mut(row)
            .as_slice_mut()
            .expect("contiguous row")
            .copy_from_slice(&all_features[w * dim..(w + 1) * dim]);
        labels.push((w / LABEL_BLOCK) % 2);
    }
    let mut svm = Svm::new(SvmConfig::default());
    svm.fit(x.view(), &labels)?;
    let mut p = vec![0.0f64; svm.classes()];

    let (window, hop) = config.features.window_and_hop(rate)?;
    let labels_out: Vec<String> = info.labels().map(str::to_owned).collect();
    let mut best = [f64::INFINITY; 4];
    let mut latencies: Vec<f64> = Vec::new();
    for _ in 0..passes {
        // Stage 1: preprocessing alone.
        refill(&mut work);
        let mut pre = config.preprocess.build(info)?;
        let start = Instant::now();
        for chunk in work.iter_mut() {
            pre.process(chunk);
        }
        best[0] = best[0].min(start.elapsed().as_secs_f64());

        // Stage 2: windowing + band power on the filtered chunks.
        let mut windower = Windower::new(labels_out.len(), window, hop);
        let mut extractor = config.features.build_extractor(&labels_out, rate, window)?;
        let mut out = vec![0.0f32; dim];
        let start = Instant::now();
        for chunk in work.iter() {
            windower.push(chunk, rate, |w| {
                extractor.extract(w, &mut out);
                std::hint::black_box(&out);
            });
        }
        best[1] = best[1].min(start.elapsed().as_secs_f64());

        // Stage 3: the SVM alone, on every window's features.
        let start = Instant::now();
        for row in all_features.chunks_exact(dim) {
            svm.predict_proba(std::hint::black_box(row), &mut p);
        }
        best[2] = best[2].min(start.elapsed().as_secs_f64() / windows as f64);

        // The whole chain, chunk by chunk.
        refill(&mut work);
        let mut pipeline = Pipeline::build(config, info, None)?;
        let mut total = 0.0;
        for chunk in work.iter_mut() {
            let mut emitted = false;
            let start = Instant::now();
            pipeline.process(chunk, |w| {
                svm.predict_proba(w.values, &mut p);
                emitted = true;
            });
            let dt = start.elapsed().as_secs_f64();
            std::hint::black_box(&p);
            total += dt;
            if emitted {
                latencies.push(dt);
            }
        }
        best[3] = best[3].min(total);
    }
    latencies.sort_by(f64::total_cmp);
    let cs = channel_samples as f64;
    Ok(Row {
        name: case.name.clone(),
        channels: info.channel_count(),
        rate,
        preprocess: cs / best[0],
        window_band_power: cs / best[1],
        svm_us: best[2] * 1e6,
        pipeline: cs / best[3],
        p50_us: percentile(&latencies, 0.50) * 1e6,
        p99_us: percentile(&latencies, 0.99) * 1e6,
        p999_us: percentile(&latencies, 0.999) * 1e6,
        windows: latencies.len(),
        support_vectors: svm.n_support(),
        feature_mean,
    })
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn mega(per_second: f64) -> String {
    format!("{:.2} M/s", per_second / 1e6)
}

fn print_table(rows: &[Row]) {
    println!(
        "| case | preprocess | window + band power | SVM per window | whole pipeline | × real time | p50 | p99 | p99.9 | windows timed | SVs | mean feature |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.1} µs | {} | {:.0} | {:.0} µs | {:.0} µs | {:.0} µs | {} | {} | {:.3} |",
            r.name,
            mega(r.preprocess),
            mega(r.window_band_power),
            r.svm_us,
            mega(r.pipeline),
            r.pipeline / (r.channels as f64 * r.rate),
            r.p50_us,
            r.p99_us,
            r.p999_us,
            r.windows,
            r.support_vectors,
            r.feature_mean,
        );
    }
}

mod tangent;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_window_is_timed_once_per_pass() {
        // 10 s at 160 Hz: the first window after 160 samples, then one every 16 samples.
        let case = synthetic(8, 160.0, 10.0, 16);
        let row = measure(&case, &workload(), 2).unwrap();
        assert_eq!(row.windows, 2 * ((1600 - 160) / 16 + 1));
        assert!(row.support_vectors > 0 && row.support_vectors <= 10);
        assert!(row.p50_us <= row.p99_us && row.p99_us <= row.p999_us);
        assert!(row.feature_mean.is_finite());
    }

    #[test]
    fn too_short_a_signal_is_refused() {
        let case = synthetic(2, 160.0, 3.0, 16);
        let err = measure(&case, &workload(), 1).unwrap_err().to_string();
        assert!(err.contains("too short"), "{err}");
    }

    #[test]
    fn the_64_channel_demo_pipeline_is_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/demo64.toml");
        let config = PipelineConfig::from_file(&path).unwrap();
        config.validate().unwrap();
        let source = config.source.build().unwrap();
        assert_eq!(source.stream_info().channel_count(), 64);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 500.0);
        assert_eq!(percentile(&v, 0.99), 990.0);
        assert_eq!(percentile(&v, 0.999), 999.0);
        assert_eq!(percentile(&v[..1], 0.999), 1.0);
    }
}
