//! Where a start spends its time: each step's duration, logged at debug level
//! (`CLAUDE_BOTTLE_LOG=debug`) as `start step done step=… ms=… total_ms=…`, where `total_ms`
//! counts from the command's first step. `bench/bottles/run` reads these lines for its
//! per-step breakdown.

use std::sync::OnceLock;
use std::time::Instant;

static BEGAN: OnceLock<Instant> = OnceLock::new();

/// Times consecutive steps; the first clock made in a process marks its beginning.
pub(crate) struct StepClock {
    step: String,
    at: Instant,
}

impl StepClock {
    /// Begins step `first`.
    pub(crate) fn new(first: &str) -> StepClock {
        let at = Instant::now();
        BEGAN.get_or_init(|| at);
        StepClock {
            step: first.to_owned(),
            at,
        }
    }

    /// Ends the current step and begins `next`.
    pub(crate) fn next(&mut self, next: &str) {
        self.finish();
        next.clone_into(&mut self.step);
        self.at = Instant::now();
    }

    /// Logs the current step's time so far.
    pub(crate) fn finish(&self) {
        let now = Instant::now();
        let began = BEGAN.get().copied().unwrap_or(self.at);
        tracing::debug!(
            step = %self.step,
            ms = now.duration_since(self.at).as_millis() as u64,
            total_ms = now.duration_since(began).as_millis() as u64,
            "start step done"
        );
    }
}
