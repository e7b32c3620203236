//! Replay of a recording. (Being written.)
