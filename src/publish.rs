//! Publish any [`Source`] as LSL outlets: the signal as a numeric stream with its channel
//! description, its markers as a string stream. `neurostream simulate --lsl` uses it so anyone
//! can try the live path without a headset (and `replay --lsl` puts a recording on the wire the
//! way MNE-LSL's player does).
//!
//! Timestamps: a source's clock starts at its own zero (seconds into the recording); outlets
//! want liblsl's clock, so every timestamp is shifted by `local_clock()` minus the newest
//! timestamp of the first chunk, taken once when it arrives. Pacing is the source's business
//! (`speed`): the outlet pushes what it gets, when it gets it.

use std::sync::atomic::{AtomicBool, Ordering};

use lsl::ExPushable;

use crate::error::{Error, Result};
use crate::source::{Source, SourceItem};
use crate::stream::StreamInfo;

/// What was published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    pub samples: u64,
    pub markers: u64,
}

/// The two outlets of one published source.
pub struct Publisher {
    signal: lsl::StreamOutlet,
    markers: Option<lsl::StreamOutlet>,
    channels: usize,
    clock_shift: Option<f64>,
    sample: Vec<f32>,
    published: Published,
}

impl Publisher {
    /// Create the outlets for `source` (signal, and markers when the source has them).
    pub fn new(source: &dyn Source) -> Result<Publisher> {
        let info = source.stream_info();
        let signal = lsl::StreamOutlet::new(&lsl_info(info, lsl::ChannelFormat::Float32)?, 0, 360)
            .map_err(|e| lsl_error("create the signal outlet", e))?;
        let markers = match source.marker_info() {
            Some(marker_info) => Some(
                lsl::StreamOutlet::new(&lsl_info(marker_info, lsl::ChannelFormat::String)?, 0, 360)
                    .map_err(|e| lsl_error("create the marker outlet", e))?,
            ),
            None => None,
        };
        Ok(Publisher {
            signal,
            markers,
            channels: info.channel_count(),
            clock_shift: None,
            sample: vec![0.0; info.channel_count()],
            published: Published::default(),
        })
    }

    /// Push one item from the source.
    pub fn push(&mut self, item: &SourceItem) -> Result<()> {
        match item {
            SourceItem::Chunk(chunk) => {
                if chunk.is_empty() {
                    return Ok(());
                }
                if chunk.channels() != self.channels {
                    return Err(Error::Stream(format!(
                        "chunk has {} channels, the outlet {}",
                        chunk.channels(),
                        self.channels
                    )));
                }
                // A source hands a chunk over once its last sample exists (as an amplifier
                // does), so that sample is "now".
                let newest = chunk.timestamps()[chunk.samples() - 1];
                let shift = *self
                    .clock_shift
                    .get_or_insert_with(|| lsl::local_clock() - newest);
                let last = chunk.samples() - 1;
                for (s, &t) in chunk.timestamps().iter().enumerate() {
                    for (c, value) in self.sample.iter_mut().enumerate() {
                        *value = chunk.channel(c)[s];
                    }
                    // Push the chunk through in one piece: consumers see it as the source made it.
                    self.signal
                        .push_sample_ex(&self.sample, t + shift, s == last)
                        .map_err(|e| lsl_error("push a sample", e))?;
                }
                self.published.samples += chunk.samples() as u64;
            }
            SourceItem::Events(events) => {
                let Some(outlet) = &self.markers else {
                    return Ok(());
                };
                let shift = self.clock_shift.unwrap_or(0.0);
                for event in events {
                    outlet
                        .push_sample_ex(&vec![event.label.as_str()], event.onset + shift, true)
                        .map_err(|e| lsl_error("push a marker", e))?;
                    self.published.markers += 1;
                }
            }
            SourceItem::Status(_) => {}
        }
        Ok(())
    }

    pub fn published(&self) -> Published {
        self.published
    }

    /// Is anyone pulling the signal?
    pub fn has_consumers(&self) -> bool {
        self.signal.have_consumers()
    }
}

/// Publish `source` until it ends or `stop` is set; `progress` sees each item.
pub fn run(
    source: &mut dyn Source,
    stop: &AtomicBool,
    mut progress: impl FnMut(&SourceItem),
) -> Result<Published> {
    let mut publisher = Publisher::new(source)?;
    while !stop.load(Ordering::Relaxed) {
        let Some(item) = source.next_item()? else {
            break;
        };
        publisher.push(&item)?;
        progress(&item);
    }
    Ok(publisher.published())
}

fn lsl_error(what: &str, e: lsl::Error) -> Error {
    Error::Stream(format!("LSL: cannot {what}: {e}"))
}

/// An LSL stream description with the channel labels, units and types in
/// `desc/channels/channel`, where consumers (and our inlet) look for them.
fn lsl_info(info: &StreamInfo, format: lsl::ChannelFormat) -> Result<lsl::StreamInfo> {
    let mut lsl_info = lsl::StreamInfo::new(
        &info.name,
        &info.stream_type,
        info.channel_count() as u32,
        info.nominal_rate,
        format,
        &info.source_id,
    )
    .map_err(|e| lsl_error(&format!("describe stream {:?}", info.name), e))?;
    if format != lsl::ChannelFormat::String {
        let mut channels = lsl_info.desc().append_child("channels");
        for channel in &info.channels {
            let mut element = channels.append_child("channel");
            element.append_child_value("label", &channel.label);
            element.append_child_value("unit", &channel.unit);
            element.append_child_value("type", &channel.kind);
        }
        let mut acquisition = lsl_info.desc().append_child("acquisition");
        acquisition.append_child_value("manufacturer", "neurostream");
    }
    Ok(lsl_info)
}
