//! Tuning a pipeline: search over the knobs named in a search space ([`space`]) for the
//! pipeline with the best cross-validated score on calibration recordings ([`fitness`]), with a
//! genetic algorithm ([`ga`]) or simulated annealing ([`anneal`]).
//!
//! Both optimisers are written here rather than taken from a crate. The genomes mix real
//! (optionally log-scale and stepped), integer and categorical genes, and each gene type needs
//! its own crossover and mutation; a genotype of genetic_algorithm 0.28 has one allele type.
//! argmin 0.11's simulated annealing would still need that mixed-gene neighbourhood written
//! for it (its `Anneal` trait), plus glue for the memo of scored genomes, the shared
//! per-generation log and the wall-time budget; the chain here reuses the GA's operators and
//! all of that. Each optimiser is under 200 lines and is tested on a function with a known
//! optimum (`tests/tune.rs`).
//!
//! Reproducibility: every random decision is taken on the calling thread from one ChaCha RNG
//! seeded with [`Settings::seed`]; only evaluations run in parallel, and their results are
//! collected in genome order, so the same seed gives the same search on any number of
//! threads. The one exception is [`Settings::budget`]: a search stopped by the clock ends at
//! a generation that depends on the machine's speed (the log says where; re-run with that many
//! generations to reproduce it).

pub mod anneal;
pub mod fitness;
pub mod ga;
pub mod plot;
pub mod space;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::Serialize;

pub use space::{Allele, Genome, SearchSpace};

/// Something to maximise over genomes.
pub trait Objective: Sync {
    /// The score of `genome` (higher is better), or why it cannot be scored.
    fn score(&self, genome: &Genome) -> std::result::Result<f64, String>;

    /// Scores of several genomes, in their order. The default scores them in parallel;
    /// an objective with shared intermediate results may group them first.
    fn score_batch(&self, genomes: &[Genome]) -> Vec<std::result::Result<f64, String>> {
        genomes.par_iter().map(|g| self.score(g)).collect()
    }
}

/// Which optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Genetic algorithm.
    Ga,
    /// Simulated annealing.
    Anneal,
}

/// Search settings shared by both optimisers.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub method: Method,
    /// GA: generations including the first; annealing: blocks of `population` steps.
    pub generations: usize,
    /// GA: genomes per generation; annealing: steps per block.
    pub population: usize,
    pub seed: u64,
    /// Stop after the generation (annealing: block) during which this much wall time passed.
    #[serde(serialize_with = "seconds")]
    pub budget: Option<Duration>,
    /// Stop after this many generations without a better best score.
    pub patience: usize,
    /// GA: genomes per selection tournament.
    pub tournament: usize,
    /// GA: best genomes copied unchanged into the next generation.
    pub elite: usize,
    /// GA: probability that a child is a crossover of two parents (else a copy of one).
    pub crossover_rate: f64,
    /// GA: probability per gene of a mutation; `None`: one over the number of genes.
    pub mutation_rate: Option<f64>,
    /// Annealing: temperature at the first and last step, in score units (a move that loses
    /// `T` is accepted with probability 1/e).
    pub temperature: (f64, f64),
}

fn seconds<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            method: Method::Ga,
            generations: 20,
            population: 16,
            seed: 42,
            budget: None,
            patience: 6,
            tournament: 3,
            elite: 2,
            crossover_rate: 0.9,
            mutation_rate: None,
            // An AUC drop of 0.02 is accepted with probability 1/e at the start, of 0.001 at
            // the end: the differences between reasonable pipelines on ~90 trials are a few
            // hundredths.
            temperature: (0.02, 0.001),
        }
    }
}

impl Settings {
    pub fn check(&self) -> crate::Result<()> {
        let bad = |detail: String| Err(crate::Error::config("tune", detail));
        if self.generations == 0 {
            return bad("--generations = 0; allowed: at least 1".into());
        }
        if self.population < 2 {
            return bad(format!(
                "--population = {}; allowed: at least 2",
                self.population
            ));
        }
        if self.tournament == 0 || self.elite >= self.population {
            return bad(format!(
                "tournament = {}, elite = {}; allowed: tournament >= 1 and elite < population ({})",
                self.tournament, self.elite, self.population
            ));
        }
        let (t0, t1) = self.temperature;
        if !(t0 > 0.0 && t1 > 0.0 && t1 <= t0) {
            return bad(format!(
                "temperature = ({t0}, {t1}); allowed: 0 < end <= start"
            ));
        }
        Ok(())
    }
}

