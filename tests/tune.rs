//! Tuning: the optimisers on functions with a known optimum, reproducibility, search-space
//! errors, the fitness against `evaluate`, and the `tune` command on real EEG (which must never
//! read the held-back run).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use neurostream::pipeline::PipelineConfig;
use neurostream::source::Source;
use neurostream::tune::fitness::PipelineObjective;
use neurostream::tune::space::Knob;
use neurostream::tune::{self, Allele, Genome, Method, Objective, Outcome, SearchSpace, Settings};

/// Five genes of every type; the optimum is inside the ranges, off-centre and off-grid where
/// a grid would make it easy.
const SYNTHETIC_SPACE: &str = r#"
[genes]
decoder = { choice = ["lda", "svm", "mlp"] }
bandpass_low = { real = [0.1, 100.0] }
window_seconds = { real = [0.25, 60.0] }
csp_components = { integer = [1, 64] }
svm_c = { real = [0.001, 1000.0], log = true }
"#;

/// A shifted sphere in the (scaled) numeric genes plus a penalty unless the categorical gene
/// is "mlp". Maximum 0 at bandpass_low 37.3, window 12.5, components 11, C = 10^1.7, mlp.
struct ShiftedSphere {
    space: SearchSpace,
}

impl ShiftedSphere {
    fn new() -> Self {
        ShiftedSphere {
            space: SearchSpace::from_toml(SYNTHETIC_SPACE, "synthetic").unwrap(),
        }
    }

    fn value(&self, genome: &Genome, knob: Knob) -> f64 {
        let i = self
            .space
            .genes
            .iter()
            .position(|g| g.knob == knob)
            .unwrap();
        match genome.0[i] {
            Allele::Real(x) => x,
            Allele::Integer(n) => n as f64,
            Allele::Choice(c) => c as f64,
        }
    }
}

impl Objective for ShiftedSphere {
    fn score(&self, genome: &Genome) -> Result<f64, String> {
        let v = |k| self.value(genome, k);
        let sphere = ((v(Knob::BandpassLow) - 37.3) / 10.0).powi(2)
            + ((v(Knob::WindowSeconds) - 12.5) / 6.0).powi(2)
            + ((v(Knob::CspComponents) - 11.0) / 6.0).powi(2)
            + (v(Knob::SvmC).log10() - 1.7).powi(2);
        let categorical = if v(Knob::Decoder) == 2.0 { 0.0 } else { 1.0 };
        Ok(-(sphere + categorical))
    }
}

fn assert_near_optimum(problem: &ShiftedSphere, outcome: &Outcome) {
    let v = |k| problem.value(&outcome.best, k);
    assert_eq!(v(Knob::Decoder), 2.0, "categorical gene: {outcome:?}");
    assert_eq!(v(Knob::CspComponents), 11.0, "integer gene: {outcome:?}");
    assert!((v(Knob::BandpassLow) - 37.3).abs() < 1.5, "{outcome:?}");
    assert!((v(Knob::WindowSeconds) - 12.5).abs() < 1.0, "{outcome:?}");
    assert!((v(Knob::SvmC).log10() - 1.7).abs() < 0.15, "{outcome:?}");
    assert!(outcome.best_score > -0.05, "{}", outcome.best_score);
}

fn settings(method: Method, seed: u64) -> Settings {
    Settings {
        method,
        generations: 60,
        population: 24,
        seed,
        patience: 60,
        temperature: (0.5, 0.001),
        ..Settings::default()
    }
}

fn search_on(threads: usize, problem: &ShiftedSphere, settings: &Settings) -> Outcome {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(|| tune::search(&problem.space, problem, settings, None, &mut |_| {}))
        .unwrap()
}

#[test]
fn ga_finds_the_optimum_of_a_shifted_sphere_with_a_categorical_gene() {
    let problem = ShiftedSphere::new();
    let settings = settings(Method::Ga, 7);
    let outcome = search_on(2, &problem, &settings);
    assert_near_optimum(&problem, &outcome);
    // Within budget: never more genomes than generations × population.
    assert!(outcome.evaluations <= settings.generations * settings.population);
    // Elitism: the best score never decreases from one generation to the next.
    for pair in outcome.generations.windows(2) {
        assert!(pair[1].best >= pair[0].best);
        assert!(pair[1].generation_best >= pair[0].generation_best - 1e-12);
    }
}

#[test]
fn annealing_finds_the_optimum_of_the_same_function() {
    let problem = ShiftedSphere::new();
    let settings = settings(Method::Anneal, 7);
    let outcome = search_on(2, &problem, &settings);
    assert_near_optimum(&problem, &outcome);
    assert!(outcome.evaluations <= settings.generations * settings.population + 1);
    let accepted: usize = outcome.generations.iter().filter_map(|g| g.accepted).sum();
    assert!(accepted > 0 && accepted < settings.generations * settings.population);
}

