//! Band power. (Being written.)
