//! Service metrics, rendered in the Prometheus text exposition format (version 0.0.4) at
//! `/metrics` by the `prometheus-client` crate. Plain atomics: the DSP thread updates them
//! without locks; a scrape copies them into a collector for the encoder.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Declares [`DropReason`], its label names and the list of all reasons from one table, so
/// that a reason without a label (or a label without a reason) cannot compile.
macro_rules! drop_reasons {
    ($($(#[$doc:meta])* $variant:ident => $label:literal,)+) => {
        /// Why a message or sample was lost; one `neurostream_drops_total{reason=...}` series each.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum DropReason {
            $($(#[$doc])* $variant,)+
        }

        impl DropReason {
            /// Every reason, in declaration order: `ALL[r as usize] == r`.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)+];

            /// The `reason` label of this reason's series.
            pub const fn label(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $label,)+
                }
            }
        }
    };
}

drop_reasons! {
    /// A client's queue was full: its oldest message was dropped.
    ClientQueue => "client_queue",
    /// A client sent more messages per second than allowed.
    RateLimited => "rate_limited",
    /// The feedback channel to the DSP thread was full.
    FeedbackQueue => "feedback_queue",
    /// The source reported lost samples (counted in samples).
    SourceSamples => "source_samples",
    /// A connection was refused because `max_clients` were connected.
    MaxClients => "max_clients",
    /// The recorder fell behind: a chunk, marker batch, command or session event was not
    /// recorded (counted in items).
    Recorder => "recorder",
    /// A chunk held NaN, infinite or absurd values and was discarded (counted in samples).
    BadSamples => "bad_samples",
    /// A chunk repeated samples already processed and was skipped (counted in samples).
    Duplicate => "duplicate",
    /// An HTTP connection was closed to make room (`max_connections`), or refused.
    MaxConnections => "max_connections",
    /// Feedback or rollback from a connection without the feedback right, or over its rate.
    FeedbackRefused => "feedback_refused",
    /// A connection was closed for sending nothing within its timeout (header, HTTP idle,
    /// WebSocket idle).
    Timeout => "timeout",
    /// The NATS publisher's queue was full (NATS down or slow): a message was not published.
    NatsQueue => "nats_queue",
    /// The NATS publisher gave up on a message (still unacknowledged at shutdown).
    NatsPublish => "nats_publish",
}

/// Number of drop reasons: the length of the per-reason counter array.
const REASON_COUNT: usize = DropReason::ALL.len();

// `reason as usize` indexes the counter array: checked here, at compile time, for every reason.
const _: () = {
    let mut i = 0;
    while i < REASON_COUNT {
        assert!(DropReason::ALL[i] as usize == i);
        i += 1;
    }
};

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
    /// 1 while a `[nats]` publisher is connected.
    pub nats_connected: AtomicU64,
    /// Messages JetStream acknowledged.
    pub nats_published: AtomicU64,
    drops: [AtomicU64; REASON_COUNT],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
}

