//! The hot path does not allocate once warmed up: a counting global allocator around
//! `Pipeline::process` (preprocess → window → features → decoder).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use neurostream::epochs;
use neurostream::evaluate;
use neurostream::pipeline::{Pipeline, PipelineConfig};
use neurostream::source::replay::Replay;
use neurostream::source::simulator::{self, Montage, SimulatorConfig};
use neurostream::source::{Pace, Source, SourceItem};
use neurostream::stream::Chunk;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
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
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        pipeline.process(&mut work, |w| {
            windows += 1;
            std::hint::black_box(w.values);
        });
        if i >= warm_up {
            counted += ALLOCATIONS.load(Ordering::Relaxed) - before;
        }
    }
    (counted, windows)
}

#[test]
fn band_power_and_decoders_do_not_allocate_per_chunk() {
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
