//! `neurostream bench --tangent-space`: per-window latency of the tangent-space chain (the live
//! default, `pipelines/live_lsl.toml`) at 64 ch × 160 Hz and 64 ch × 1000 Hz, 3 s windows every
//! 0.1 s, and, with `--peer benches/peer/tangent_peer.py`, pyRiemann doing the same per window
//! on the same filtered windows in the same run.
//!
//! Workload: order-4 Butterworth 8–32 Hz band-pass; OAS covariance of each 3 s window; tangent
//! vector at the reference (Riemannian mean of the training covariances); shrinkage LDA
//! probabilities. The reference and the LDA are fitted before timing on every
//! [`super::TRAIN_EVERY`]-th window, labelled `(index / LABEL_BLOCK) % 2`, by both sides.
//!
//! Three figures per case (nearest-rank percentiles over every window of every pass):
//! - *chain*: the `Pipeline::process` call of the chunk that completed a window: filtering that
//!   chunk, covariance, tangent vector, LDA, and (one window in 30, as live) re-centring;
//! - *TS + LDA*: our covariance + tangent vector + LDA alone on each filtered window — the work
//!   pyRiemann's row does;
//! - *pyRiemann*: `Covariances(estimator="oas").transform` + `TangentSpace.transform` +
//!   `LinearDiscriminantAnalysis.predict_proba` on each window, one window per call.
//!
//! The ratio is pyRiemann's percentile over ours (TS + LDA). Mean |feature| of both sides is
//! printed as a check that both compute the same thing.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use ndarray::Array2;
use neurostream::decoder::Decoder;
use neurostream::features::window::Windower;
use neurostream::features::FeatureExtractor;
use neurostream::model::{Fingerprint, Model};
use neurostream::pipeline::{Pipeline, PipelineConfig};
use neurostream::stream::Chunk;
use neurostream::{Error, Result};

use super::{
    default_recording, percentile, recorded, synthetic, BenchArgs, Case, LABEL_BLOCK, TRAIN_EVERY,
};

/// The chain of `pipelines/live_lsl.toml` (its source aside: the bench feeds chunks itself).
const WORKLOAD: &str = r#"
description = "bench: tangent space + shrinkage LDA, as pipelines/live_lsl.toml"
[source]
kind = "simulator"
[preprocess]
channels = []
reference = "none"
[preprocess.bandpass]
low = 8.0
high = 32.0
order = 4
[features]
window_seconds = 3.0
hop_seconds = 0.1
[features.tangent_space]
shrinkage = "oas"
[decoder]
kind = "lda"
shrinkage = "auto"
[training]
classes = [{ event = "T1", name = "left" }, { event = "T2", name = "right" }]
"#;

pub fn workload() -> PipelineConfig {
    PipelineConfig::from_toml(WORKLOAD, "bench tangent-space workload")
        .expect("the embedded workload is checked by a test")
}

/// Latency percentiles in µs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

impl Percentiles {
    fn of(mut seconds: Vec<f64>) -> Self {
        seconds.sort_by(f64::total_cmp);
        Percentiles {
            p50: percentile(&seconds, 0.50) * 1e6,
            p99: percentile(&seconds, 0.99) * 1e6,
            p999: percentile(&seconds, 0.999) * 1e6,
        }
    }
}

/// What one case measured.
#[derive(Debug, Clone, Default)]
pub struct TsRow {
    pub name: String,
    pub windows: usize,
    pub chain: Percentiles,
    pub features: Percentiles,
    /// The same with the direct computation (whole-window covariance, cold eigensolver):
    /// the path before the speed work.
    pub direct: Percentiles,
    pub mean_abs_feature: f64,
    pub peer: Option<(Percentiles, f64)>,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let config = workload();
    config.validate()?;
    let mut cases = Vec::new();
    if !args.recording_only {
        cases.push(synthetic(64, 160.0, args.seconds, args.chunk));
        cases.push(synthetic(64, 1000.0, args.seconds, args.chunk));
    }
    let path = args.recording.clone().unwrap_or_else(default_recording);
    cases.push(recorded(&path, args.chunk)?);
    let mut rows = Vec::new();
    let mut versions = None;
    print_header();
    for case in &cases {
        eprintln!("bench: tangent space, {} ...", case.name);
        let (mut row, filtered) = measure(case, &config, args.passes)?;
        if let Some(peer) = &args.peer {
            eprintln!("bench: pyRiemann peer on {} ...", case.name);
            let (p, mean, v) = run_peer(args, peer, case, &config, &filtered)?;
            row.peer = Some((p, mean));
            versions = Some(v);
        }
        print_row(&row);
        rows.push(row);
    }
    if let Some(v) = versions {
        println!();
        println!("peer: {v}");
    }
    Ok(())
}

