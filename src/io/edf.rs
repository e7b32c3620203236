//! EDF, EDF+ and BDF reader: the whole file, already in memory → a [`Recording`].
//!
//! What it reads:
//! - **EDF** (version `0       `, 16-bit little-endian samples) and **BDF** (BioSemi,
//!   `\xFFBIOSEMI`, 24-bit little-endian samples). The header is the 256-byte fixed part plus
//!   256 bytes per signal.
//! - **EDF+/BDF+** annotation signals (`EDF Annotations` / `BDF Annotations`): their TALs
//!   (time-stamped annotation lists, `+onset\x15duration\x14text\x14…\x14\x00`) become one
//!   marker stream. The first TAL of each record, whose first text is empty, is the record's
//!   time-keeping stamp, not an event.
//!
//! Choices and why:
//! - **Streams by sampling rate.** A [`RecordedStream`] has one timestamp vector, so signals
//!   with different rates cannot share one. Signals are grouped by samples-per-record (the
//!   record duration is common, so that is the rate); the group with the most channels comes
//!   first, ties in file order. Every group is typed `EEG` and named after the file stem;
//!   groups after the first get `source_id` `<stem>@<rate>Hz` so they stay distinguishable.
//! - **Clock.** Time 0 is the first sample of the file. In EDF+ the first record's
//!   time-keeping onset may be non-zero (a sub-second start offset); it is subtracted from
//!   every annotation onset and record onset, so events and samples share one clock. EDF+C
//!   (and plain EDF/BDF) timestamps are `i / rate`; EDF+D timestamps follow each record's
//!   time-keeping onset, so gaps between records show as jumps in the timestamps.
//! - **Sizes.** A file shorter than header + records × record size keeps its whole records
//!   and drops the partial last one, with a warning naming the bytes dropped (a full disk or
//!   an interrupted copy leaves exactly that, and pyxdf-style recovery of what was written is
//!   more useful than refusing the whole file); extra bytes after the declared records are an
//!   error, since that is not what a torn write leaves. A record count of `-1` (the spec's
//!   "unknown, still recording") is derived from the file size the same way. Because the
//!   sizes are checked before any sample buffer is allocated, allocations are bounded by a
//!   small multiple of the file size, whatever the header claims.
//! - **Rates.** Every ordinary signal's rate (samples per record / record duration) must be in
//!   [[`MIN_RATE_HZ`](crate::io::MIN_RATE_HZ), [`MAX_RATE_HZ`](crate::io::MAX_RATE_HZ)]: a record duration of 1e-9 s would otherwise announce
//!   1e11 Hz and make every later window allocation absurd.
//! - **Errors, not panics.** Every header number is parsed with its field named in the error,
//!   arithmetic on header-derived sizes is checked, and malformed TALs are reported with the
//!   record they are in. Digital minimum = maximum is rejected (the scaling would divide by
//!   zero); physical minimum = maximum is accepted (the spec forbids it, but it only makes a
//!   constant channel, and some writers emit it for unused inputs).
//!
//! Why not a crate: `edf-rs` 0.2 and `edfplus` 0.1 both read EEGMMIDB S001R04 correctly,
//! but both open a path (this reader receives bytes, as [`super::open`] sniffs the magic
//! first), `edfplus` 0.1 returns *no annotations and the full sample count* for a file cut
//! mid-record (it discards the annotation error), and `edf-rs` 0.2 reports the same
//! truncation only as a bare `UnexpectedEof` when the record is read. The format is small
//! enough that a reader of our own, with the errors above, is the cheaper dependency.

use std::path::Path;

use crate::error::{Error, Result};
use crate::io::{check_rate, RecordedStream, Recording, StreamData};
use crate::stream::{normalize_label, ChannelInfo, Event, StreamInfo, ValueFormat, IRREGULAR_RATE};

const FIXED_HEADER: usize = 256;
const SIGNAL_HEADER: usize = 256;
const BDF_MAGIC: &[u8] = b"\xFFBIOSEMI";
const EDF_MAGIC: &[u8] = b"0       ";

/// EDF+ labels that start with one of these words carry the signal type (`EEG Fpz-Cz`).
const KNOWN_KINDS: &[&str] = &[
    "EEG", "ECG", "EOG", "ERG", "EMG", "MEG", "MCG", "EP", "Resp", "SaO2", "Temp",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Edf,
    Bdf,
}

impl Flavor {
    fn name(self) -> &'static str {
        match self {
            Flavor::Edf => "EDF",
            Flavor::Bdf => "BDF",
        }
    }

    fn bytes_per_sample(self) -> usize {
        match self {
            Flavor::Edf => 2,
            Flavor::Bdf => 3,
        }
    }

    fn digital_range(self) -> (i64, i64) {
        match self {
            Flavor::Edf => (i16::MIN as i64, i16::MAX as i64),
            Flavor::Bdf => (-(1 << 23), (1 << 23) - 1),
        }
    }

    fn annotation_label(self) -> &'static str {
        match self {
            Flavor::Edf => "EDF Annotations",
            Flavor::Bdf => "BDF Annotations",
        }
    }
}

