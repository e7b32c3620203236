//! Pipeline. (Being written.)
