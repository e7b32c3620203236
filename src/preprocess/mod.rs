//! Preprocessing. (Being written.)