struct Signal {
    label: String,
    unit: String,
    kind: String,
    samples_per_record: usize,
    /// Byte offset of this signal's samples inside a data record.
    offset_in_record: usize,
    is_annotation: bool,
    /// phys = dig * gain + bias, folded from the four min/max fields once per signal.
    gain: f64,
    bias: f64,
}

struct Header {
    flavor: Flavor,
    discontinuous: bool,
    header_bytes: usize,
    records: usize,
    record_duration: f64,
    record_bytes: usize,
    signals: Vec<Signal>,
}

/// Error context: which format and file every message is about.
struct Ctx<'a> {
    flavor: Flavor,
    path: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, detail: impl Into<String>) -> Error {
        Error::format(self.flavor.name(), self.path, detail)
    }

    /// Header text field, trimmed of the space (and stray NUL) padding.
    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes)
            .trim_matches(|c: char| c == ' ' || c == '\0')
            .to_string()
    }

    fn int(&self, bytes: &[u8], field: &str) -> Result<i64> {
        let text = Self::text(bytes);
        text.parse::<i64>().map_err(|_| {
            self.err(format!(
                "{field} is {:?}, not an integer",
                String::from_utf8_lossy(bytes)
            ))
        })
    }

    fn float(&self, bytes: &[u8], field: &str) -> Result<f64> {
        let text = Self::text(bytes);
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(self.err(format!(
                "{field} is {:?}, not a finite number",
                String::from_utf8_lossy(bytes)
            ))),
        }
    }
}

/// Parse an EDF, EDF+ or BDF file already read into memory.
pub fn parse(bytes: &[u8], path: &Path) -> Result<Recording> {
    parse_reporting(bytes, path, &mut Vec::new())
}

/// [`parse`], appending what was recovered from (a partial last record) to `warnings`; each
/// is also logged with `tracing::warn`.
pub fn parse_reporting(bytes: &[u8], path: &Path, warnings: &mut Vec<String>) -> Result<Recording> {
    let flavor = if bytes.starts_with(BDF_MAGIC) {
        Flavor::Bdf
    } else {
        Flavor::Edf
    };
    let ctx = Ctx { flavor, path };
    let header = parse_header(bytes, &ctx, warnings)?;
    let data = &bytes[header.header_bytes..];

    let annotations = read_annotations(&header, data, &ctx)?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();

    let mut streams = read_signals(
        &header,
        data,
        annotations.as_ref().map(|a| a.record_onsets.as_slice()),
        &stem,
    );
    if let Some(mut found) = annotations {
        found.events.sort_by(|a, b| a.onset.total_cmp(&b.onset));
        streams.push(RecordedStream {
            info: StreamInfo {
                name: stem.clone(),
                stream_type: "Markers".into(),
                source_id: format!("{stem}/annotations"),
                channels: vec![ChannelInfo {
                    label: flavor.annotation_label().into(),
                    unit: String::new(),
                    kind: "Markers".into(),
                }],
                nominal_rate: IRREGULAR_RATE,
                format: ValueFormat::String,
            },
            timestamps: found.events.iter().map(|e| e.onset).collect(),
            data: StreamData::Markers(found.events),
        });
    }
    Ok(Recording { streams })
}

