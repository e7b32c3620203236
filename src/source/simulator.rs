//! Synthetic motor-imagery EEG. (Being written.)