/// The counter slot of a reason. In range for every reason: `drops` has one slot per variant
/// (the array length and the enum come from the same table, and the const block above checks
/// the discriminants).
const fn index(reason: DropReason) -> usize {
    reason as usize
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

    /// The values of every series at one instant.
    fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            counters: [
                (
                    "neurostream_samples_in",
                    "Samples received from the source.",
                    get(&self.samples_in),
                ),
                (
                    "neurostream_chunks_in",
                    "Chunks received from the source.",
                    get(&self.chunks_in),
                ),
                (
                    "neurostream_windows_processed",
                    "Analysis windows processed by the pipeline.",
                    get(&self.windows_processed),
                ),
                (
                    "neurostream_commands_out",
                    "Commands decided and queued to the clients.",
                    get(&self.commands_out),
                ),
                (
                    "neurostream_messages_sent",
                    "WebSocket messages sent, all clients and types.",
                    get(&self.messages_sent),
                ),
                (
                    "neurostream_feedback_applied",
                    "Client feedback messages that changed the decoder.",
                    get(&self.feedback_applied),
                ),
                (
                    "neurostream_connections",
                    "WebSocket connections accepted.",
                    get(&self.connections_total),
                ),
                (
                    "neurostream_nats_published",
                    "Messages stored by NATS JetStream (acknowledged).",
                    get(&self.nats_published),
                ),
            ],
            drops: std::array::from_fn(|i| get(&self.drops[i])),
            gauges: [
                (
                    "neurostream_websocket_clients",
                    "Connected WebSocket clients.",
                    get(&self.clients),
                ),
                (
                    "neurostream_http_connections",
                    "Open HTTP connections not (yet) WebSocket clients.",
                    get(&self.http_connections),
                ),
                (
                    "neurostream_nats_connected",
                    "1 while the NATS publisher is connected, 0 during an outage.",
                    get(&self.nats_connected),
                ),
            ],
            latency_buckets: std::array::from_fn(|i| get(&self.latency_buckets[i])),
            latency_count: get(&self.latency_count),
            latency_sum: get(&self.latency_sum_ns) as f64 / 1e9,
        }
    }

    /// The Prometheus text format (version 0.0.4, [`CONTENT_TYPE`]), encoded by the
    /// `prometheus-client` crate.
    pub fn render(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.snapshot()));
        let mut out = String::new();
        // Writing into a String cannot fail, and every name and label above is valid; an
        // error would leave a truncated page, never a panic.
        if let Err(e) = prometheus_text::encode(&mut out, &registry) {
            tracing::error!("encoding /metrics failed: {e}");
        }
        out
    }
}

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Copied values, handed to the `prometheus-client` registry for one scrape (the live
/// counters stay plain atomics, updated without locks).
#[derive(Debug)]
struct Snapshot {
    counters: [(&'static str, &'static str, u64); 8],
    drops: [u64; REASON_COUNT],
    gauges: [(&'static str, &'static str, u64); 3],
    latency_buckets: [u64; LATENCY_BUCKETS.len()],
    latency_count: u64,
    latency_sum: f64,
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for &(name, help, value) in &self.counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let mut family = encoder.encode_descriptor(
            "neurostream_drops",
            "Messages, requests or samples lost, per reason.",
            None,
            MetricType::Counter,
        )?;
        for &reason in DropReason::ALL {
            let labels = [("reason", reason.label())];
            ConstCounter::new(self.drops[index(reason)]).encode(family.encode_family(&labels)?)?;
        }
        for &(name, help, value) in &self.gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .zip(self.latency_buckets.iter().copied())
            .collect();
        encoder
            .encode_descriptor(
                "neurostream_command_latency_seconds",
                "Chunk arrival at the DSP thread to command sent on a WebSocket.",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(self.latency_sum, self.latency_count, &buckets, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of one series, or None when the page lacks it.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .map(|v| v.parse().unwrap())
    }

    #[test]
    fn every_drop_reason_has_its_own_series() {
        let m = Metrics::default();
        for (i, &reason) in DropReason::ALL.iter().enumerate() {
            m.count_drop(reason, i as u64 + 1);
        }
        let text = m.render();
        assert_eq!(DropReason::ALL.len(), 13);
        for (i, &reason) in DropReason::ALL.iter().enumerate() {
            let series = format!("neurostream_drops_total{{reason=\"{}\"}}", reason.label());
            assert_eq!(
                value(&text, &series),
                Some(i as f64 + 1.0),
                "{series} in\n{text}"
            );
            assert_eq!(m.drops(reason), i as u64 + 1);
        }
        let labels: std::collections::HashSet<_> =
            DropReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), DropReason::ALL.len(), "labels are distinct");
    }

    #[test]
    fn page_is_prometheus_text_0_0_4() {
        let m = Metrics::default();
        Metrics::add(&m.samples_in, 9600);
        Metrics::add(&m.clients, 2);
        let text = m.render();
        assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
        assert!(
            text.contains("# TYPE neurostream_samples_in_total counter\n"),
            "{text}"
        );
        assert_eq!(value(&text, "neurostream_samples_in_total"), Some(9600.0));
        assert!(
            text.contains("# TYPE neurostream_websocket_clients gauge\n"),
            "{text}"
        );
        assert_eq!(value(&text, "neurostream_websocket_clients"), Some(2.0));
        assert_eq!(value(&text, "neurostream_http_connections"), Some(0.0));
        assert!(text.contains("# TYPE neurostream_command_latency_seconds histogram\n"));
        assert!(
            !text.contains("# EOF"),
            "0.0.4 text has no OpenMetrics EOF line"
        );
        // Every series line is `name[{labels}] value`, with a HELP and TYPE for its family.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, v) = line.rsplit_once(' ').unwrap();
            assert!(v.parse::<f64>().is_ok(), "{line}");
            assert!(name.starts_with("neurostream_"), "{line}");
        }
    }

    #[test]
    fn protocol_doc_lists_every_drop_reason() {
        // Read, not compiled in: the image build copies no docs/.
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/protocol.md"))
            .expect("docs/protocol.md");
        for reason in DropReason::ALL {
            let label = reason.label();
            assert!(
                doc.contains(&format!("| `{label}` |")),
                "docs/protocol.md has no row for the drop reason `{label}`"
            );
        }
    }

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