fn parse_header(bytes: &[u8], ctx: &Ctx, warnings: &mut Vec<String>) -> Result<Header> {
    let flavor = ctx.flavor;
    if bytes.len() < FIXED_HEADER {
        return Err(ctx.err(format!(
            "file is {} bytes, shorter than the {FIXED_HEADER}-byte fixed header",
            bytes.len()
        )));
    }
    if flavor == Flavor::Edf && !bytes.starts_with(EDF_MAGIC) {
        return Err(ctx.err(format!(
            "version field is {:?}, expected \"0       \" (EDF) or \"\\xFFBIOSEMI\" (BDF)",
            String::from_utf8_lossy(&bytes[..8])
        )));
    }
    let field = |at: usize, len: usize| &bytes[at..at + len];

    let reserved = Ctx::text(field(192, 44));
    let discontinuous = reserved.starts_with("EDF+D") || reserved.starts_with("BDF+D");

    let ns = ctx.int(field(252, 4), "number of signals (header bytes 252..256)")?;
    if ns < 1 {
        return Err(ctx.err(format!("number of signals is {ns}, must be at least 1")));
    }
    let ns = ns as usize; // at most 9999: the field has four digits
    let header_bytes = (ns + 1) * SIGNAL_HEADER;
    let declared_header = ctx.int(
        field(184, 8),
        "number of header bytes (header bytes 184..192)",
    )?;
    if declared_header != header_bytes as i64 {
        return Err(ctx.err(format!(
            "number of header bytes is {declared_header}, but {ns} signals need {header_bytes}"
        )));
    }
    if bytes.len() < header_bytes {
        return Err(ctx.err(format!(
            "file is {} bytes, shorter than the {header_bytes}-byte header of {ns} signals (truncated)",
            bytes.len()
        )));
    }

    let record_duration = ctx.float(
        field(244, 8),
        "duration of a data record (header bytes 244..252)",
    )?;
    if record_duration < 0.0 {
        return Err(ctx.err(format!(
            "duration of a data record is {record_duration}, negative"
        )));
    }

    // Signal header fields are stored field by field: all labels, then all transducers...
    let sig_field = |s: usize, start: usize, len: usize| {
        let at = FIXED_HEADER + start * ns + s * len;
        &bytes[at..at + len]
    };
    let (dig_lo, dig_hi) = flavor.digital_range();
    let mut signals = Vec::with_capacity(ns);
    let mut record_bytes: usize = 0;
    for s in 0..ns {
        let raw_label = Ctx::text(sig_field(s, 0, 16));
        let name = |f: &str| format!("signal {s} ({raw_label:?}) {f}");
        // Either spelling in either flavour: some BDF+ writers use the EDF label.
        let is_annotation = raw_label == "EDF Annotations" || raw_label == "BDF Annotations";
        let spr = ctx.int(sig_field(s, 216, 8), &name("samples per record"))?;
        if spr < 1 {
            return Err(ctx.err(format!(
                "{} is {spr}, must be at least 1",
                name("samples per record")
            )));
        }
        let spr = spr as usize; // at most 99,999,999: eight digits
        let (gain, bias) = if is_annotation {
            (0.0, 0.0)
        } else {
            let phys_min = ctx.float(sig_field(s, 104, 8), &name("physical minimum"))?;
            let phys_max = ctx.float(sig_field(s, 112, 8), &name("physical maximum"))?;
            let dig_min = ctx.int(sig_field(s, 120, 8), &name("digital minimum"))?;
            let dig_max = ctx.int(sig_field(s, 128, 8), &name("digital maximum"))?;
            for (what, v) in [("digital minimum", dig_min), ("digital maximum", dig_max)] {
                if !(dig_lo..=dig_hi).contains(&v) {
                    return Err(ctx.err(format!(
                        "{} is {v}, outside the {}-bit range {dig_lo}..={dig_hi}",
                        name(what),
                        8 * flavor.bytes_per_sample()
                    )));
                }
            }
            if dig_min == dig_max {
                // The scaling divides by dig_max - dig_min.
                return Err(ctx.err(format!(
                    "{} and digital maximum are both {dig_min}: cannot scale to physical units",
                    name("digital minimum")
                )));
            }
            let gain = (phys_max - phys_min) / (dig_max - dig_min) as f64;
            (gain, phys_min - dig_min as f64 * gain)
        };
        let unit = Ctx::text(sig_field(s, 96, 8));
        // EEGMMIDB and most EEG files give bare electrode names and no type: assume EEG.
        let kind = raw_label
            .split_whitespace()
            .next()
            .and_then(|w| KNOWN_KINDS.iter().find(|k| k.eq_ignore_ascii_case(w)))
            .unwrap_or(&"EEG")
            .to_string();
        let size = spr
            .checked_mul(flavor.bytes_per_sample())
            .ok_or_else(|| ctx.err(format!("{} is too large", name("samples per record"))))?;
        signals.push(Signal {
            label: normalize_label(&raw_label),
            unit,
            kind,
            samples_per_record: spr,
            offset_in_record: record_bytes,
            is_annotation,
            gain,
            bias,
        });
        record_bytes = record_bytes
            .checked_add(size)
            .ok_or_else(|| ctx.err("data record size overflows"))?;
    }
    if record_duration == 0.0 && signals.iter().any(|s| !s.is_annotation) {
        // Only annotation-only EDF+ files may have zero-length records: a rate needs time.
        return Err(ctx.err("duration of a data record is 0, but the file has ordinary signals"));
    }
    for (s, sig) in signals.iter().enumerate().filter(|(_, s)| !s.is_annotation) {
        let rate = sig.samples_per_record as f64 / record_duration;
        check_rate(rate).map_err(|e| {
            ctx.err(format!(
                "signal {s} ({:?}): {} samples per record over a duration of a data record of \
                 {record_duration} s (header bytes 244..252) gives a rate of {e}",
                sig.label, sig.samples_per_record
            ))
        })?;
    }

    let data_len = bytes.len() - header_bytes;
    let declared = ctx.int(
        field(236, 8),
        "number of data records (header bytes 236..244)",
    )?;
    let whole = data_len / record_bytes;
    let torn = data_len % record_bytes;
    let records = match declared {
        -1 => whole,
        n if n < 0 => return Err(ctx.err(format!("number of data records is {n}, negative"))),
        n => {
            let n = usize::try_from(n)
                .map_err(|_| ctx.err(format!("number of data records {n} is too large")))?;
            if whole > n || (whole == n && torn > 0) {
                let expected = header_bytes + n * record_bytes;
                return Err(ctx.err(format!(
                    "file size is {} bytes but the header declares {expected} \
                     ({header_bytes} header + {n} records x {record_bytes} bytes); {} extra bytes \
                     after the last declared record",
                    bytes.len(),
                    bytes.len() - expected
                )));
            }
            if whole < n {
                let holds = format!(
                    "the header declares {n} data records of {record_bytes} bytes, the file \
                     holds {whole} whole records and {torn} bytes of the next"
                );
                if whole + 1 < n || torn == 0 {
                    // More than the last record missing is not a torn write: refuse.
                    return Err(ctx.err(format!(
                        "file size is {} bytes but the header declares {} ({header_bytes} \
                         header + {n} records x {record_bytes} bytes); truncated: {holds}",
                        bytes.len(),
                        n as u128 * record_bytes as u128 + header_bytes as u128
                    )));
                }
                let message = format!(
                    "{}: truncated: {holds}; kept the {whole} whole records",
                    ctx.path.display()
                );
                tracing::warn!("{message}");
                warnings.push(message);
            }
            whole
        }
    };
    if torn > 0 && declared == -1 {
        let message = format!(
            "{}: torn tail: {torn} bytes after the last whole {record_bytes}-byte data record \
             ignored (number of data records is -1, unknown)",
            ctx.path.display()
        );
        tracing::warn!("{message}");
        warnings.push(message);
    }

    Ok(Header {
        flavor,
        discontinuous,
        header_bytes,
        records,
        record_duration,
        record_bytes,
        signals,
    })
}

