//! Common average reference (CAR).

use super::Stage;
use crate::stream::Chunk;

/// Subtracts, at every sample, the mean across channels from each channel. Stateless, so it
/// is trivially chunk-size invariant.
#[derive(Debug, Clone)]
pub struct CommonAverage {
    channels: usize,
    /// Per-sample mean of the current chunk; grows to the largest chunk, then is reused.
    mean: Vec<f32>,
}

impl CommonAverage {
    pub fn new(channels: usize) -> Self {
        CommonAverage {
            channels,
            mean: Vec::new(),
        }
    }
}

impl Stage for CommonAverage {
    fn process(&mut self, chunk: &mut Chunk) {
        assert_eq!(
            chunk.channels(),
            self.channels,
            "CAR channel count mismatch"
        );
        let samples = chunk.samples();
        if samples == 0 || self.channels == 0 {
            return;
        }
        // Accumulate channel by channel (contiguous slices) rather than sample by sample
        // across channels (strided): same sums, cache-friendly and vectorisable.
        self.mean.clear();
        self.mean.resize(samples, 0.0);
        for c in 0..self.channels {
            for (m, &x) in self.mean.iter_mut().zip(chunk.channel(c)) {
                *m += x;
            }
        }
        let scale = 1.0 / self.channels as f32;
        for m in &mut self.mean {
            *m *= scale;
        }
        for c in 0..self.channels {
            for (x, &m) in chunk.channel_mut(c).iter_mut().zip(&self.mean) {
                *x -= m;
            }
        }
    }

    fn reset(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtracts_per_sample_mean() {
        // Channel-major: ch0 = [1, 2], ch1 = [4, 2], ch2 = [1, -1]; means [2, 1].
        let mut chunk =
            Chunk::from_channel_major(3, vec![1.0, 2.0, 4.0, 2.0, 1.0, -1.0], vec![0.0, 1.0]);
        CommonAverage::new(3).process(&mut chunk);
        let want = [-1.0, 1.0, 2.0, 1.0, -1.0, -2.0];
        for (got, want) in chunk.data().iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{:?}", chunk.data());
        }
    }
}
