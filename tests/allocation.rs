//! The hot path does not allocate once warmed up: a counting global allocator around
//! `Pipeline::process` (preprocess → window → features → decoder), and around
//! `Engine::on_chunk` for the live default (tangent space with re-centring, LDA, controller).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use neurostream::engine::{Engine, EngineSink};

/// A sink that wants nothing: only the engine's own work is counted.
struct NoSink;

impl EngineSink for NoSink {}
use neurostream::epochs;
use neurostream::evaluate;
use neurostream::io::Recording;
use neurostream::pipeline::{Pipeline, PipelineConfig};
use neurostream::source::replay::Replay;
use neurostream::source::simulator::{self, Montage, SimulatorConfig};
use neurostream::source::{Pace, Source, SourceItem};
use neurostream::stream::{Chunk, StreamInfo};

struct Counting;

thread_local! {
    /// Allocations by this thread: the tests run in parallel, and each counts only its own.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: during thread teardown the slot may be gone; such allocations are not ours.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

fn allocations() -> usize {
    ALLOCATIONS.with(|c| c.get())
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn pipeline(name: &str) -> PipelineConfig {
    PipelineConfig::from_file(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("pipelines")
            .join(name),
    )
    .unwrap()
}

/// Allocations made by `pipeline.process` over `chunks` after the first `warm_up` chunks.
fn steady_state_allocations(
    pipeline: &mut Pipeline,
    chunks: &[Chunk],
    warm_up: usize,
) -> (usize, usize) {
    let mut work = chunks[0].clone();
    let mut windows = 0;
    let mut counted = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        work.data_mut().copy_from_slice(chunk.data());
        work.timestamps_mut().copy_from_slice(chunk.timestamps());
        let before = allocations();
        pipeline.process(&mut work, |w| {
            windows += 1;
            std::hint::black_box(w.values);
        });
        if i >= warm_up {
            counted += allocations() - before;
        }
    }
    (counted, windows)
}

/// 90 s of simulated 64-channel EEGMMIDB-like EEG with cues, its stream description, and its
/// samples as a headset delivers them (chunks of 16).
fn simulated_eegmmidb() -> (Recording, StreamInfo, Vec<Chunk>) {
    let sim = SimulatorConfig {
        montage: Montage::Eegmmidb64,
        speed: 0.0,
        ..Default::default()
    };
    let recording = simulator::record(&sim, 90.0).unwrap();
    let mut replay = Replay::new(&recording, None, 16, Pace::AsFastAsPossible).unwrap();
    let info = replay.stream_info().clone();
    let mut chunks = Vec::new();
    while let Some(item) = replay.next_item().unwrap() {
        if let SourceItem::Chunk(chunk) = item {
            chunks.push(chunk);
        }
    }
    (recording, info, chunks)
}

#[test]
fn band_power_and_decoders_do_not_allocate_per_chunk() {
    let (recording, info, chunks) = simulated_eegmmidb();
    for name in [
        "motor_imagery.toml",
        "mi_bandpower_mlp.toml",
        "mi_bandpower_svm.toml",
        "mi_csp_lda.toml",
    ] {
        let config = pipeline(name);
        let model = config.decoder.as_ref().map(|_| {
            let epochs = epochs::cut(&recording, &config).unwrap();
            evaluate::train(&config, &epochs, vec!["sim".into()]).unwrap()
        });
        let mut pipeline = Pipeline::build(&config, &info, model).unwrap();
        // Warm up over the first window length (3 s = 30 chunks of 16 samples at 160 Hz).
        let (allocations, windows) = steady_state_allocations(&mut pipeline, &chunks, 40);
        assert!(windows > 700, "{name}: {windows} windows");
        assert_eq!(
            allocations, 0,
            "{name}: {allocations} allocations in steady state"
        );
    }
}

/// The live default (`pipelines/live_lsl.toml`: tangent space, re-centring on, shrinkage LDA,
/// controller) driven through the engine, as the service and replay drive it: after warm-up,
/// re-centring steps included (one window in 30), not one allocation.
#[test]
fn tangent_space_with_recentring_through_the_engine_does_not_allocate() {
    let (recording, info, chunks) = simulated_eegmmidb();
    let config = pipeline("live_lsl.toml");
    assert!(
        config.training.recentre_rate > 0.0,
        "re-centring is on by default"
    );
    assert!(config.features.tangent_space.is_some());
    let epochs = epochs::cut(&recording, &config).unwrap();
    let model = evaluate::train(&config, &epochs, vec!["sim".into()]).unwrap();
    let mut engine = Engine::build(&config, &info, Some(model)).unwrap();
    let reference_at_start = reference_of(&engine);
    let mut sink = NoSink;
    let mut work = chunks[0].clone();
    let (mut counted, mut windows_after_warm_up) = (0, 0);
    // Warm-up: the first windows (3 s = 30 chunks) and the first re-centring step.
    let warm_up = 60;
    for (i, chunk) in chunks.iter().enumerate() {
        work.data_mut().copy_from_slice(chunk.data());
        work.timestamps_mut().copy_from_slice(chunk.timestamps());
        let windows = engine.summary().windows;
        let before = allocations();
        engine.on_chunk(&mut work, &mut sink).unwrap();
        if i >= warm_up {
            counted += allocations() - before;
            windows_after_warm_up += engine.summary().windows - windows;
        }
    }
    // 90 s at 160 Hz, a window every 16 samples after the first 480.
    assert!(
        windows_after_warm_up > 700,
        "{windows_after_warm_up} windows"
    );
    assert_ne!(
        reference_of(&engine),
        reference_at_start,
        "re-centring moved the reference"
    );
    assert_eq!(counted, 0, "{counted} allocations in steady state");
}

/// The tangent-space reference the engine's pipeline holds now (through its model state).
fn reference_of(engine: &Engine) -> Vec<f64> {
    let json = serde_json::to_value(engine.pipeline().extractor_state()).unwrap();
    json["reference"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect()
}