struct Annotations {
    events: Vec<Event>,
    /// Time-keeping onset of each record (seconds, file clock), `None` where a record has none.
    record_onsets: Vec<Option<f64>>,
}

/// Parse every TAL of every annotation signal. `None` when the file has no annotation signal.
fn read_annotations(header: &Header, data: &[u8], ctx: &Ctx) -> Result<Option<Annotations>> {
    let annotation_signals: Vec<&Signal> =
        header.signals.iter().filter(|s| s.is_annotation).collect();
    if annotation_signals.is_empty() {
        return Ok(None);
    }
    let bps = header.flavor.bytes_per_sample();
    let mut events = Vec::new();
    let mut record_onsets = Vec::with_capacity(header.records);
    for r in 0..header.records {
        let record = &data[r * header.record_bytes..(r + 1) * header.record_bytes];
        let mut onset = None;
        for (a, sig) in annotation_signals.iter().enumerate() {
            let bytes =
                &record[sig.offset_in_record..sig.offset_in_record + sig.samples_per_record * bps];
            let tals = parse_tals(bytes)
                .map_err(|e| ctx.err(format!("annotations of data record {r}: {e}")))?;
            for (t, tal) in tals.iter().enumerate() {
                let mut texts = tal.texts.as_slice();
                // The spec puts the time-keeping TAL first in the first annotation signal.
                if a == 0 && t == 0 && texts.first().is_some_and(|x| x.is_empty()) {
                    onset = Some(tal.onset);
                    texts = &texts[1..];
                }
                for text in texts.iter().filter(|x| !x.is_empty()) {
                    events.push(Event::new(
                        String::from_utf8_lossy(text),
                        tal.onset,
                        tal.duration,
                    ));
                }
            }
        }
        if onset.is_none() && header.discontinuous {
            return Err(ctx.err(format!(
                "data record {r} has no time-keeping annotation, which EDF+D needs to place its samples"
            )));
        }
        record_onsets.push(onset);
    }
    // Time 0 is the first sample: shift by the first record's start offset.
    let origin = record_onsets.first().copied().flatten().unwrap_or(0.0);
    if origin != 0.0 {
        for e in &mut events {
            e.onset -= origin;
        }
        for o in record_onsets.iter_mut().flatten() {
            *o -= origin;
        }
    }
    Ok(Some(Annotations {
        events,
        record_onsets,
    }))
}

struct Tal<'a> {
    onset: f64,
    duration: f64,
    texts: Vec<&'a [u8]>,
}

