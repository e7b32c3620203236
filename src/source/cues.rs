//! What the virtual subject imagines, written by whoever cues it (the service's paradigm,
//! [`crate::paradigm`]) and read by the simulator (`follow_cues = true`). Here, with the
//! sources, so that a source never imports the service-side paradigm.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// Which hand (if any) a cued class asks the virtual subject to imagine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Imagery {
    LeftHand,
    RightHand,
    /// Rest, feet or anything else: no lateralised ERD.
    Other,
}

/// One cue the virtual subject follows: imagine `imagery` from `onset` for `duration` s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FollowedCue {
    pub imagery: Imagery,
    pub onset: f64,
    pub duration: f64,
}

/// The shared handle through which the paradigm tells the simulator what to imagine.
#[derive(Debug, Default)]
pub struct CueFollower {
    cues: Mutex<VecDeque<FollowedCue>>,
}

impl CueFollower {
    pub fn new() -> Arc<CueFollower> {
        Arc::new(CueFollower::default())
    }

    pub fn push(&self, cue: FollowedCue) {
        self.cues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(cue);
    }

    /// The imagery at stream time `t` for each of `times` (consecutive, increasing), written
    /// into `out`; cues that ended before the first time are forgotten.
    pub fn imagery_at(&self, times: &[f64], out: &mut [Imagery]) {
        let mut cues = self.cues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&first) = times.first() {
            while cues.front().is_some_and(|c| c.onset + c.duration < first) {
                cues.pop_front();
            }
        }
        for (t, slot) in times.iter().zip(out.iter_mut()) {
            *slot = cues
                .iter()
                .find(|c| c.onset <= *t && *t < c.onset + c.duration)
                .map_or(Imagery::Other, |c| c.imagery);
        }
    }
}
