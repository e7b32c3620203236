//! Service metrics, rendered in the Prometheus text exposition format (version 0.0.4) at
//! `/metrics`. Plain atomics: the DSP thread updates them without locks.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Why a message or sample was lost; one `neurostream_drops_total{reason=...}` series each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A client's queue was full: its oldest message was dropped.
    ClientQueue,
    /// A client sent more messages per second than allowed.
    RateLimited,
    /// The feedback channel to the DSP thread was full.
    FeedbackQueue,
    /// The source reported lost samples (counted in samples).
    SourceSamples,
    /// A connection was refused because `max_clients` were connected.
    MaxClients,
    /// The recorder fell behind: a chunk, marker batch, command or session event was not
    /// recorded (counted in items).
    Recorder,
    /// A chunk held NaN, infinite or absurd values and was discarded (counted in samples).
    BadSamples,
    /// A chunk repeated samples already processed and was skipped (counted in samples).
    Duplicate,
    /// An HTTP connection was closed to make room (`max_connections`), or refused.
    MaxConnections,
    /// Feedback or rollback from a connection without the feedback right, or over its rate.
    FeedbackRefused,
    /// A connection was closed for sending nothing within its timeout (header, HTTP idle,
    /// WebSocket idle).
    Timeout,
}

const REASONS: [(DropReason, &str); 11] = [
    (DropReason::ClientQueue, "client_queue"),
    (DropReason::RateLimited, "rate_limited"),
    (DropReason::FeedbackQueue, "feedback_queue"),
    (DropReason::SourceSamples, "source_samples"),
    (DropReason::MaxClients, "max_clients"),
    (DropReason::Recorder, "recorder"),
    (DropReason::BadSamples, "bad_samples"),
    (DropReason::Duplicate, "duplicate"),
    (DropReason::MaxConnections, "max_connections"),
    (DropReason::FeedbackRefused, "feedback_refused"),
    (DropReason::Timeout, "timeout"),
];

/// Upper bounds of the latency histogram buckets, seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Debug, Default)]
pub struct Metrics {
    pub samples_in: AtomicU64,
    pub chunks_in: AtomicU64,
    pub windows_processed: AtomicU64,
    pub commands_out: AtomicU64,
    pub messages_sent: AtomicU64,
    pub feedback_applied: AtomicU64,
    pub clients: AtomicU64,
    pub connections_total: AtomicU64,
    /// Open HTTP connections (not yet or never WebSocket clients).
    pub http_connections: AtomicU64,
    drops: [AtomicU64; REASONS.len()],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
}

fn index(reason: DropReason) -> usize {
    REASONS
        .iter()
        .position(|(r, _)| *r == reason)
        .expect("every reason is listed")
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn count_drop(&self, reason: DropReason, n: u64) {
        self.drops[index(reason)].fetch_add(n, Ordering::Relaxed);
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[index(reason)].load(Ordering::Relaxed)
    }

    /// One chunk-arrival → command-sent latency.
    pub fn observe_latency(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| seconds <= b) {
            self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ns
            .fetch_add(latency.as_nanos() as u64, Ordering::Relaxed);
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "neurostream_samples_in_total",
            "Samples received from the source.",
            get(&self.samples_in),
        );
        counter(
            "neurostream_chunks_in_total",
            "Chunks received from the source.",
            get(&self.chunks_in),
        );
        counter(
            "neurostream_windows_processed_total",
            "Analysis windows processed by the pipeline.",
            get(&self.windows_processed),
        );
        counter(
            "neurostream_commands_out_total",
            "Commands decided and queued to the clients.",
            get(&self.commands_out),
        );
        counter(
            "neurostream_messages_sent_total",
            "WebSocket messages sent, all clients and types.",
            get(&self.messages_sent),
        );
        counter(
            "neurostream_feedback_applied_total",
            "Client feedback messages that changed the decoder.",
            get(&self.feedback_applied),
        );
        counter(
            "neurostream_connections_total",
            "WebSocket connections accepted.",
            get(&self.connections_total),
        );
        let _ = writeln!(
            out,
            "# HELP neurostream_drops_total Messages, requests or samples lost, per reason.\n# TYPE neurostream_drops_total counter"
        );
        for (reason, name) in REASONS {
            let _ = writeln!(
                out,
                "neurostream_drops_total{{reason=\"{name}\"}} {}",
                self.drops(reason)
            );
        }
        let _ = writeln!(
            out,
            "# HELP neurostream_websocket_clients Connected WebSocket clients.\n# TYPE neurostream_websocket_clients gauge\nneurostream_websocket_clients {}",
            get(&self.clients)
        );
        let _ = writeln!(
            out,
            "# HELP neurostream_http_connections Open HTTP connections not (yet) WebSocket clients.\n# TYPE neurostream_http_connections gauge\nneurostream_http_connections {}",
            get(&self.http_connections)
        );
        let name = "neurostream_command_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Chunk arrival at the DSP thread to command sent on a WebSocket.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            cumulative += get(count);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = get(&self.latency_count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", get(&self.latency_sum_ns) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.observe_latency(Duration::from_micros(800));
        m.observe_latency(Duration::from_millis(30));
        m.observe_latency(Duration::from_secs(10));
        let text = m.render();
        assert!(text.contains("neurostream_command_latency_seconds_bucket{le=\"0.001\"} 1"));
        assert!(text.contains("neurostream_command_latency_seconds_bucket{le=\"0.05\"} 2"));
        assert!(text.contains("neurostream_command_latency_seconds_bucket{le=\"2.5\"} 2"));
        assert!(text.contains("neurostream_command_latency_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("neurostream_command_latency_seconds_count 3"));
    }
}