/// Split an annotation signal's bytes of one record into TALs. Errors are plain text; the
/// caller adds the record number.
fn parse_tals(bytes: &[u8]) -> std::result::Result<Vec<Tal<'_>>, String> {
    let mut tals = Vec::new();
    let mut rest = bytes;
    // NULs end each TAL and pad the signal after the last one.
    while let Some(start) = rest.iter().position(|&b| b != 0) {
        rest = &rest[start..];
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| format!("TAL {:?} is not terminated by a NUL byte", lossy(rest)))?;
        let tal = &rest[..end];
        rest = &rest[end..];

        let mut parts = tal.split(|&b| b == 0x14);
        let head = parts.next().unwrap_or_default();
        let mut texts: Vec<&[u8]> = parts.collect();
        if texts.is_empty() {
            return Err(format!("TAL {:?} has no 0x14 after its onset", lossy(tal)));
        }
        // Each text ends with 0x14, so the split leaves one empty piece after the last one.
        if texts.last().is_some_and(|t| t.is_empty()) {
            texts.pop();
        }
        let (onset_text, duration_text) = match head.iter().position(|&b| b == 0x15) {
            Some(i) => (&head[..i], Some(&head[i + 1..])),
            None => (head, None),
        };
        if !matches!(onset_text.first(), Some(b'+' | b'-')) {
            return Err(format!(
                "TAL onset {:?} does not start with '+' or '-'",
                lossy(onset_text)
            ));
        }
        let onset = parse_seconds(onset_text)
            .ok_or_else(|| format!("TAL onset {:?} is not a number", lossy(onset_text)))?;
        let duration = match duration_text {
            Some(d) if !d.is_empty() => parse_seconds(d)
                .ok_or_else(|| format!("TAL duration {:?} is not a number", lossy(d)))?,
            _ => 0.0,
        };
        tals.push(Tal {
            onset,
            duration,
            texts,
        });
    }
    Ok(tals)
}

fn parse_seconds(text: &[u8]) -> Option<f64> {
    std::str::from_utf8(text)
        .ok()?
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(40)]).into_owned()
}

/// Decode the ordinary signals into one stream per sampling rate.
fn read_signals(
    header: &Header,
    data: &[u8],
    record_onsets: Option<&[Option<f64>]>,
    stem: &str,
) -> Vec<RecordedStream> {
    // Group by samples per record: with one record duration, that is the rate.
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for (i, sig) in header
        .signals
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.is_annotation)
    {
        match groups
            .iter_mut()
            .find(|(spr, _)| *spr == sig.samples_per_record)
        {
            Some((_, members)) => members.push(i),
            None => groups.push((sig.samples_per_record, vec![i])),
        }
    }
    groups.sort_by_key(|(_, members)| std::cmp::Reverse(members.len()));

    let bps = header.flavor.bytes_per_sample();
    let format = match header.flavor {
        Flavor::Edf => ValueFormat::Int16,
        Flavor::Bdf => ValueFormat::Int24,
    };
    let records = header.records;
    groups
        .iter()
        .enumerate()
        .map(|(g, (spr, members))| {
            let spr = *spr;
            // Sizes were checked against the file length, so these cannot overflow.
            let samples = records * spr;
            let mut values = vec![0f32; members.len() * samples];
            for r in 0..records {
                let record = &data[r * header.record_bytes..(r + 1) * header.record_bytes];
                for (c, &i) in members.iter().enumerate() {
                    let sig = &header.signals[i];
                    let src = &record[sig.offset_in_record..sig.offset_in_record + spr * bps];
                    let dst = &mut values[c * samples + r * spr..c * samples + (r + 1) * spr];
                    decode(header.flavor, src, dst, sig.gain, sig.bias);
                }
            }

            let step = header.record_duration / spr as f64;
            let timestamps: Vec<f64> = match record_onsets {
                Some(onsets) if header.discontinuous => (0..records)
                    .flat_map(|r| {
                        let start = onsets[r].unwrap_or(r as f64 * header.record_duration);
                        (0..spr).map(move |k| start + k as f64 * step)
                    })
                    .collect(),
                // (i * duration) / spr rather than i * step: exact for integer-second records.
                _ => (0..samples)
                    .map(|i| (i as f64 * header.record_duration) / spr as f64)
                    .collect(),
            };

            let rate = spr as f64 / header.record_duration;
            let info = StreamInfo {
                name: stem.to_string(),
                stream_type: "EEG".into(),
                source_id: if g == 0 {
                    stem.to_string()
                } else {
                    format!("{stem}@{rate}Hz")
                },
                channels: members
                    .iter()
                    .map(|&i| {
                        let sig = &header.signals[i];
                        ChannelInfo {
                            label: sig.label.clone(),
                            unit: sig.unit.clone(),
                            kind: sig.kind.clone(),
                        }
                    })
                    .collect(),
                nominal_rate: rate,
                format,
            };
            RecordedStream {
                info,
                timestamps,
                data: StreamData::Signal { samples, values },
            }
        })
        .collect()
}