#[test]
fn the_same_seed_gives_the_same_search_on_any_number_of_threads() {
    let problem = ShiftedSphere::new();
    for method in [Method::Ga, Method::Anneal] {
        let settings = Settings {
            generations: 15,
            ..settings(method, 11)
        };
        let one = search_on(1, &problem, &settings);
        let four = search_on(4, &problem, &settings);
        assert_eq!(one.best, four.best, "{method:?}");
        assert_eq!(one.best_score.to_bits(), four.best_score.to_bits());
        let trace = |o: &Outcome| -> Vec<(u64, u64, usize)> {
            o.generations
                .iter()
                .map(|g| (g.best.to_bits(), g.mean.to_bits(), g.evaluated))
                .collect()
        };
        assert_eq!(trace(&one), trace(&four), "{method:?}");
        let other = search_on(
            2,
            &problem,
            &Settings {
                seed: 12,
                ..settings
            },
        );
        assert_ne!(
            trace(&one),
            trace(&other),
            "{method:?}: the seed must matter"
        );
    }
}

#[test]
fn stagnation_stops_the_search_early() {
    struct Flat;
    impl Objective for Flat {
        fn score(&self, _: &Genome) -> Result<f64, String> {
            Ok(0.5)
        }
    }
    let space = SearchSpace::from_toml(SYNTHETIC_SPACE, "synthetic").unwrap();
    let settings = Settings {
        generations: 50,
        population: 6,
        patience: 3,
        ..Settings::default()
    };
    let outcome = tune::search(&space, &Flat, &settings, None, &mut |_| {}).unwrap();
    assert_eq!(outcome.stop, tune::StopReason::Stagnation);
    assert_eq!(
        outcome.generations.len(),
        4,
        "the first generation, then 3 without progress"
    );
}

