//! `neurostream tune --pipeline P --space S --recording FILES... --out TUNED.toml`: search a
//! pipeline's knobs for the best cross-validated score on calibration recordings, and write the
//! tuned pipeline, a JSON log of every generation and, optionally, an SVG plot.
//!
//! Only the files named by `--recording` are opened: runs held back for testing stay unseen.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use neurostream::io::Recording;
use neurostream::pipeline::PipelineConfig;
use neurostream::tune::fitness::PipelineObjective;
use neurostream::tune::space::Metric;
use neurostream::tune::{self, Method, SearchSpace, Settings};
use neurostream::{io, Error, Result};
use serde_json::json;

#[derive(Args)]
pub struct TuneArgs {
    /// Base pipeline: the values of every knob the search space does not tune, and the
    /// starting point of the search.
    #[arg(long, short)]
    pub pipeline: PathBuf,
    /// Search space (TOML): the genes and how fitness is scored; see pipelines/spaces/.
    #[arg(long, short)]
    pub space: PathBuf,
    /// Calibration recordings (same montage and rate), e.g. S001R04.edf S001R08.edf. Nothing
    /// else is read.
    #[arg(long, short, num_args = 1.., required = true)]
    pub recording: Vec<PathBuf>,
    /// Where to write the tuned pipeline.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Optimiser.
    #[arg(long, value_enum, default_value_t = Method::Ga)]
    pub method: Method,
    /// Generations (GA) or blocks of `population` steps (annealing), at most.
    #[arg(long, default_value_t = 20)]
    pub generations: usize,
    /// Genomes per generation (GA) or steps per block (annealing).
    #[arg(long, default_value_t = 16)]
    pub population: usize,
    /// Seed of every random choice of the search.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Stop after the generation during which this many seconds have passed.
    #[arg(long)]
    pub budget_seconds: Option<f64>,
    /// Stop after this many generations without a better best score.
    #[arg(long, default_value_t = 6)]
    pub patience: usize,
    /// Worker threads for evaluations (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// JSON log of every generation; default: the --out path with extension .log.json.
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Also write an SVG plot of the best and mean score per generation.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

fn file_names(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| {
            p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

pub fn run(args: TuneArgs) -> Result<()> {
    let started = Instant::now();
    let base = PipelineConfig::load(&args.pipeline)?;
    let space = SearchSpace::from_file(&args.space)?;
    let budget = match args.budget_seconds {
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => {
            return Err(Error::config(
                "tune",
                format!("--budget-seconds = {s}; allowed: a positive number of seconds"),
            ))
        }
        None => None,
    };
    let settings = Settings {
        method: args.method,
        generations: args.generations,
        population: args.population,
        seed: args.seed,
        budget,
        patience: args.patience,
        // Two elites keep the best genome safe from a lucky fold draw; tiny populations keep one.
        elite: Settings::default()
            .elite
            .min(args.population.saturating_sub(1))
            .max(1),
        ..Settings::default()
    };
    settings.check()?;
    if let Some(threads) = args.threads {
        if threads == 0 {
            return Err(Error::config("tune", "--threads = 0; allowed: at least 1"));
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .map_err(|e| Error::Other(format!("cannot start {threads} worker threads: {e}")))?;
    }
    let recordings = args
        .recording
        .iter()
        .map(io::open)
        .collect::<Result<Vec<Recording>>>()?;

    let objective = PipelineObjective::new(&space, &base, &recordings)?;
    let base_evaluation = objective.evaluate_config(&base);
    if let Err(e) = &base_evaluation {
        tracing::warn!("the base pipeline itself cannot be scored: {e}");
    }
    let metric = match space.fitness.metric {
        Metric::Auc => "roc-auc",
        Metric::Accuracy => "accuracy",
    };
    let bar = super::progress_bar(settings.generations as u64, "generations");
    let outcome = tune::search(
        &space,
        &objective,
        &settings,
        Some(space.genome_of(&base)),
        &mut |generation| {
            bar.inc(1);
            bar.set_message(format!("best {metric} {:.4}", generation.best));
        },
    )?;
    bar.finish_and_clear();

    let mut tuned = space.apply(&base, &outcome.best)?;
    let method = match args.method {
        Method::Ga => "ga",
        Method::Anneal => "anneal",
    };
    // The base description names the base's structure, which the search may have changed.
    tuned.description = format!(
        "tuned by neurostream tune ({method}, seed {}) from: {}",
        args.seed,
        if base.description.is_empty() {
            args.pipeline.display().to_string()
        } else {
            base.description.clone()
        }
    );
    let evaluation = objective
        .evaluate_config(&tuned)
        .map_err(|e| Error::Other(format!("the tuned pipeline cannot be scored: {e}")))?;
    let tuned_values = space.describe(&outcome.best);
    let base_cv = base_evaluation.as_ref().ok().map(|e| e.cv);
    let folds = space.fitness.folds.unwrap_or(base.training.folds);
    let stop = serde_json::to_value(outcome.stop).expect("stop reason");
    let repeats = match space.fitness.repeats {
        1 => String::new(),
        n => format!(" × {n} repeats"),
    };
    let header = format!(
        "# Tuned by `neurostream tune` from {} with search space {}\n\
         # on {} ({} trials). Only these recordings were read.\n\
         # Score: {folds}-fold CV{repeats} {metric} {:.4} (base pipeline {}); estimated compute {:.4} Gop/s,\n\
         #   compute_weight {}.\n\
         # Search: method {method}, seed {}, population {}, {} of at most {} generations (stopped: {}),\n\
         #   {} distinct genomes scored{}.\n\
         # Tuned values: {}\n\n",
        args.pipeline.display(),
        args.space.display(),
        file_names(&args.recording),
        evaluation.trials,
        evaluation.cv,
        base_cv.map_or("not scorable".into(), |v| format!("{v:.4}")),
        evaluation.giga_ops_per_second,
        space.fitness.compute_weight,
        args.seed,
        args.population,
        outcome.generations.len(),
        args.generations,
        stop.as_str().unwrap_or_default(),
        outcome.evaluations,
        args.budget_seconds
            .map(|b| format!(", budget {b} s"))
            .unwrap_or_default(),
        serde_json::Value::Object(tuned_values.clone()),
    );
    let body = toml::to_string(&tuned)
        .map_err(|e| Error::Other(format!("cannot write the tuned pipeline as TOML: {e}")))?;
    // What is written must load and pass `check` as an ordinary pipeline; check before
    // claiming success.
    PipelineConfig::from_toml(&body, &format!("tuned pipeline for {}", args.out.display()))?
        .validate()?;
    write(&args.out, &(header + &body))?;

    let log_path = args
        .log
        .clone()
        .unwrap_or_else(|| args.out.with_extension("log.json"));
    let wall_seconds = started.elapsed().as_secs_f64();
    let log = json!({
        "pipeline": args.pipeline,
        "space": args.space,
        "recordings": args.recording,
        "out": args.out,
        "settings": settings,
        "threads": rayon::current_num_threads(),
        "metric": space.fitness.metric,
        "folds": folds,
        "base": base_evaluation.as_ref().ok(),
        "base_error": base_evaluation.as_ref().err(),
        "best": {
            "score": outcome.best_score,
            "evaluation": evaluation,
            "values": tuned_values,
        },
        "stop": outcome.stop,
        "evaluations": outcome.evaluations,
        "work": objective.work(),
        "wall_seconds": wall_seconds,
        "generations": outcome.generations,
    });
    write(
        &log_path,
        &serde_json::to_string_pretty(&log).expect("json"),
    )?;
    if let Some(plot) = &args.plot {
        let title = format!(
            "{method} on {}: {metric} (best so far, generation mean)",
            file_names(&args.recording)
        );
        write(plot, &tune::plot::fitness_svg(&outcome.generations, &title))?;
    }
    println!(
        "tuned ({method}, seed {}): {folds}-fold CV{repeats} {metric} {:.4} (base {}) after {} generation(s), {} genomes, {:.1} s → {}",
        args.seed,
        evaluation.cv,
        base_cv.map_or("-".into(), |v| format!("{v:.4}")),
        outcome.generations.len(),
        outcome.evaluations,
        wall_seconds,
        args.out.display()
    );
    Ok(())
}
