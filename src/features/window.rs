//! Sliding windows over a chunked stream.
//!
//! [`Windower`] keeps the last `length` samples of every channel in a ring buffer and emits a
//! [`Window`] once `length` samples have been seen, then every `hop` samples. Emission points
//! are counted in samples since the start (or the last [`Windower::reset`]), never in chunks,
//! so the windows are the same however the input is cut.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Slide, Window};
use crate::stream::Chunk;

/// Source of [`Slide::run`] ids: one per windower, clone and reset in this process.
static NEXT_RUN: AtomicU64 = AtomicU64::new(1);

fn next_run() -> u64 {
    NEXT_RUN.fetch_add(1, Ordering::Relaxed)
}

/// Ring buffer per channel that turns chunks into fixed-length, fixed-hop windows.
#[derive(Debug)]
pub struct Windower {
    channels: usize,
    length: usize,
    hop: usize,
    /// `ring[c * length + i]`; slot `pos` holds the oldest sample once the ring is full.
    ring: Vec<f32>,
    /// Timestamp of the newest sample written, for `end_timestamp`.
    last_timestamp: f64,
    /// Next slot to write.
    pos: usize,
    /// Samples still to arrive before the next window is due.
    until_next: usize,
    /// The emitted window, oldest sample first, channel-major; reused for every window.
    linear: Vec<f32>,
    /// This sequence's id and the index of the next window (see [`Slide`]).
    run: u64,
    index: u64,
}

impl Clone for Windower {
    /// A clone starts its own sequence: fed other samples, it must not pass for this one.
    fn clone(&self) -> Self {
        Windower {
            channels: self.channels,
            length: self.length,
            hop: self.hop,
            ring: self.ring.clone(),
            last_timestamp: self.last_timestamp,
            pos: self.pos,
            until_next: self.until_next,
            linear: self.linear.clone(),
            run: next_run(),
            index: self.index,
        }
    }
}

impl Windower {
    /// `length` samples per window, one window every `hop` samples after the first.
    /// Panics if `length` or `hop` is 0 (a programming error: configs are validated upstream).
    pub fn new(channels: usize, length: usize, hop: usize) -> Self {
        assert!(length > 0, "window length must be at least 1 sample");
        assert!(hop > 0, "window hop must be at least 1 sample");
        Windower {
            channels,
            length,
            hop,
            ring: vec![0.0; channels * length],
            last_timestamp: f64::NAN,
            pos: 0,
            until_next: length,
            linear: vec![0.0; channels * length],
            run: next_run(),
            index: 0,
        }
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    pub fn length(&self) -> usize {
        self.length
    }

    pub fn hop(&self) -> usize {
        self.hop
    }

    /// Forget all samples: the next window comes after `length` new samples.
    pub fn reset(&mut self) {
        self.pos = 0;
        self.until_next = self.length;
        self.last_timestamp = f64::NAN;
        self.run = next_run();
        self.index = 0;
    }

    /// Append `chunk` (sampled at `rate` Hz) and call `on_window` for every window completed
    /// by it, in order. Allocation-free.
    pub fn push(&mut self, chunk: &Chunk, rate: f64, mut on_window: impl FnMut(&Window<'_>)) {
        assert_eq!(
            chunk.channels(),
            self.channels,
            "windower built for {} channels got a chunk of {}",
            self.channels,
            chunk.channels()
        );
        let samples = chunk.samples();
        let mut start = 0;
        while start < samples {
            // Copy up to the next emission point (or the end of the chunk) in one span per
            // channel rather than sample by sample.
            let span = (samples - start).min(self.until_next);
            self.write_span(chunk, start, span);
            start += span;
            self.until_next -= span;
            self.last_timestamp = chunk.timestamps()[start - 1];
            if self.until_next == 0 {
                self.until_next = self.hop;
                self.linearize();
                // Consecutive windows are `hop` apart only when the hop is shorter than the
                // window; otherwise they share no samples and each stands alone.
                let slide = (self.hop < self.length).then_some(Slide {
                    run: self.run,
                    index: self.index,
                    hop: self.hop,
                });
                self.index += 1;
                on_window(&Window {
                    data: &self.linear,
                    channels: self.channels,
                    samples: self.length,
                    rate,
                    end_timestamp: self.last_timestamp,
                    slide,
                });
            }
        }
    }

    /// Write samples `start..start + span` of every channel at the ring position. When the
    /// span is longer than the ring (hop > length), only its last `length` samples matter.
    fn write_span(&mut self, chunk: &Chunk, start: usize, span: usize) {
        let len = self.length;
        let skip = span.saturating_sub(len);
        let (start, span) = (start + skip, span - skip);
        let pos = (self.pos + skip) % len;
        let first = span.min(len - pos);
        for c in 0..self.channels {
            let src = &chunk.channel(c)[start..start + span];
            let ring = &mut self.ring[c * len..(c + 1) * len];
            ring[pos..pos + first].copy_from_slice(&src[..first]);
            ring[..span - first].copy_from_slice(&src[first..]);
        }
        self.pos = (pos + span) % len;
    }

    fn linearize(&mut self) {
        let len = self.length;
        let pos = self.pos;
        for c in 0..self.channels {
            let ring = &self.ring[c * len..(c + 1) * len];
            let out = &mut self.linear[c * len..(c + 1) * len];
            out[..len - pos].copy_from_slice(&ring[pos..]);
            out[len - pos..].copy_from_slice(&ring[..pos]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(channels: usize, n: usize) -> Chunk {
        let data = (0..channels)
            .flat_map(|c| (0..n).map(move |s| (c * 1000 + s) as f32))
            .collect();
        Chunk::from_channel_major(channels, data, (0..n).map(|s| s as f64 * 0.5).collect())
    }

    #[test]
    fn windows_are_in_order_and_stamped_with_newest_sample() {
        let mut w = Windower::new(2, 4, 3);
        let mut seen = Vec::new();
        w.push(&ramp(2, 10), 2.0, |win| {
            seen.push((
                win.channel(0).to_vec(),
                win.channel(1)[0],
                win.end_timestamp,
            ))
        });
        // Windows end at samples 3, 6, 9.
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0].0, vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(seen[1].0, vec![3.0, 4.0, 5.0, 6.0]);
        assert_eq!(seen[2].0, vec![6.0, 7.0, 8.0, 9.0]);
        assert_eq!(seen[2].1, 1006.0);
        assert_eq!(seen[2].2, 4.5);
    }

    #[test]
    fn hop_longer_than_window_skips_samples() {
        let mut w = Windower::new(1, 3, 5);
        let mut seen = Vec::new();
        let chunk = ramp(1, 13);
        w.push(&chunk, 1.0, |win| seen.push(win.channel(0).to_vec()));
        assert_eq!(
            seen,
            vec![
                vec![0.0, 1.0, 2.0],
                vec![5.0, 6.0, 7.0],
                vec![10.0, 11.0, 12.0]
            ]
        );
    }
}