/// One generation (GA) or block of steps (annealing) in the log.
#[derive(Debug, Clone, Serialize)]
pub struct GenerationLog {
    pub generation: usize,
    /// Best score seen so far (all generations).
    pub best: f64,
    /// Best score in this generation.
    pub generation_best: f64,
    /// Mean score of the genomes of this generation that could be scored.
    pub mean: f64,
    /// Genomes scored for the first time in this generation.
    pub evaluated: usize,
    /// Genomes whose score came from the memo of earlier generations.
    pub repeated: usize,
    /// Genomes that could not be scored (the first reason is in `failure`).
    pub failed: usize,
    pub failure: Option<String>,
    /// Annealing: the temperature at the end of the block.
    pub temperature: Option<f64>,
    /// Annealing: moves accepted in this block.
    pub accepted: Option<usize>,
    pub elapsed_seconds: f64,
}

/// Why a search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Generations,
    Stagnation,
    Budget,
}

/// The result of a search.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub best: Genome,
    pub best_score: f64,
    pub generations: Vec<GenerationLog>,
    /// Distinct genomes scored.
    pub evaluations: usize,
    pub stop: StopReason,
}

/// Scores genomes once each: the optimisers revisit genomes (elites, a chain that steps back).
struct Memo<'a> {
    objective: &'a dyn Objective,
    scores: HashMap<Vec<u64>, std::result::Result<f64, String>>,
}

/// Scores of one batch, with counts for the log.
struct Scored {
    scores: Vec<Option<f64>>,
    evaluated: usize,
    repeated: usize,
    failed: usize,
    failure: Option<String>,
}

impl<'a> Memo<'a> {
    fn new(objective: &'a dyn Objective) -> Self {
        Memo {
            objective,
            scores: HashMap::new(),
        }
    }

    fn score_all(&mut self, genomes: &[Genome]) -> Scored {
        let mut fresh: Vec<Genome> = Vec::new();
        let mut fresh_keys: Vec<Vec<u64>> = Vec::new();
        for g in genomes {
            let key = g.key();
            if !self.scores.contains_key(&key) && !fresh_keys.contains(&key) {
                fresh_keys.push(key);
                fresh.push(g.clone());
            }
        }
        let results = self.objective.score_batch(&fresh);
        let evaluated = fresh.len();
        for (key, result) in fresh_keys.into_iter().zip(results) {
            self.scores.insert(key, result);
        }
        let mut failed = 0;
        let mut failure = None;
        let scores = genomes
            .iter()
            .map(|g| match &self.scores[&g.key()] {
                Ok(s) if s.is_finite() => Some(*s),
                Ok(s) => {
                    failed += 1;
                    failure.get_or_insert_with(|| format!("score {s}"));
                    None
                }
                Err(e) => {
                    failed += 1;
                    failure.get_or_insert_with(|| e.clone());
                    None
                }
            })
            .collect();
        Scored {
            scores,
            evaluated,
            repeated: genomes.len() - evaluated,
            failed,
            failure,
        }
    }
}

/// Mean of the scores that exist (NaN when none does).
fn mean_of(scores: &[Option<f64>]) -> f64 {
    let present: Vec<f64> = scores.iter().flatten().copied().collect();
    present.iter().sum::<f64>() / present.len() as f64
}

/// Run `settings.method` over `space`, starting from `start` (e.g. the base pipeline's genome)
/// when given. `on_generation` sees each generation's log as it completes (progress bars).
pub fn search(
    space: &SearchSpace,
    objective: &dyn Objective,
    settings: &Settings,
    start: Option<Genome>,
    on_generation: &mut dyn FnMut(&GenerationLog),
) -> crate::Result<Outcome> {
    settings.check()?;
    let clock = Clock {
        started: Instant::now(),
        budget: settings.budget,
    };
    match settings.method {
        Method::Ga => ga::run(space, objective, settings, start, &clock, on_generation),
        Method::Anneal => anneal::run(space, objective, settings, start, &clock, on_generation),
    }
}

/// The one stopping rule of both optimisers, checked after each generation (GA) or block of
/// steps (annealing): `Some(reason)` to stop. Checking the clock only here means a run stopped
/// by its budget is re-run exactly with `generations` set to the count it reached.
fn should_stop(
    generation: usize,
    since_improvement: usize,
    settings: &Settings,
    clock: &Clock,
) -> Option<StopReason> {
    if generation + 1 == settings.generations {
        Some(StopReason::Generations)
    } else if since_improvement >= settings.patience {
        Some(StopReason::Stagnation)
    } else if clock.out_of_time() {
        Some(StopReason::Budget)
    } else {
        None
    }
}

struct Clock {
    started: Instant,
    budget: Option<Duration>,
}

impl Clock {
    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn out_of_time(&self) -> bool {
        self.budget.is_some_and(|b| self.started.elapsed() >= b)
    }
}