fn decode(flavor: Flavor, src: &[u8], dst: &mut [f32], gain: f64, bias: f64) {
    match flavor {
        Flavor::Edf => {
            for (d, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = (i16::from_le_bytes([b[0], b[1]]) as f64 * gain + bias) as f32;
            }
        }
        Flavor::Bdf => {
            for (d, b) in dst.iter_mut().zip(src.chunks_exact(3)) {
                // Put the 24 bits in the top of an i32, then shift back to sign-extend.
                let v = i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8;
                *d = (v as f64 * gain + bias) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One signal of a synthetic file: `samples[r]` is record r's digital values, or for an
    /// annotation signal (`label` "EDF/BDF Annotations") its raw TAL bytes, NUL-padded.
    struct Synth {
        label: &'static str,
        unit: &'static str,
        phys: (f64, f64),
        dig: (i32, i32),
        spr: usize,
        samples: Vec<Vec<i32>>,
        tals: Vec<Vec<u8>>,
    }

    fn signal(
        label: &'static str,
        phys: (f64, f64),
        dig: (i32, i32),
        spr: usize,
        samples: Vec<Vec<i32>>,
    ) -> Synth {
        Synth {
            label,
            unit: "uV",
            phys,
            dig,
            spr,
            samples,
            tals: Vec::new(),
        }
    }

    fn annotations(label: &'static str, spr: usize, tals: Vec<Vec<u8>>) -> Synth {
        Synth {
            label,
            unit: "",
            phys: (-1.0, 1.0),
            dig: (-32768, 32767),
            spr,
            samples: Vec::new(),
            tals,
        }
    }

    /// Writes one signal-header field for a signal.
    type FieldText = dyn Fn(&Synth) -> String;

    fn pad(text: &str, len: usize) -> Vec<u8> {
        let mut v = text.as_bytes().to_vec();
        assert!(v.len() <= len, "{text:?} longer than {len}");
        v.resize(len, b' ');
        v
    }

    /// Build an EDF (or BDF when `bdf`) file in memory, writing header fields as the spec
    /// lays them out and samples record by record.
    fn build(
        bdf: bool,
        reserved: &str,
        records: usize,
        duration: &str,
        signals: &[Synth],
    ) -> Vec<u8> {
        let ns = signals.len();
        let bps = if bdf { 3 } else { 2 };
        let mut out = Vec::new();
        if bdf {
            out.extend_from_slice(BDF_MAGIC);
        } else {
            out.extend(pad("0", 8));
        }
        out.extend(pad("X X X X", 80));
        out.extend(pad("Startdate X X X X", 80));
        out.extend(pad("01.01.01", 8));
        out.extend(pad("00.00.00", 8));
        out.extend(pad(&((ns + 1) * 256).to_string(), 8));
        out.extend(pad(reserved, 44));
        out.extend(pad(&records.to_string(), 8));
        out.extend(pad(duration, 8));
        out.extend(pad(&ns.to_string(), 4));
        let fields: [(usize, &FieldText); 10] = [
            (16, &|s| s.label.to_string()),
            (80, &|_| String::new()),
            (8, &|s| s.unit.to_string()),
            (8, &|s| s.phys.0.to_string()),
            (8, &|s| s.phys.1.to_string()),
            (8, &|s| s.dig.0.to_string()),
            (8, &|s| s.dig.1.to_string()),
            (80, &|_| String::new()),
            (8, &|s| s.spr.to_string()),
            (32, &|_| String::new()),
        ];
        for (len, f) in fields {
            for s in signals {
                out.extend(pad(&f(s), len));
            }
        }
        for r in 0..records {
            for s in signals {
                if s.samples.is_empty() {
                    let mut tal = s.tals[r].clone();
                    assert!(tal.len() <= s.spr * bps, "TAL longer than its signal");
                    tal.resize(s.spr * bps, 0);
                    out.extend(tal);
                } else {
                    for &v in &s.samples[r] {
                        out.extend_from_slice(&v.to_le_bytes()[..bps]);
                    }
                }
            }
        }
        out
    }

    fn two_rate_edf() -> Vec<u8> {
        // 2 records of 0.5 s: "fast" at 8 Hz (4/record), "slow" at 4 Hz (2/record).
        let fast = signal(
            "Fc5.",
            (-100.0, 100.0),
            (-1000, 1000),
            4,
            vec![vec![-1000, 0, 500, 1000], vec![1, 2, 3, 4]],
        );
        let slow = signal(
            "EOG left",
            (0.0, 10.0),
            (0, 100),
            2,
            vec![vec![0, 50], vec![100, 10]],
        );
        let ann = annotations(
            "EDF Annotations",
            30,
            vec![
                b"+0\x14\x14\x00+0.25\x150.5\x14T1\x14\x00".to_vec(),
                b"+0.5\x14\x14\x00+0.75\x14T2\x14second\x14\x00".to_vec(),
            ],
        );
        build(false, "EDF+C", 2, "0.5", &[fast, ann, slow])
    }

    fn path() -> &'static Path {
        Path::new("/tmp/synthetic.edf")
    }

    fn err_text(bytes: &[u8]) -> String {
        parse(bytes, path())
            .expect_err("should not parse")
            .to_string()
    }

    #[test]
    fn scales_and_groups_by_rate() {
        let rec = parse(&two_rate_edf(), path()).unwrap();
        assert_eq!(rec.streams.len(), 3);
        let fast = &rec.streams[0];
        assert_eq!(fast.info.nominal_rate, 8.0);
        assert_eq!(fast.info.channels[0].label, "Fc5");
        assert_eq!(fast.info.channels[0].unit, "uV");
        assert_eq!(fast.info.channels[0].kind, "EEG");
        assert_eq!(fast.info.format, ValueFormat::Int16);
        assert_eq!(fast.info.name, "synthetic");
        assert_eq!(
            fast.channel(0).unwrap(),
            &[-100.0, 0.0, 50.0, 100.0, 0.1, 0.2, 0.3, 0.4]
        );
        assert_eq!(
            fast.timestamps,
            [0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875]
        );

        let slow = &rec.streams[1];
        assert_eq!(slow.info.nominal_rate, 4.0);
        assert_eq!(slow.info.channels[0].kind, "EOG");
        assert_eq!(slow.info.source_id, "synthetic@4Hz");
        assert_eq!(slow.channel(0).unwrap(), &[0.0, 5.0, 10.0, 1.0]);
        assert_eq!(slow.timestamps, [0.0, 0.25, 0.5, 0.75]);
    }

    #[test]
    fn annotations_skip_time_keeping_tals() {
        let rec = parse(&two_rate_edf(), path()).unwrap();
        let markers = &rec.streams[2];
        assert_eq!(markers.info.stream_type, "Markers");
        assert_eq!(markers.info.nominal_rate, IRREGULAR_RATE);
        assert_eq!(markers.info.format, ValueFormat::String);
        let StreamData::Markers(events) = &markers.data else {
            panic!("not markers")
        };
        assert_eq!(
            events,
            &[
                Event::new("T1", 0.25, 0.5),
                Event::new("T2", 0.75, 0.0),
                Event::new("second", 0.75, 0.0)
            ]
        );
        assert_eq!(markers.timestamps, [0.25, 0.75, 0.75]);
    }

    #[test]
    fn discontinuous_follows_record_onsets_and_start_offset() {
        // Starts 0.2 s after the header's start time, with a 9.5 s gap before record 1.
        let sig = signal("Cz", (-1.0, 1.0), (-1, 1), 2, vec![vec![0, 1], vec![-1, 0]]);
        let ann = annotations(
            "EDF Annotations",
            20,
            vec![
                b"+0.2\x14\x14\x00".to_vec(),
                b"+10.7\x14\x14Gap\x14\x00".to_vec(),
            ],
        );
        let rec = parse(&build(false, "EDF+D", 2, "1", &[sig, ann]), path()).unwrap();
        assert_eq!(rec.streams[0].timestamps, [0.0, 0.5, 10.5, 11.0]);
        assert_eq!(rec.events(), [Event::new("Gap", 10.5, 0.0)]);
    }

    #[test]
    fn bdf_reads_24_bit_samples() {
        let sig = signal(
            "A1",
            (-262144.0, 262143.0),
            (-8388608, 8388607),
            3,
            vec![vec![-8388608, -1, 8388607]],
        );
        let status = signal(
            "Status",
            (-8388608.0, 8388607.0),
            (-8388608, 8388607),
            3,
            vec![vec![5, -5, 0]],
        );
        let ann = annotations(
            "BDF Annotations",
            10,
            vec![b"+0\x14\x14\x00+0.5\x14Go\x14\x00".to_vec()],
        );
        let bytes = build(true, "BDF+C", 1, "1", &[sig, status, ann]);
        let rec = parse(&bytes, Path::new("x.bdf")).unwrap();
        let s = &rec.streams[0];
        assert_eq!(s.info.format, ValueFormat::Int24);
        assert_eq!(s.info.channel_count(), 2);
        let a1 = s.channel(0).unwrap();
        assert!(
            (a1[0] + 262144.0).abs() < 1e-3 && (a1[2] - 262143.0).abs() < 1e-3,
            "{a1:?}"
        );
        assert_eq!(s.channel(1).unwrap(), &[5.0, -5.0, 0.0]);
        assert_eq!(rec.events(), [Event::new("Go", 0.5, 0.0)]);
    }

    #[test]
    fn unknown_record_count_is_derived_from_size() {
        let mut bytes = two_rate_edf();
        bytes[236..244].copy_from_slice(b"-1      ");
        let rec = parse(&bytes, path()).unwrap();
        assert_eq!(rec.streams[0].sample_count(), 8);
        // A torn last record is dropped (with a warning), as with a declared count.
        bytes.pop();
        assert_eq!(parse(&bytes, path()).unwrap().streams[0].sample_count(), 4);
    }

    #[test]
    fn bad_headers_are_errors_naming_the_field() {
        let good = two_rate_edf();
        assert!(err_text(&good[..100]).contains("shorter than the 256-byte fixed header"));
        assert!(err_text(&good[..600]).contains("shorter than the 1024-byte header"));

        let mut bad = good.clone();
        bad[252..256].copy_from_slice(b"ab  ");
        assert!(
            err_text(&bad).contains("number of signals"),
            "{}",
            err_text(&bad)
        );

        let mut bad = good.clone();
        bad[244..252].copy_from_slice(b"-1      ");
        assert!(
            err_text(&bad).contains("duration of a data record"),
            "{}",
            err_text(&bad)
        );

        // Digital max of signal 0 (fields: 256 + 128 * ns + 8 * s) set equal to its min.
        let mut bad = good.clone();
        bad[256 + 128 * 3..256 + 128 * 3 + 8].copy_from_slice(b"-1000   ");
        let msg = err_text(&bad);
        assert!(
            msg.contains("signal 0 (\"Fc5.\") digital minimum") && msg.contains("both -1000"),
            "{msg}"
        );

        // Samples per record of signal 2 = "x".
        let mut bad = good.clone();
        bad[256 + 216 * 3 + 16..256 + 216 * 3 + 24].copy_from_slice(b"x       ");
        let msg = err_text(&bad);
        assert!(
            msg.contains("signal 2 (\"EOG left\") samples per record is \"x       \""),
            "{msg}"
        );

        let mut bad = good.clone();
        bad.push(0);
        assert!(err_text(&bad).contains("extra bytes"));
    }

    #[test]
    fn partial_last_record_keeps_the_whole_ones_with_a_warning() {
        let good = two_rate_edf();
        let full = parse(&good, path()).unwrap();
        let mut warnings = Vec::new();
        let cut = parse_reporting(&good[..good.len() - 3], path(), &mut warnings).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("truncated") && warnings[0].contains("1 whole records"),
            "{warnings:?}"
        );
        for (c, f) in cut
            .streams
            .iter()
            .zip(&full.streams)
            .filter(|(c, _)| c.is_signal())
        {
            assert_eq!(c.sample_count() * 2, f.sample_count(), "{}", f.info.name);
            if let (Some(c0), Some(f0)) = (c.channel(0), f.channel(0)) {
                assert_eq!(c0, &f0[..c.sample_count()]);
            }
        }
        let mut unknown = good.clone();
        unknown[236..244].copy_from_slice(b"-1      ");
        let mut warnings = Vec::new();
        parse_reporting(&unknown[..unknown.len() - 1], path(), &mut warnings).unwrap();
        assert!(warnings[0].contains("torn tail"), "{warnings:?}");
    }

    #[test]
    fn absurd_rates_are_refused_naming_the_field() {
        for duration in [b"1e-9    ", b"1e-300  ", b"1e300   "] {
            let mut bad = two_rate_edf();
            bad[244..252].copy_from_slice(duration);
            let msg = err_text(&bad);
            assert!(
                msg.contains("duration of a data record") && msg.contains("allowed range"),
                "{msg}"
            );
        }
    }

    #[test]
    fn absurd_sizes_fail_before_allocating() {
        let mut bad = two_rate_edf();
        let spr_at = 256 + 216 * 3;
        bad[spr_at..spr_at + 8].copy_from_slice(b"99999999");
        bad[236..244].copy_from_slice(b"99999999");
        // A duration that keeps 99999999 samples per record under the rate bound.
        bad[244..252].copy_from_slice(b"1000    ");
        assert!(
            err_text(&bad).contains("file size is"),
            "{}",
            err_text(&bad)
        );
    }

    #[test]
    fn malformed_tal_names_the_record() {
        let sig = signal("Cz", (-1.0, 1.0), (-1, 1), 1, vec![vec![0], vec![0]]);
        let ann = annotations(
            "EDF Annotations",
            10,
            vec![b"+0\x14\x14\x00".to_vec(), b"1\x14\x14\x00".to_vec()],
        );
        let msg = err_text(&build(false, "EDF+C", 2, "1", &[sig, ann]));
        assert!(
            msg.contains("data record 1") && msg.contains("'+' or '-'"),
            "{msg}"
        );
    }

    #[test]
    fn garbage_is_an_error() {
        let garbage: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        assert!(parse(&garbage, path()).is_err());
        let mut edfish = garbage.clone();
        edfish[..8].copy_from_slice(b"0       ");
        assert!(parse(&edfish, path()).is_err());
    }
}
