//! `neurostream train --pipeline P --recording FILES... --out MODEL`: calibrate a decoder.

use std::path::PathBuf;

use clap::Args;
use neurostream::pipeline::PipelineConfig;
use neurostream::{epochs, evaluate, io, Result};

#[derive(Args)]
pub struct TrainArgs {
    /// Pipeline file with [features], [decoder] and [training] tables.
    #[arg(long, short)]
    pub pipeline: PathBuf,
    /// Calibration recordings (same montage and rate), e.g. S001R04.edf S001R08.edf.
    #[arg(long, short, num_args = 1.., required = true)]
    pub recording: Vec<PathBuf>,
    /// Where to write the model (JSON).
    #[arg(long, short)]
    pub out: PathBuf,
}

pub fn run(args: TrainArgs) -> Result<()> {
    let config = PipelineConfig::load(&args.pipeline)?;
    let recordings = args
        .recording
        .iter()
        .map(io::open)
        .collect::<Result<Vec<_>>>()?;
    let epochs = epochs::cut_all_named(
        args.recording.iter().map(|p| p.as_path()).zip(&recordings),
        &config,
    )?;
    let names: Vec<String> = args
        .recording
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let model = evaluate::train(&config, &epochs, names)?;
    model.save(&args.out)?;
    let mut counts = vec![0usize; config.training.classes.len()];
    for &l in &epochs.labels {
        counts[l] += 1;
    }
    let per_class: Vec<String> = config
        .training
        .classes
        .iter()
        .zip(&counts)
        .map(|(c, n)| format!("{} ({}) ×{n}", c.name, c.event))
        .collect();
    println!(
        "trained {} on {} epoch(s) [{}], {} channel(s) × {} samples → {}",
        config.decoder.as_ref().map_or("?", |d| d.kind()),
        epochs.len(),
        per_class.join(", "),
        epochs.channels,
        epochs.samples,
        args.out.display()
    );
    match (&model.calibration, &model.operating_point) {
        (Some(calibration), Some(op)) => println!(
            "calibrated on {} out-of-fold epoch(s) ({:?}{}); operating point: threshold {:.3}, \
             expected precision {:.3} (target {}{}), commands on {:.0} % of windows{}",
            calibration.fitted_on,
            calibration.map,
            if calibration.refused_slope.is_some() {
                ", wrong-sign fit refused"
            } else {
                ""
            },
            op.threshold,
            op.expected_precision,
            op.target_precision,
            if op.reached_target {
                ""
            } else {
                ", not reached: near chance"
            },
            100.0 * op.expected_command_share,
            match config.control.threshold {
                Some(t) => format!("; [control] threshold = {t} overrides it"),
                None => String::new(),
            }
        ),
        _ => println!("not calibrated (too few epochs per class for cross-validation)"),
    }
    Ok(())
}