/// Time the chain and the feature stage on `case`; returns the row and the filtered signal
/// (channel-major, the whole recording) for the peer.
pub fn measure(case: &Case, config: &PipelineConfig, passes: usize) -> Result<(TsRow, Vec<f32>)> {
    let info = &case.info;
    let rate = info.nominal_rate;
    let (window, hop) = config.features.window_and_hop(rate)?;
    let mut pre = config.preprocess.build(info)?;
    let labels_out: Vec<String> = pre.output_info().labels().map(str::to_owned).collect();
    let channels = labels_out.len();
    let mut filtered_chunks: Vec<Chunk> = case.chunks.clone();
    for chunk in filtered_chunks.iter_mut() {
        pre.process(chunk);
    }

    // Untimed: the training windows (every TRAIN_EVERY-th), to fit the reference and the LDA.
    let mut windower = Windower::new(channels, window, hop);
    let mut train_data: Vec<f32> = Vec::new();
    let mut train_labels = Vec::new();
    let mut index = 0;
    for chunk in &filtered_chunks {
        windower.push(chunk, rate, |w| {
            if index % TRAIN_EVERY == 0 {
                train_data.extend_from_slice(w.data);
                train_labels.push((index / LABEL_BLOCK) % 2);
            }
            index += 1;
        });
    }
    let total_windows = index;
    if train_labels.iter().all(|&l| l == 0) || train_labels.len() < 4 {
        return Err(Error::Other(format!(
            "{}: {total_windows} windows is too short to fit the reference and the LDA; use more --seconds",
            case.name
        )));
    }
    let size = channels * window;
    let train_windows: Vec<neurostream::features::Window<'_>> = train_data
        .chunks_exact(size)
        .map(|data| neurostream::features::Window {
            data,
            channels,
            samples: window,
            rate,
            end_timestamp: 0.0,
            slide: None,
        })
        .collect();
    let mut extractor = config.features.build_extractor(&labels_out, rate, window)?;
    extractor.fit(&train_windows, &train_labels)?;
    let dim = extractor.names().len();
    let mut x = Array2::<f32>::zeros((train_windows.len(), dim));
    for (row, w) in train_windows.iter().enumerate() {
        extractor.extract(w, x.row_mut(row).as_slice_mut().expect("contiguous row"));
    }
    let decoder_config = config
        .decoder
        .as_ref()
        .ok_or_else(|| Error::Other("the tangent-space workload has a decoder".into()))?;
    let mut decoder = decoder_config.build(2)?;
    decoder.fit(x.view(), &train_labels)?;
    let model = Model::new(
        Fingerprint::new(config, labels_out.clone(), rate, window),
        config.training.class_names(),
        extractor.state(),
        decoder,
        vec!["bench".into()],
        train_labels.len(),
    );

    let mut chain = Vec::new();
    let mut features = Vec::new();
    let mut direct = Vec::new();
    let mut abs_sum = 0.0;
    let mut abs_count = 0usize;
    let mut work = case.chunks.clone();
    for _ in 0..passes {
        // The whole chain through the pipeline, chunk by chunk.
        for (w, original) in work.iter_mut().zip(&case.chunks) {
            w.data_mut().copy_from_slice(original.data());
        }
        let mut pipeline = Pipeline::build(config, info, Some(model.clone()))?;
        for chunk in work.iter_mut() {
            let mut emitted = false;
            let start = Instant::now();
            pipeline.process(chunk, |w| {
                std::hint::black_box(w.probabilities);
                emitted = true;
            });
            let dt = start.elapsed().as_secs_f64();
            if emitted {
                chain.push(dt);
            }
        }

        // Covariance + tangent vector + LDA alone, per filtered window (no re-centring:
        // pyRiemann has none online).
        let mut extractor = config.features.build_extractor(&labels_out, rate, window)?;
        extractor.restore(model.extractor.clone())?;
        let direct_stage = match &model.extractor {
            neurostream::features::extractor::ExtractorState::TangentSpace(ts) => ts.clone(),
            _ => {
                return Err(Error::Other(
                    "the workload's feature stage is tangent space".into(),
                ))
            }
        };
        let mut decoder = model.decoder.clone();
        let mut out_direct = vec![0.0f32; dim];
        let mut windower = Windower::new(channels, window, hop);
        let mut out = vec![0.0f32; dim];
        let mut p = [0.0f64; 2];
        abs_sum = 0.0;
        abs_count = 0;
        for chunk in &filtered_chunks {
            windower.push(chunk, rate, |w| {
                let start = Instant::now();
                extractor.extract(w, &mut out);
                decoder.predict_proba(&out, &mut p);
                features.push(start.elapsed().as_secs_f64());
                std::hint::black_box(&p);
                let start = Instant::now();
                direct_stage.extract_direct(w, &mut out_direct);
                decoder.predict_proba(&out_direct, &mut p);
                direct.push(start.elapsed().as_secs_f64());
                std::hint::black_box(&p);
                abs_sum += out.iter().map(|v| f64::from(v.abs())).sum::<f64>();
                abs_count += out.len();
            });
        }
    }
    let mut filtered =
        vec![0.0f32; channels * filtered_chunks.iter().map(Chunk::samples).sum::<usize>()];
    let total = filtered.len() / channels.max(1);
    let mut offset = 0;
    for chunk in &filtered_chunks {
        for c in 0..channels {
            filtered[c * total + offset..c * total + offset + chunk.samples()]
                .copy_from_slice(chunk.channel(c));
        }
        offset += chunk.samples();
    }
    let row = TsRow {
        name: case.name.clone(),
        windows: features.len(),
        chain: Percentiles::of(chain),
        features: Percentiles::of(features),
        direct: Percentiles::of(direct),
        mean_abs_feature: abs_sum / abs_count.max(1) as f64,
        peer: None,
    };
    Ok((row, filtered))
}

