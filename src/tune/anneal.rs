//! Simulated annealing over the same genomes as the GA: one chain of Metropolis steps with a
//! geometric cooling schedule from `temperature.0` to `temperature.1` over
//! `generations × population` steps. A step mutates each gene with probability one over the
//! number of genes (at least one gene always changes), with the GA's mutation operators.
//!
//! The chain is sequential by nature; the parallelism is inside each evaluation (the
//! cross-validation folds). Steps are logged in blocks of `population` so both methods share
//! one log format and one plot.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::space::{Genome, SearchSpace, MUTATION_SCALE};
use super::{mean_of, Clock, GenerationLog, Memo, Objective, Outcome, Settings, StopReason};

/// See [`super::ga`]: ties up to this are not progress.
const IMPROVEMENT: f64 = 1e-9;

fn neighbour(space: &SearchSpace, current: &Genome, rng: &mut ChaCha8Rng) -> Genome {
    let genes = space.genes.len();
    let mut next = current.clone();
    let forced = rng.gen_range(0..genes);
    for (g, gene) in space.genes.iter().enumerate() {
        if g == forced || rng.gen::<f64>() < 1.0 / genes as f64 {
            next.0[g] = gene.mutate(next.0[g], MUTATION_SCALE, rng);
        }
    }
    next
}

pub(super) fn run(
    space: &SearchSpace,
    objective: &dyn Objective,
    settings: &Settings,
    start: Option<Genome>,
    clock: &Clock,
    on_generation: &mut dyn FnMut(&GenerationLog),
) -> crate::Result<Outcome> {
    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    let mut memo = Memo::new(objective);
    let (t_start, t_end) = settings.temperature;
    let total_steps = settings.generations * settings.population;
    let temperature_at = |step: usize| {
        let progress = step as f64 / (total_steps.max(2) - 1) as f64;
        t_start * (t_end / t_start).powf(progress)
    };

    // The chain starts from the first genome that can be scored: `start`, else random ones.
    let mut current = start.unwrap_or_else(|| space.random_genome(&mut rng));
    let mut current_score = None;
    let mut first_failure = None;
    for _ in 0..settings.population {
        let scored = memo.score_all(std::slice::from_ref(&current));
        if let Some(s) = scored.scores[0] {
            current_score = Some(s);
            break;
        }
        first_failure = first_failure.or(scored.failure);
        current = space.random_genome(&mut rng);
    }
    let Some(mut current_score) = current_score else {
        return Err(crate::Error::Other(format!(
            "no starting genome could be scored; the first failure: {}",
            first_failure.unwrap_or_default()
        )));
    };
    let mut best = (current.clone(), current_score);

    let mut log = Vec::new();
    let mut since_improvement = 0;
    let mut stop = StopReason::Generations;
    let mut step = 0;
    for generation in 0..settings.generations {
        let mut block_scores = Vec::new();
        let (mut evaluated, mut repeated, mut failed, mut accepted) = (0, 0, 0, 0);
        let mut failure = None;
        let best_before = best.1;
        let mut block_best = f64::NEG_INFINITY;
        let mut temperature = temperature_at(step);
        for _ in 0..settings.population {
            temperature = temperature_at(step);
            step += 1;
            let candidate = neighbour(space, &current, &mut rng);
            let scored = memo.score_all(std::slice::from_ref(&candidate));
            evaluated += scored.evaluated;
            repeated += scored.repeated;
            failed += scored.failed;
            failure = failure.or(scored.failure);
            // Drawn on every step, used or not, so the random stream does not depend on
            // which moves were downhill.
            let draw: f64 = rng.gen();
            block_scores.push(scored.scores[0]);
            let Some(score) = scored.scores[0] else {
                continue;
            };
            block_best = block_best.max(score);
            if score >= current_score || draw < ((score - current_score) / temperature).exp() {
                current = candidate;
                current_score = score;
                accepted += 1;
                if score > best.1 {
                    best = (current.clone(), score);
                }
            }
        }
        let entry = GenerationLog {
            generation,
            best: best.1,
            generation_best: block_best,
            mean: mean_of(&block_scores),
            evaluated,
            repeated,
            failed,
            failure,
            temperature: Some(temperature),
            accepted: Some(accepted),
            elapsed_seconds: clock.elapsed(),
        };
        on_generation(&entry);
        log.push(entry);
        if best.1 > best_before + IMPROVEMENT {
            since_improvement = 0;
        } else {
            since_improvement += 1;
        }
        if let Some(reason) = super::should_stop(generation, since_improvement, settings, clock) {
            stop = reason;
            break;
        }
    }

    Ok(Outcome {
        best: best.0,
        best_score: best.1,
        generations: log,
        evaluations: memo.scores.len(),
        stop,
    })
}
