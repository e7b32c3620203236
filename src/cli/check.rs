//! `neurostream check PIPELINE [--recording FILE] [--model MODEL]`: validate a pipeline file.
//!
//! Without options this is exactly the pass every other command runs first
//! ([`PipelineConfig::validate`]): every range of every section, no stream needed, every
//! problem listed. `--model` adds the model's fit to the pipeline, `--recording` the checks
//! that need the stream itself (channel labels, a band one FFT bin wide at its rate).

use std::path::{Path, PathBuf};

use clap::Args;
use neurostream::model::Model;
use neurostream::pipeline::{Pipeline, PipelineConfig};
use neurostream::source::Source;
use neurostream::stream::{ChannelInfo, StreamInfo, ValueFormat};
use neurostream::{Error, Result};

#[derive(Args)]
pub struct CheckArgs {
    /// Pipeline file (TOML).
    pub pipeline: PathBuf,
    /// Also build the pipeline against this recording's primary stream (checks channel labels
    /// and frequencies against its rate).
    #[arg(long)]
    pub recording: Option<PathBuf>,
    /// Also check that this trained model fits the pipeline: decoder kind, classes, feature
    /// settings and dimension.
    #[arg(long)]
    pub model: Option<PathBuf>,
}

pub fn run(args: CheckArgs) -> Result<()> {
    let config = PipelineConfig::load(&args.pipeline)?;
    let model = args.model.as_deref().map(Model::load).transpose()?;
    let mut done = vec!["ranges".to_owned()];
    if let (Some(model), Some(path)) = (&model, &args.model) {
        check_model(&config, model, path)?;
        done.push(format!("model {}", path.display()));
    }
    if let Some(path) = &args.recording {
        let source = neurostream::source::replay::Replay::new(
            &neurostream::io::open(path)?,
            None,
            16,
            neurostream::source::Pace::AsFastAsPossible,
        )?;
        let info = source.stream_info();
        let pipeline = Pipeline::build(&config, info, model)?;
        done.push(format!(
            "recording {}: {} input channel(s) at {} Hz → {} feature(s) per window",
            path.display(),
            info.channel_count(),
            info.nominal_rate,
            pipeline.feature_names().len()
        ));
    }
    println!("{}: ok ({})", args.pipeline.display(), done.join("; "));
    Ok(())
}

/// The model against the pipeline, without a stream: same decoder kind and classes, and a
/// pipeline built for the stream the model was trained on accepts it (preprocessing,
/// features, window and feature dimension all match).
fn check_model(config: &PipelineConfig, model: &Model, path: &Path) -> Result<()> {
    let origin = format!("{} with model {}", config.origin(), path.display());
    let bad = |detail: String| Err(Error::config(origin.clone(), detail));
    if config.decoder.is_none() {
        return bad(format!(
            "the pipeline has no [decoder], the model's decoder is kind = {:?}; allowed: a \
             pipeline whose [decoder] kind is {:?}",
            model.decoder.kind(),
            model.decoder.kind()
        ));
    }
    if let Err(Error::Config { detail, .. }) = model.check_config(config) {
        return bad(detail);
    }
    // The stream the model was trained on, as the pipeline's preprocessing saw it; a
    // channel selection of those same labels keeps them all.
    let fingerprint = &model.fingerprint;
    let trained_on = StreamInfo {
        name: format!("the stream model {} was trained on", path.display()),
        stream_type: "EEG".into(),
        source_id: String::new(),
        channels: fingerprint
            .channels
            .iter()
            .map(|label| ChannelInfo::new(label.clone(), "uV"))
            .collect(),
        nominal_rate: fingerprint.rate,
        format: ValueFormat::Float32,
    };
    Pipeline::build(config, &trained_on, Some(model.clone()))
        .map_err(|e| Error::config(origin.clone(), e.to_string()))?;
    Ok(())
}
