//! Sliding windows. (Being written.)