/// Run the pyRiemann peer on the filtered signal; its percentiles, mean |feature| and versions.
fn run_peer(
    args: &BenchArgs,
    peer: &Path,
    case: &Case,
    config: &PipelineConfig,
    filtered: &[f32],
) -> Result<(Percentiles, f64, String)> {
    let rate = case.info.nominal_rate;
    let (window, hop) = config.features.window_and_hop(rate)?;
    let channels = case.info.channel_count();
    let file =
        std::env::temp_dir().join(format!("neurostream-bench-ts-{}.f32", std::process::id()));
    let bytes: Vec<u8> = filtered.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&file, bytes).map_err(|e| Error::io(&file, e))?;
    let output = Command::new(&args.python)
        .arg(peer)
        .arg(&file)
        .args(["--channels", &channels.to_string()])
        .args(["--window", &window.to_string()])
        .args(["--hop", &hop.to_string()])
        .args(["--passes", &args.passes.to_string()])
        .args(["--train-every", &TRAIN_EVERY.to_string()])
        .args(["--label-block", &LABEL_BLOCK.to_string()])
        .output();
    let _ = std::fs::remove_file(&file);
    let output = output.map_err(|e| Error::Other(format!("cannot run {}: {e}", args.python)))?;
    if !output.status.success() {
        return Err(Error::Other(format!(
            "the pyRiemann peer failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| Error::Other(format!("the pyRiemann peer's output is not JSON: {e}")))?;
    let get = |key: &str| {
        report[key].as_f64().ok_or_else(|| {
            Error::Other(format!("the pyRiemann peer's report has no number {key:?}"))
        })
    };
    Ok((
        Percentiles {
            p50: get("p50_us")?,
            p99: get("p99_us")?,
            p999: get("p999_us")?,
        },
        get("mean_abs_feature")?,
        report["versions"]
            .as_str()
            .unwrap_or("(versions not reported)")
            .to_owned(),
    ))
}

fn print_header() {
    println!(
        "| case | windows timed | chain p50 / p99 / p99.9 | TS + LDA direct (before) p50 / p99 / p99.9 | TS + LDA p50 / p99 / p99.9 | pyRiemann p50 / p99 / p99.9 | pyRiemann ÷ ours p50 / p99 | mean abs feature (ours / pyRiemann) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
}

fn print_row(r: &TsRow) {
    let fmt = |p: &Percentiles| format!("{:.0} / {:.0} / {:.0} µs", p.p50, p.p99, p.p999);
    let (peer, ratio, peer_mean) = match &r.peer {
        Some((p, mean)) => (
            fmt(p),
            format!(
                "{:.1}× / {:.1}×",
                p.p50 / r.features.p50,
                p.p99 / r.features.p99
            ),
            format!("{mean:.4}"),
        ),
        None => ("–".into(), "–".into(), "–".into()),
    };
    println!(
        "| {} | {} | {} | {} | {} | {} | {} | {:.4} / {} |",
        r.name,
        r.windows,
        fmt(&r.chain),
        fmt(&r.direct),
        fmt(&r.features),
        peer,
        ratio,
        r.mean_abs_feature,
        peer_mean,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_is_valid_and_every_window_is_timed() {
        let config = workload();
        config.validate().unwrap();
        // 12 s at 160 Hz: windows at 480 samples, then every 16.
        let case = synthetic(4, 160.0, 12.0, 16);
        let (row, filtered) = measure(&case, &config, 2).unwrap();
        assert_eq!(row.windows, 2 * ((1920 - 480) / 16 + 1));
        assert_eq!(filtered.len(), 4 * 1920);
        let f = row.features;
        assert!(f.p50 <= f.p99 && f.p99 <= f.p999);
        assert!(row.mean_abs_feature.is_finite() && row.mean_abs_feature > 0.0);
    }
}
