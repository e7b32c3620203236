//! Labelled epochs for calibration: the recording runs through the same causal preprocessing
//! as the live pipeline (a [`Replay`] in chunks into the pipeline's [`Preprocessor`](crate::preprocess::Preprocessor)), then one
//! window of the pipeline's window length is cut after each cue. The feature stage then sees
//! exactly what it would see live at the moment the window completes.

pub use crate::config::training::{ClassSpec, TrainingConfig};
use crate::config::PipelineConfig;
use crate::error::{Error, Result};
use crate::features::Window;
use crate::io::Recording;
use crate::source::replay::Replay;
use crate::source::{Pace, Source, SourceItem};
use crate::stream::StreamInfo;

/// Epochs of one or more recordings: `len() × channels × samples`, each epoch channel-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Epochs {
    pub channels: usize,
    pub samples: usize,
    pub rate: f64,
    /// The preprocessed stream (selected channels), as the feature stage sees it.
    pub info: StreamInfo,
    data: Vec<f32>,
    /// Class index per epoch.
    pub labels: Vec<usize>,
    /// Cue onset per epoch (seconds, the recording's clock).
    pub onsets: Vec<f64>,
    /// Index of the recording each epoch came from (order of [`Epochs::append`]).
    pub recording: Vec<usize>,
}

impl Epochs {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn window(&self, i: usize) -> Window<'_> {
        let size = self.channels * self.samples;
        Window {
            data: &self.data[i * size..(i + 1) * size],
            channels: self.channels,
            samples: self.samples,
            rate: self.rate,
            end_timestamp: self.onsets[i],
        }
    }

    pub fn windows(&self, indices: &[usize]) -> Vec<Window<'_>> {
        indices.iter().map(|&i| self.window(i)).collect()
    }

    /// Concatenate `other` (same channels, rate and length), renumbering its recordings.
    pub fn append(&mut self, other: Epochs) -> Result<()> {
        if other.channels != self.channels
            || other.samples != self.samples
            || other.rate != self.rate
        {
            return Err(Error::Stream(format!(
                "epochs of different shapes cannot be pooled: {} ch × {} samples at {} Hz vs {} ch × {} samples at {} Hz",
                self.channels, self.samples, self.rate, other.channels, other.samples, other.rate
            )));
        }
        let offset = self.recording.iter().max().map_or(0, |m| m + 1);
        self.data.extend_from_slice(&other.data);
        self.labels.extend_from_slice(&other.labels);
        self.onsets.extend_from_slice(&other.onsets);
        self.recording
            .extend(other.recording.iter().map(|r| r + offset));
        Ok(())
    }

    /// Epochs with the given indices, in that order.
    pub fn subset(&self, indices: &[usize]) -> Epochs {
        let size = self.channels * self.samples;
        let mut data = Vec::with_capacity(indices.len() * size);
        for &i in indices {
            data.extend_from_slice(&self.data[i * size..(i + 1) * size]);
        }
        Epochs {
            data,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            onsets: indices.iter().map(|&i| self.onsets[i]).collect(),
            recording: indices.iter().map(|&i| self.recording[i]).collect(),
            info: self.info.clone(),
            ..*self
        }
    }
}

/// Cut the labelled epochs of `recording` with the pipeline's preprocessing, window length and
/// `[training]` classes. Cues whose window would run past the end of the recording are
/// skipped (and logged).
pub fn cut(recording: &Recording, config: &PipelineConfig) -> Result<Epochs> {
    config.training.validate()?;
    let mut replay = Replay::new(recording, None, 32, Pace::AsFastAsPossible)?;
    let input = replay.stream_info().clone();
    let mut preprocess = config.preprocess.build(&input)?;
    let info = preprocess.output_info().clone();
    let rate = input.nominal_rate;
    let (window, _) = config.features.window_and_hop(rate)?;
    let channels = info.channel_count();

    let total = replay.total_samples();
    let mut filtered = vec![0.0f32; channels * total];
    let mut timestamps = Vec::with_capacity(total);
    let mut events = Vec::new();
    let mut position = 0;
    while let Some(item) = replay.next_item()? {
        match item {
            SourceItem::Chunk(mut chunk) => {
                preprocess.process(&mut chunk);
                let n = chunk.samples();
                for c in 0..channels {
                    filtered[c * total + position..c * total + position + n]
                        .copy_from_slice(chunk.channel(c));
                }
                timestamps.extend_from_slice(chunk.timestamps());
                position += n;
            }
            SourceItem::Events(batch) => events.extend(batch),
            SourceItem::Status(_) => {}
        }
    }

    let half_sample = 0.5 / rate;
    let mut epochs = Epochs {
        channels,
        samples: window,
        rate,
        info,
        data: Vec::new(),
        labels: Vec::new(),
        onsets: Vec::new(),
        recording: Vec::new(),
    };
    let excluded = excluded_onsets(recording);
    let mut skipped = 0;
    let mut left_out = 0;
    for event in &events {
        if excluded
            .iter()
            .any(|&t| (t - event.onset).abs() < half_sample)
        {
            left_out += 1;
            continue;
        }
        let Some(class) = config
            .training
            .classes
            .iter()
            .position(|c| c.event == event.label)
        else {
            continue;
        };
        let start_time = event.onset + config.training.epoch_offset;
        let start = timestamps.partition_point(|&t| t < start_time - half_sample);
        if start + window > total {
            skipped += 1;
            continue;
        }
        for c in 0..channels {
            epochs
                .data
                .extend_from_slice(&filtered[c * total + start..c * total + start + window]);
        }
        epochs.labels.push(class);
        epochs.onsets.push(event.onset);
        epochs.recording.push(0);
    }
    if skipped > 0 {
        tracing::warn!(
            "{skipped} cue(s) too close to the end of the recording for a full window; skipped"
        );
    }
    if left_out > 0 {
        tracing::info!(
            "{left_out} cue(s) left out: the session recorded that nobody saw them \
             (trial_excluded)"
        );
    }
    Ok(epochs)
}

/// Onsets of the cued trials a recorded session left out (`trial_excluded` session events).
fn excluded_onsets(recording: &Recording) -> Vec<f64> {
    let mut onsets = Vec::new();
    for stream in &recording.streams {
        if stream.info.source_id != crate::record::SESSION_STREAM {
            continue;
        }
        let crate::io::StreamData::Markers(events) = &stream.data else {
            continue;
        };
        for event in events {
            if let Ok(crate::engine::SessionEvent::TrialExcluded { onset, .. }) =
                serde_json::from_str(&event.label)
            {
                onsets.push(onset);
            }
        }
    }
    onsets
}

/// Cut and pool the epochs of several recordings (same montage and rate).
pub fn cut_all<'a>(
    recordings: impl IntoIterator<Item = &'a Recording>,
    config: &PipelineConfig,
) -> Result<Epochs> {
    let mut pooled: Option<Epochs> = None;
    for recording in recordings {
        let epochs = cut(recording, config)?;
        match &mut pooled {
            None => pooled = Some(epochs),
            Some(p) => p.append(epochs)?,
        }
    }
    pooled.ok_or_else(|| Error::Other("no recordings given".into()))
}