fn neurostream() -> Command {
    Command::new(env!("CARGO_BIN_EXE_neurostream"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tune-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_malformed_search_space_is_refused_before_any_recording_is_opened() {
    let dir = scratch("malformed");
    let cases = [
        ("svm_cc = { real = [0.1, 10.0] }", "svm_cc"),
        ("svm_c = { real = [10.0, 0.1] }", "genes.svm_c"),
        (
            "window_seconds = { real = [0.5, 90.0] }",
            "within [0.25, 60]",
        ),
        ("decoder = { choice = [\"lda\", \"forest\"] }", "\"forest\""),
        ("channels = { choice = [\"motor\"] }", "[channel_sets]"),
    ];
    for (gene, expected) in cases {
        let space = dir.join("space.toml");
        std::fs::write(&space, format!("[genes]\n{gene}\n")).unwrap();
        let out = neurostream()
            .args(["tune", "--pipeline"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/mi_csp_lda.toml"))
            .arg("--space")
            .arg(&space)
            .args(["--recording", "/nonexistent/S001R04.edf", "--out"])
            .arg(dir.join("tuned.toml"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{gene}");
        assert!(stderr.contains(expected), "{gene}: {stderr}");
        assert!(stderr.contains("space.toml"), "the file is named: {stderr}");
        assert!(
            !stderr.contains("nonexistent"),
            "space checked first: {stderr}"
        );
    }
}

fn base_pipeline() -> PipelineConfig {
    PipelineConfig::from_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/mi_csp_lda.toml"),
    )
    .unwrap()
}

#[test]
fn the_fitness_of_a_pipeline_is_its_evaluate_cross_validation_score() {
    let Some([r04, r08, _]) = common::imagery_runs("S001") else {
        return;
    };
    let recordings = [
        neurostream::io::open(&r04).unwrap(),
        neurostream::io::open(&r08).unwrap(),
    ];
    let base = base_pipeline();
    let space = SearchSpace::from_toml("[genes]\ndecoder = { choice = [\"lda\", \"svm\"] }\n", "t")
        .unwrap();
    let objective = PipelineObjective::new(&space, &base, &recordings).unwrap();
    let fitness = objective.evaluate_config(&base).unwrap();
    let epochs = neurostream::epochs::cut_all(&recordings, &base).unwrap();
    let cv = neurostream::evaluate::cross_validate(&base, &epochs).unwrap();
    assert_eq!(fitness.trials, epochs.len());
    assert!(
        (fitness.cv - cv.auc.unwrap()).abs() < 1e-12,
        "{} vs {:?}",
        fitness.cv,
        cv.auc
    );
    assert!((fitness.accuracy - cv.accuracy).abs() < 1e-12);

    // The svm genome shares the front end: no new epochs or feature fits.
    let svm = Genome(vec![Allele::Choice(1)]);
    let before = objective.work();
    objective.score(&svm).unwrap();
    let after = objective.work();
    assert_eq!(after.epoch_sets_cut, before.epoch_sets_cut);
    assert_eq!(after.feature_sets_fitted, before.feature_sets_fitted);
    assert_eq!(after.pipelines_scored, before.pipelines_scored + 1);
}

/// A space small enough for a test: the decoder, its C, and the window (three front ends).
const SMALL_SPACE: &str = r#"
[genes]
decoder = { choice = ["lda", "svm"] }
svm_c = { real = [0.01, 10.0], log = true }
window_seconds = { real = [2.0, 3.0], step = 0.5 }
"#;

fn tune_in(dir: &Path, recordings: &[PathBuf]) -> (String, serde_json::Value) {
    let space = dir.join("space.toml");
    std::fs::write(&space, SMALL_SPACE).unwrap();
    let out = dir.join("tuned.toml");
    let run = neurostream()
        .args(["tune", "--pipeline"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/mi_csp_lda.toml"))
        .arg("--space")
        .arg(&space)
        .arg("--recording")
        .args(recordings)
        .args([
            "--generations",
            "3",
            "--population",
            "4",
            "--seed",
            "5",
            "--out",
        ])
        .arg(&out)
        .arg("--plot")
        .arg(dir.join("fitness.svg"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let tuned = std::fs::read_to_string(&out).unwrap();
    let log: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tuned.log.json")).unwrap())
            .unwrap();
    (tuned, log)
}

#[test]
fn tune_writes_a_loadable_pipeline_and_never_reads_the_held_back_run() {
    let Some(runs) = common::imagery_runs("S001") else {
        return;
    };
    // Two folders with the same calibration runs; beside them, the held-back R12 is garbage in
    // one and the real file in the other. Reading it would fail in the first folder or change
    // the result in the second.
    let poisoned = scratch("poisoned/S001");
    let genuine = scratch("genuine/S001");
    for dir in [&poisoned, &genuine] {
        for run in &runs[..2] {
            std::fs::copy(run, dir.join(run.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(poisoned.join("S001R12.edf"), b"not an EDF file").unwrap();
    std::fs::copy(&runs[2], genuine.join("S001R12.edf")).unwrap();
    let calibration = |dir: &Path| vec![dir.join("S001R04.edf"), dir.join("S001R08.edf")];

    let (tuned, log) = tune_in(&poisoned, &calibration(&poisoned));
    let (tuned_again, _) = tune_in(&genuine, &calibration(&genuine));
    let body = |t: &str| -> String {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(body(&tuned), body(&tuned_again));
    assert_eq!(
        log["recordings"].as_array().unwrap().len(),
        2,
        "{}",
        log["recordings"]
    );

    // An ordinary pipeline file, with the score, the settings and the seed in its header.
    let config = PipelineConfig::from_toml(&tuned, "tuned").unwrap();
    assert!(tuned.starts_with("# Tuned by `neurostream tune`"));
    assert!(tuned.contains("seed 5") && tuned.contains("5-fold CV roc-auc"));
    assert!(config.decoder.is_some());

    // The search starts from the base pipeline and keeps its elite: never worse than it.
    let base = log["base"]["cv"].as_f64().unwrap();
    let best = log["best"]["evaluation"]["cv"].as_f64().unwrap();
    assert!(best >= base, "tuned {best} < base {base}");
    let generations = log["generations"].as_array().unwrap();
    assert!(!generations.is_empty() && generations.len() <= 3);
    assert!(std::fs::read_to_string(poisoned.join("fitness.svg"))
        .unwrap()
        .starts_with("<svg"));
}

#[test]
fn every_shipped_search_space_loads_and_makes_pipelines_that_build() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sim = neurostream::source::simulator::SimulatorConfig {
        montage: neurostream::source::simulator::Montage::Eegmmidb64,
        ..Default::default()
    };
    let stream = sim.build().unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir(root.join("pipelines/spaces")).unwrap() {
        let path = entry.unwrap().path();
        let space = SearchSpace::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        for base in ["mi_csp_lda.toml", "mi_tangent_lda.toml"] {
            let base = PipelineConfig::from_file(&root.join("pipelines").join(base)).unwrap();
            // The search starts from the base pipeline itself.
            let start = space.genome_of(&base);
            assert_eq!(
                space.apply(&base, &start).unwrap(),
                base,
                "{}",
                path.display()
            );
            // Every choice of every choice gene (channel sets included) builds on the
            // 64-channel EEGMMIDB montage (preprocessing, window, decoder: the fitted feature
            // stages need calibration data, which the other tests give them).
            for (g, gene) in space.genes.iter().enumerate() {
                if let tune::space::Domain::Choice(names) = &gene.domain {
                    for (c, name) in names.iter().enumerate() {
                        let mut genome = start.clone();
                        genome.0[g] = Allele::Choice(c);
                        let config = space.apply(&base, &genome).unwrap();
                        let info = stream.stream_info();
                        let built = config
                            .preprocess
                            .build(info)
                            .and_then(|_| config.features.window_and_hop(info.nominal_rate))
                            .and_then(|_| config.decoder.as_ref().unwrap().build(2));
                        built.unwrap_or_else(|e| panic!("{} {name}: {e}", gene.knob));
                    }
                }
            }
        }
        seen += 1;
    }
    assert!(seen > 0);
}
