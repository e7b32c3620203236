//! Output sinks. (Being written.)
