//! Channel selection by label.

use super::{config_error, Stage};
use crate::error::Result;
use crate::stream::{normalize_label, Chunk, StreamInfo};

/// Keeps a subset of the input channels, in the configured order.
///
/// Changes the channel count, so it copies into a scratch buffer and swaps it into the chunk
/// ([`Chunk::swap_data`]); the chunk's old buffer becomes the next scratch. Both buffers reach
/// the largest chunk size after a couple of chunks and are then reused without allocating.
#[derive(Debug, Clone)]
pub struct ChannelSelect {
    input_channels: usize,
    indices: Vec<usize>,
    scratch: Vec<f32>,
}

impl ChannelSelect {
    /// Resolve `labels` against `input` (case-insensitive, normalised, see
    /// [`StreamInfo::channel_index`]). An unknown or repeated label is a config error naming
    /// `preprocess.channels[i]` and listing the available labels.
    pub fn new(input: &StreamInfo, labels: &[String]) -> Result<Self> {
        let mut indices = Vec::with_capacity(labels.len());
        for (i, label) in labels.iter().enumerate() {
            let Some(index) = find(input, label) else {
                let available: Vec<&str> = input.labels().collect();
                return Err(config_error(format!(
                    "preprocess.channels[{i}] = \"{label}\" is not a channel of stream '{}'; \
                     available: {}",
                    input.name,
                    available.join(", ")
                )));
            };
            if let Some(first) = indices.iter().position(|&j| j == index) {
                return Err(config_error(format!(
                    "preprocess.channels[{i}] = \"{label}\" repeats preprocess.channels[{first}] \
                     (\"{}\"); allowed: each channel once",
                    normalize_label(&labels[first])
                )));
            }
            indices.push(index);
        }
        Ok(ChannelSelect {
            input_channels: input.channel_count(),
            indices,
            scratch: Vec::new(),
        })
    }

    /// Input channel index of each output channel.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
}

/// [`StreamInfo::channel_index`], falling back to normalising the stream's labels too, for
/// producers that did not normalise theirs (`C3..` in the stream info).
fn find(input: &StreamInfo, label: &str) -> Option<usize> {
    input.channel_index(label).or_else(|| {
        let wanted = normalize_label(label);
        input
            .labels()
            .position(|l| normalize_label(l).eq_ignore_ascii_case(&wanted))
    })
}

impl Stage for ChannelSelect {
    fn process(&mut self, chunk: &mut Chunk) {
        assert_eq!(
            chunk.channels(),
            self.input_channels,
            "channel selection built for {} channels got a chunk of {}",
            self.input_channels,
            chunk.channels()
        );
        let samples = chunk.samples();
        let out_channels = self.indices.len();
        // `resize` only allocates while the scratch is still growing to the largest chunk.
        self.scratch.resize(out_channels * samples, 0.0);
        for (dst, &src) in self
            .scratch
            .chunks_exact_mut(samples.max(1))
            .zip(&self.indices)
        {
            dst.copy_from_slice(chunk.channel(src));
        }
        chunk.swap_data(out_channels, &mut self.scratch);
    }

    fn reset(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{ChannelInfo, ValueFormat};

    #[test]
    fn selects_in_config_order_even_from_unnormalised_labels() {
        let info = StreamInfo {
            name: "s".into(),
            stream_type: "EEG".into(),
            source_id: String::new(),
            channels: ["C3..", "Cz..", "C4.."]
                .iter()
                .map(|l| ChannelInfo::new(*l, "uV"))
                .collect(),
            nominal_rate: 160.0,
            format: ValueFormat::Float32,
        };
        let mut sel = ChannelSelect::new(&info, &["c4".into(), "C3.".into()]).unwrap();
        let mut chunk = Chunk::from_channel_major(3, vec![1.0, 2.0, 3.0], vec![0.0]);
        sel.process(&mut chunk);
        assert_eq!(chunk.channels(), 2);
        assert_eq!(chunk.data(), &[3.0, 1.0]);
    }
}
