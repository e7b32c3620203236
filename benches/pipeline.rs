//! Throughput of the hot path (filter + band power) on a real 64-channel recording.
//!
//! `cargo bench --bench pipeline` — reports channel-samples per second (criterion's
//! "elem/s") for S001R04 (64 channels, 160 Hz, 125 s) through the motor-imagery pipeline
//! (1–40 Hz band-pass, 60 Hz notch, 1 s Welch window every 0.1 s, mu and beta log power), fed
//! in 16-sample chunks as a headset would deliver them. Needs `NEUROSTREAM_DATA` (or
//! ../shared/data/eeg); without it, runs on 125 s of simulated 64-channel EEG instead and says
//! so.
//!
//! `NEUROSTREAM_BENCH_PASSES=N` skips criterion and runs N passes over the recording, for an
//! instruction count that does not depend on machine load:
//! `valgrind --tool=callgrind --toggle-collect='*run_pass*' target/release/deps/pipeline-*`.

use criterion::{criterion_group, Criterion, Throughput};
use neurostream::io::{self, Recording};
use neurostream::pipeline::{Pipeline, PipelineConfig};
use neurostream::source::replay::Replay;
use neurostream::source::simulator::{self, Montage, SimulatorConfig};
use neurostream::source::{Pace, Source, SourceItem};
use neurostream::stream::Chunk;

fn recording() -> (Recording, &'static str) {
    let dir = std::env::var_os("NEUROSTREAM_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/eeg")
        });
    let path = dir.join("eegmmidb/S001/S001R04.edf");
    match io::open(&path) {
        Ok(recording) => (recording, "S001R04"),
        Err(e) => {
            eprintln!("{e}; benchmarking on simulated 64-channel EEG instead");
            let config = SimulatorConfig {
                montage: Montage::Eegmmidb64,
                ..SimulatorConfig::default()
            };
            (
                simulator::record(&config, 125.0).expect("simulator"),
                "simulated-64ch",
            )
        }
    }
}

fn chunks(
    recording: &Recording,
    chunk_samples: usize,
) -> (Vec<Chunk>, neurostream::stream::StreamInfo) {
    let mut replay = Replay::new(recording, None, chunk_samples, Pace::AsFastAsPossible).unwrap();
    let info = replay.stream_info().clone();
    let mut chunks = Vec::new();
    while let Some(item) = replay.next_item().unwrap() {
        if let SourceItem::Chunk(chunk) = item {
            chunks.push(chunk);
        }
    }
    (chunks, info)
}

/// One pass of the benchmarked work: a fresh pipeline over every chunk; returns the window count.
#[inline(never)]
fn run_pass(
    config: &PipelineConfig,
    info: &neurostream::stream::StreamInfo,
    work: &mut [Chunk],
    chunks: &[Chunk],
) -> usize {
    let mut pipeline = Pipeline::build(config, info, None).unwrap();
    let mut windows = 0usize;
    for (chunk, original) in work.iter_mut().zip(chunks) {
        chunk.data_mut().copy_from_slice(original.data());
        pipeline.process(chunk, |w| {
            windows += 1;
            std::hint::black_box(w.values);
        });
    }
    windows
}

fn filter_and_band_power(c: &mut Criterion) {
    let (recording, name) = recording();
    let (chunks, info) = chunks(&recording, 16);
    let config = PipelineConfig::motor_imagery();
    let channel_samples: u64 = chunks
        .iter()
        .map(|c| (c.channels() * c.samples()) as u64)
        .sum();
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(channel_samples));
    group.sample_size(20);
    let mut work = chunks.clone();
    group.bench_function(
        format!("{name}/filter+welch-band-power/64ch/1s-window/0.1s-hop"),
        |b| b.iter(|| run_pass(&config, &info, &mut work, &chunks)),
    );
    group.finish();
}

criterion_group!(benches, filter_and_band_power);
fn main() {
    if let Some(passes) = std::env::var_os("NEUROSTREAM_BENCH_PASSES") {
        let passes: usize = passes
            .to_str()
            .and_then(|p| p.parse().ok())
            .expect("NEUROSTREAM_BENCH_PASSES: a number of passes");
        let (recording, name) = recording();
        let (chunks, info) = chunks(&recording, 16);
        let config = PipelineConfig::motor_imagery();
        let mut work = chunks.clone();
        let mut windows = 0;
        for _ in 0..passes {
            windows += run_pass(&config, &info, &mut work, &chunks);
        }
        println!("{name}: {passes} passes, {windows} windows");
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
