//! Per-stage throughput at 8, 64 and 256 channels × 160 and 1000 Hz, with criterion.
//!
//! `cargo bench --bench stages` — one group per stage, one benchmark per shape, throughput in
//! channel-samples per second (criterion's `elem/s`) over 20 s of synthetic EEG-like signal in
//! 16-sample chunks, through the motor-imagery chain (`pipelines/motor_imagery.toml`):
//!
//! - `preprocess`: 1–40 Hz band-pass + 60 Hz notch, in place;
//! - `window-band-power`: the sliding 1 s window every 0.1 s + Welch mu/beta log power, on
//!   already filtered chunks;
//! - `pipeline`: both, chunk by chunk, as [`Pipeline::process`] runs them.
//!
//! `neurostream bench` measures the same stages plus the SVM, per-window latency percentiles
//! and the Python peer, and prints a table (docs/performance.md); this file gives criterion's
//! statistics and regression comparison for the same shapes.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use neurostream::features::window::Windower;
use neurostream::features::FeatureExtractor;
use neurostream::pipeline::{Pipeline, PipelineConfig};
use neurostream::stream::{ChannelInfo, Chunk, StreamInfo, ValueFormat};

const SECONDS: f64 = 20.0;
const CHUNK: usize = 16;

/// A 10 Hz rhythm with a drifting amplitude, a 22 Hz rhythm, mains and baseline wander per
/// channel (deterministic; only the shape matters for speed, the content keeps every band busy).
fn synthetic(channels: usize, rate: f64) -> (StreamInfo, Vec<Chunk>) {
    let total = (SECONDS * rate) as usize;
    let tau = std::f64::consts::TAU;
    let value = |c: usize, s: usize| {
        let t = s as f64 / rate;
        let phase = c as f64 * 0.37;
        let alpha = 20.0 * (1.0 + 0.5 * (tau * 0.2 * t + phase).sin());
        (alpha * (tau * 10.0 * t + phase).sin()
            + 6.0 * (tau * 22.0 * t + 2.0 * phase).sin()
            + 5.0 * (tau * 60.0 * t).sin()
            + 30.0 * (tau * 0.3 * t + phase).sin()) as f32
    };
    let chunks = (0..total)
        .step_by(CHUNK)
        .map(|start| {
            let n = CHUNK.min(total - start);
            let data = (0..channels)
                .flat_map(|c| (start..start + n).map(move |s| value(c, s)))
                .collect();
            let stamps = (start..start + n).map(|s| s as f64 / rate).collect();
            Chunk::from_channel_major(channels, data, stamps)
        })
        .collect();
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
    (info, chunks)
}

fn refill(work: &mut [Chunk], original: &[Chunk]) {
    for (w, o) in work.iter_mut().zip(original) {
        w.data_mut().copy_from_slice(o.data());
    }
}

fn stages(c: &mut Criterion) {
    let config = PipelineConfig::motor_imagery();
    let shapes: Vec<(usize, f64)> = [8, 64, 256]
        .into_iter()
        .flat_map(|ch| [160.0, 1000.0].map(|rate| (ch, rate)))
        .collect();
    let data: Vec<(String, StreamInfo, Vec<Chunk>)> = shapes
        .iter()
        .map(|&(ch, rate)| {
            let (info, chunks) = synthetic(ch, rate);
            (format!("{ch}ch-{rate}Hz"), info, chunks)
        })
        .collect();
    let elements = |chunks: &[Chunk]| {
        chunks
            .iter()
            .map(|c| (c.channels() * c.samples()) as u64)
            .sum::<u64>()
    };

    let mut group = c.benchmark_group("preprocess");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    for (name, info, chunks) in &data {
        group.throughput(Throughput::Elements(elements(chunks)));
        let mut work = chunks.clone();
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                refill(&mut work, chunks);
                let mut pre = config.preprocess.build(info).expect("preprocess");
                for chunk in work.iter_mut() {
                    pre.process(chunk);
                }
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("window-band-power");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    for (name, info, chunks) in &data {
        group.throughput(Throughput::Elements(elements(chunks)));
        let rate = info.nominal_rate;
        let mut filtered = chunks.clone();
        let mut pre = config.preprocess.build(info).expect("preprocess");
        for chunk in filtered.iter_mut() {
            pre.process(chunk);
        }
        let labels: Vec<String> = info.labels().map(str::to_owned).collect();
        let (window, hop) = config.features.window_and_hop(rate).expect("window");
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let mut windower = Windower::new(labels.len(), window, hop);
                let mut extractor = config
                    .features
                    .build_extractor(&labels, rate, window)
                    .expect("band power");
                let mut out = vec![0.0f32; extractor.names().len()];
                for chunk in &filtered {
                    windower.push(chunk, rate, |w| {
                        extractor.extract(w, &mut out);
                        std::hint::black_box(&out);
                    });
                }
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("pipeline");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    for (name, info, chunks) in &data {
        group.throughput(Throughput::Elements(elements(chunks)));
        let mut work = chunks.clone();
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                refill(&mut work, chunks);
                let mut pipeline = Pipeline::build(&config, info, None).expect("pipeline");
                let mut windows = 0usize;
                for chunk in work.iter_mut() {
                    pipeline.process(chunk, |w| {
                        windows += 1;
                        std::hint::black_box(w.values);
                    });
                }
                windows
            })
        });
    }
    group.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
