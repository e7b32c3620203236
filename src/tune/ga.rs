//! The genetic algorithm: a population scored in parallel each generation, tournament
//! selection, per-gene crossover and mutation ([`super::space::Gene::cross`],
//! [`super::space::Gene::mutate`]), elitism, and an early stop when the best score has not
//! improved for `patience` generations.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::space::{Genome, SearchSpace, MUTATION_SCALE};
use super::{mean_of, Clock, GenerationLog, Memo, Objective, Outcome, Settings, StopReason};

/// Scores that compare equal up to this are ties: floating-point noise must not count as
/// progress when deciding whether the search stagnates.
const IMPROVEMENT: f64 = 1e-9;

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
    let mutation_rate = settings
        .mutation_rate
        .unwrap_or(1.0 / space.genes.len() as f64);

    let mut population: Vec<Genome> = start.into_iter().collect();
    while population.len() < settings.population {
        population.push(space.random_genome(&mut rng));
    }

    let mut best: Option<(Genome, f64)> = None;
    let mut log = Vec::new();
    let mut since_improvement = 0;
    let mut stop = StopReason::Generations;
    for generation in 0..settings.generations {
        let scored = memo.score_all(&population);
        // Rank by score, unscorable genomes last; the sort is stable so ties keep their
        // population order and the ranking is the same on every run.
        let mut ranked: Vec<usize> = (0..population.len()).collect();
        ranked.sort_by(|&a, &b| {
            let key = |i: usize| scored.scores[i].unwrap_or(f64::NEG_INFINITY);
            key(b).total_cmp(&key(a))
        });
        let leader = ranked[0];
        let generation_best = scored.scores[leader].unwrap_or(f64::NAN);
        let improved = match (&best, scored.scores[leader]) {
            (None, Some(_)) => true,
            (Some((_, b)), Some(s)) => s > b + IMPROVEMENT,
            _ => false,
        };
        if improved {
            best = Some((population[leader].clone(), generation_best));
            since_improvement = 0;
        } else {
            since_improvement += 1;
        }
        let entry = GenerationLog {
            generation,
            best: best.as_ref().map_or(f64::NAN, |b| b.1),
            generation_best,
            mean: mean_of(&scored.scores),
            evaluated: scored.evaluated,
            repeated: scored.repeated,
            failed: scored.failed,
            failure: scored.failure,
            temperature: None,
            accepted: None,
            elapsed_seconds: clock.elapsed(),
        };
        on_generation(&entry);
        log.push(entry);

        if let Some(reason) = super::should_stop(generation, since_improvement, settings, clock) {
            stop = reason;
            break;
        }

        let fitness = |i: usize| scored.scores[i].unwrap_or(f64::NEG_INFINITY);
        let tournament = |rng: &mut ChaCha8Rng| -> usize {
            let mut winner = rng.gen_range(0..population.len());
            for _ in 1..settings.tournament {
                let rival = rng.gen_range(0..population.len());
                if fitness(rival) > fitness(winner) {
                    winner = rival;
                }
            }
            winner
        };
        let mut next: Vec<Genome> = ranked
            .iter()
            .take(settings.elite)
            .map(|&i| population[i].clone())
            .collect();
        while next.len() < settings.population {
            let mother = tournament(&mut rng);
            let mut child = if rng.gen::<f64>() < settings.crossover_rate {
                let father = tournament(&mut rng);
                Genome(
                    space
                        .genes
                        .iter()
                        .enumerate()
                        .map(|(g, gene)| {
                            gene.cross(population[mother].0[g], population[father].0[g], &mut rng)
                        })
                        .collect(),
                )
            } else {
                population[mother].clone()
            };
            for (g, gene) in space.genes.iter().enumerate() {
                if rng.gen::<f64>() < mutation_rate {
                    child.0[g] = gene.mutate(child.0[g], MUTATION_SCALE, &mut rng);
                }
            }
            next.push(child);
        }
        population = next;
    }

    let (best, best_score) = best.ok_or_else(|| {
        crate::Error::Other(format!(
            "no genome could be scored; the first failure: {}",
            log.iter()
                .find_map(|l: &GenerationLog| l.failure.clone())
                .unwrap_or_default()
        ))
    })?;
    Ok(Outcome {
        best,
        best_score,
        generations: log,
        evaluations: memo.scores.len(),
        stop,
    })
}
