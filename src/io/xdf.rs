//! XDF reader: the Extensible Data Format that LabRecorder (and pylsltools, and the LSL
//! tooling in general) writes, version 1.0.
//!
//! # What it reads
//!
//! An XDF file is the magic `XDF:` followed by chunks. Each chunk is a variable-length length
//! (one byte saying whether 1, 4 or 8 little-endian bytes follow), then a `u16` tag, then the
//! content; the length counts the tag and the content. Tags:
//!
//! | tag | chunk | what we do |
//! |---|---|---|
//! | 1 | FileHeader (XML) | required as the first chunk (that is what makes garbage after `XDF:` an error rather than a file with no streams); content not used |
//! | 2 | StreamHeader: stream id `u32` + XML `<info>` | becomes the stream's [`StreamInfo`] |
//! | 3 | Samples: stream id, sample count, samples | decoded, see below |
//! | 4 | ClockOffset: stream id, collection time `f64`, offset `f64` | kept for clock synchronisation |
//! | 5 | Boundary (16-byte UUID for resynchronising damaged files) | skipped |
//! | 6 | StreamFooter (XML summary) | skipped: its counts and offsets are informational and can be wrong (see `minimal.xdf`) |
//! | other | | skipped, as the spec asks, so newer writers stay readable |
//!
//! A sample is a time-stamp byte (8: an `f64` time stamp follows; 0: the time stamp is the
//! previous one of that stream plus one nominal period), then one value per channel: numbers
//! little-endian in the stream's `channel_format`, strings as a variable-length byte count and
//! UTF-8 bytes (invalid UTF-8 is replaced, not rejected: marker text is for people).
//!
//! Numeric streams become [`StreamData::Signal`] (`f32`, channel-major; XDF has no scaling,
//! so values are what the sender sent). String streams become [`StreamData::Markers`], one
//! zero-duration [`Event`] per sample at its corrected time stamp, channels joined with a tab.
//! Streams come out in the order of their headers in the file, and a stream with a header but
//! no samples is an empty stream, not an error.
//!
//! Channel labels come from `desc/channels/channel/label` (normalised with
//! [`normalize_label`]), else `Ch1`…`ChN`; when the description lists fewer channels than
//! `channel_count`, the missing ones get the default labels and extra entries are ignored.
//!
//! # Time stamps
//!
//! [`parse`] synchronises clocks the way pyxdf does by default: per stream, the clock-offset
//! measurements are split into segments at clock resets and a robust line is fitted to each,
//! then added to the time stamps (details in the `clock` submodule). It does **not** dejitter:
//! pyxdf's `load_xdf` does by default (`dejitter_timestamps=True`), which replaces the time
//! stamps of regular streams with a straight line, but that hides real dropouts and rewrites
//! the data a BCI pipeline may want to check. [`parse_with`] and [`ParseOptions`] turn
//! dejittering on (or synchronisation off).
//!
//! # Damaged files
//!
//! A recording cut mid-chunk (a full disk, a killed writer, an interrupted copy) keeps every
//! whole chunk before the cut, as pyxdf does: the reader stops at the first chunk whose
//! declared length runs past the end of the file, logs a `tracing::warn` and reports
//! "torn tail: N bytes after the last whole chunk ignored" (see
//! [`crate::io::open_with_warnings`]). Only a cut inside the FileHeader is an error.
//!
//! Everything else stays strict: a chunk whose samples do not fill it exactly (wrong
//! `channel_count` or `channel_format` in the header), samples or clock offsets for a stream
//! whose header has not been seen, a second header for one stream id, or an invalid length
//! byte are errors naming the byte offset and chunk tag. Silently recovering would hand a
//! pipeline misaligned data. Every length read from the file is checked against the bytes
//! actually left before anything is allocated from it, so a corrupt length cannot trigger a
//! huge allocation or a panic; the channels declared by all stream headers together are
//! bounded by the file size too ([`channel_budget`]), since each one costs memory whether or
//! not the file holds data for it. `nominal_srate` must be 0 (irregular) or in
//! [[`MIN_RATE_HZ`](crate::io::MIN_RATE_HZ), [`MAX_RATE_HZ`](crate::io::MAX_RATE_HZ)].

//! # Why our own parser
//!
//! The `xdf` crate (0.1.2) was tried on the three reference files: it rejects
//! `clock_resets.xdf` outright ("invalid clock offset": it requires the offsets sorted and
//! interpolates between neighbouring measurements instead of fitting per clock segment), it
//! returns `Ok` for `minimal.xdf` cut in half, and it returns streams in hash-map order. The
//! format is small, so a reader we control is cheaper than wrapping and patching around that.
//! XML goes through `roxmltree` (small, no dependencies, read-only) since hand-parsing XML
//! with entities and CDATA is where bugs hide.

mod clock;
pub mod write;

use std::path::Path;

use crate::error::{Error, Result};
use crate::io::{check_rate, RecordedStream, Recording, StreamData};
use crate::stream::{normalize_label, ChannelInfo, Event, StreamInfo, ValueFormat};

/// Channel counts above this are treated as a corrupt header. Generous (an LSL video stream
/// sends one channel per pixel) but keeps a bad header from allocating gigabytes of
/// [`ChannelInfo`].
const MAX_CHANNELS: usize = 1 << 22;

/// Channels every stream header of a file may declare in total: 65 536, plus one per 4 bytes
/// of file. A channel's label and unit cost ~100 bytes of memory even when the file holds no
/// sample for it, so without this a 1 KB file of stream headers could claim gigabytes; a
/// stream whose channels carry data pays for them with at least one byte per channel and
/// sample, so real files stay far inside it.
fn channel_budget(file_len: usize) -> usize {
    (1 << 16) + file_len / 4
}

/// How [`parse_with`] treats time stamps. [`Default`] is what [`parse`] uses: pyxdf's clock
/// synchronisation defaults, no dejittering.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseOptions {
    /// Add the fitted clock offsets to the time stamps (pyxdf `synchronize_clocks`).
    pub synchronize_clocks: bool,
    /// Split the clock offsets into segments at clock resets (pyxdf `handle_clock_resets`).
    pub handle_clock_resets: bool,
    /// Replace the time stamps of regular streams by a fitted line within each run without a
    /// gap (pyxdf `dejitter_timestamps`, on by default there, off here).
    pub dejitter: bool,
    /// Knee of the Huber loss of the clock-offset fit, seconds.
    pub winsor_threshold: f64,
    /// Clock reset: measurement interval this many MADs above the median...
    pub reset_threshold_stds: f64,
    /// ...and this many seconds above it.
    pub reset_threshold_seconds: f64,
    /// Clock reset: offset change this many MADs above the median change...
    pub reset_threshold_offset_stds: f64,
    /// ...and this many seconds above it.
    pub reset_threshold_offset_seconds: f64,
    /// Dejitter: a gap is a step longer than this many seconds...
    pub jitter_break_threshold_seconds: f64,
    /// ...and longer than this many nominal sample periods.
    pub jitter_break_threshold_samples: f64,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            synchronize_clocks: true,
            handle_clock_resets: true,
            dejitter: false,
            winsor_threshold: 0.0001,
            reset_threshold_stds: 5.0,
            reset_threshold_seconds: 5.0,
            reset_threshold_offset_stds: 10.0,
            reset_threshold_offset_seconds: 1.0,
            jitter_break_threshold_seconds: 1.0,
            jitter_break_threshold_samples: 500.0,
        }
    }
}

/// Parse an XDF file already read into memory, with clock synchronisation and without
/// dejittering (see the module doc).
pub fn parse(bytes: &[u8], path: &Path) -> Result<Recording> {
    parse_with(bytes, path, &ParseOptions::default())
}

/// [`parse`] with explicit time-stamp handling.
pub fn parse_with(bytes: &[u8], path: &Path, options: &ParseOptions) -> Result<Recording> {
    parse_reporting(bytes, path, options, &mut Vec::new())
}

/// [`parse_with`], appending what was recovered from (a torn tail) to `warnings`; each is
/// also logged with `tracing::warn`.
pub fn parse_reporting(
    bytes: &[u8],
    path: &Path,
    options: &ParseOptions,
    warnings: &mut Vec<String>,
) -> Result<Recording> {
    let fail = |detail: String| Error::format("XDF", path, detail);
    if !bytes.starts_with(b"XDF:") {
        return Err(fail("missing the magic bytes `XDF:` at the start".into()));
    }
    let mut streams: Vec<StreamBuilder> = Vec::new();
    let mut pos = 4;
    let mut first_chunk = true;
    let mut channels_left = channel_budget(bytes.len());
    while pos < bytes.len() {
        let chunk = match next_chunk(bytes, pos) {
            Ok(chunk) => chunk,
            Err(ChunkError::Torn(detail)) if !first_chunk => {
                let message = format!(
                    "{}: torn tail: {} bytes after the last whole chunk ignored ({detail})",
                    path.display(),
                    bytes.len() - pos
                );
                tracing::warn!("{message}");
                warnings.push(message);
                break;
            }
            Err(ChunkError::Torn(detail) | ChunkError::Corrupt(detail)) => {
                return Err(fail(detail))
            }
        };
        let context = |detail: String| {
            fail(format!(
                "chunk at byte {} (tag {}, {}): {detail}",
                chunk.start,
                chunk.tag,
                tag_name(chunk.tag)
            ))
        };
        if first_chunk && chunk.tag != TAG_FILE_HEADER {
            return Err(context(
                "the first chunk must be the FileHeader (tag 1); this is not an XDF file or it is corrupt"
                    .into(),
            ));
        }
        first_chunk = false;
        let mut content = Cursor::new(chunk.content, chunk.content_start);
        match chunk.tag {
            TAG_STREAM_HEADER => {
                let id = content.u32("stream id").map_err(context)?;
                if streams.iter().any(|s| s.id == id) {
                    return Err(context(format!("second StreamHeader for stream id {id}")));
                }
                let xml = content.rest();
                let builder =
                    StreamBuilder::from_header(id, xml, channels_left).map_err(context)?;
                channels_left -= builder.channels;
                streams.push(builder);
            }
            TAG_SAMPLES => {
                let id = content.u32("stream id").map_err(context)?;
                let stream = find_stream(&mut streams, id).map_err(context)?;
                stream.read_samples(&mut content).map_err(context)?;
            }
            TAG_CLOCK_OFFSET => {
                let id = content.u32("stream id").map_err(context)?;
                let time = content.f64("collection time").map_err(context)?;
                let value = content.f64("offset value").map_err(context)?;
                content.expect_end().map_err(context)?;
                let stream = find_stream(&mut streams, id).map_err(context)?;
                // A NaN or infinite measurement would poison the whole fit; drop it alone.
                if time.is_finite() && value.is_finite() {
                    stream.clock_times.push(time);
                    stream.clock_values.push(value);
                }
            }
            TAG_STREAM_FOOTER => {
                let id = content.u32("stream id").map_err(context)?;
                find_stream(&mut streams, id).map_err(context)?;
            }
            _ => {}
        }
        pos = chunk.end;
    }
    if first_chunk {
        return Err(fail(
            "no chunks after `XDF:` (not even the FileHeader)".into(),
        ));
    }
    Ok(Recording {
        streams: streams.into_iter().map(|s| s.finish(options)).collect(),
    })
}

/// The FileHeader's XML (the first chunk), e.g. for application metadata a writer stored
/// there; the rest of the file is not read.
pub fn file_header(bytes: &[u8], path: &Path) -> Result<String> {
    let fail = |detail: String| Error::format("XDF", path, detail);
    if !bytes.starts_with(b"XDF:") {
        return Err(fail("missing the magic bytes `XDF:` at the start".into()));
    }
    let chunk = next_chunk(bytes, 4).map_err(|e| match e {
        ChunkError::Torn(detail) | ChunkError::Corrupt(detail) => fail(detail),
    })?;
    if chunk.tag != TAG_FILE_HEADER {
        return Err(fail(format!(
            "the first chunk (byte 4) has tag {}, not the FileHeader (tag 1)",
            chunk.tag
        )));
    }
    String::from_utf8(chunk.content.to_vec())
        .map_err(|e| fail(format!("the FileHeader XML is not valid UTF-8 ({e})")))
}

const TAG_FILE_HEADER: u16 = 1;
const TAG_STREAM_HEADER: u16 = 2;
const TAG_SAMPLES: u16 = 3;
const TAG_CLOCK_OFFSET: u16 = 4;
const TAG_BOUNDARY: u16 = 5;
const TAG_STREAM_FOOTER: u16 = 6;

fn tag_name(tag: u16) -> &'static str {
    match tag {
        TAG_FILE_HEADER => "FileHeader",
        TAG_STREAM_HEADER => "StreamHeader",
        TAG_SAMPLES => "Samples",
        TAG_CLOCK_OFFSET => "ClockOffset",
        TAG_BOUNDARY => "Boundary",
        TAG_STREAM_FOOTER => "StreamFooter",
        _ => "unknown",
    }
}

fn find_stream(streams: &mut [StreamBuilder], id: u32) -> Result<&mut StreamBuilder, String> {
    streams
        .iter_mut()
        .find(|s| s.id == id)
        .ok_or_else(|| format!("stream id {id} has no StreamHeader before this chunk"))
}

/// One chunk's framing: where it starts and ends, its tag and its content after the tag.
struct Chunk<'a> {
    start: usize,
    tag: u16,
    content_start: usize,
    content: &'a [u8],
    end: usize,
}

/// Why a chunk's framing cannot be read: the file ends inside it (what a torn write leaves,
/// recoverable by dropping the tail), or its framing is impossible (corruption).
enum ChunkError {
    Torn(String),
    Corrupt(String),
}

fn next_chunk(bytes: &[u8], start: usize) -> Result<Chunk<'_>, ChunkError> {
    let mut header = Cursor {
        scope: "file",
        ..Cursor::new(&bytes[start..], start)
    };
    let lol = bytes.get(start).copied();
    let length = header.varlen().map_err(|e| {
        let message = format!(
            "chunk at byte {start}: cannot read its length ({e}); the file is truncated or corrupt"
        );
        if matches!(lol, Some(1 | 4 | 8)) {
            ChunkError::Torn(message)
        } else {
            ChunkError::Corrupt(message)
        }
    })?;
    let tag_start = start + header.pos;
    let left = (bytes.len() - tag_start) as u64;
    if length < 2 {
        return Err(ChunkError::Corrupt(format!(
            "chunk at byte {start}: length {length} is too short to hold its 2-byte tag"
        )));
    }
    if left < 2 {
        return Err(ChunkError::Torn(format!(
            "truncated file: chunk at byte {start} ends inside its tag ({left} of 2 bytes present)"
        )));
    }
    let tag = u16::from_le_bytes([bytes[tag_start], bytes[tag_start + 1]]);
    if length > left {
        return Err(ChunkError::Torn(format!(
            "truncated file: chunk at byte {start} (tag {tag}, {}) declares {length} bytes but only {left} remain",
            tag_name(tag)
        )));
    }
    // `length <= left` fits in usize since `left` came from one.
    let end = tag_start + length as usize;
    Ok(Chunk {
        start,
        tag,
        content_start: tag_start + 2,
        content: &bytes[tag_start + 2..end],
        end,
    })
}

/// Bounds-checked little-endian reader over one chunk's bytes. Errors are messages naming the
/// absolute file offset; the caller adds which chunk.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    /// File offset of `data[0]`.
    base: usize,
    /// What `data` is, for messages: "chunk" or "file".
    scope: &'static str,
}

impl<'a> Cursor<'a> {
    fn new(data: &'a [u8], base: usize) -> Self {
        Cursor {
            data,
            pos: 0,
            base,
            scope: "chunk",
        }
    }

    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "{what} at byte {} needs {n} bytes but only {} remain in the {}",
                self.base + self.pos,
                self.remaining(),
                self.scope
            ));
        }
        let slice = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let slice = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn f64(&mut self, what: &str) -> Result<f64, String> {
        self.array(what).map(f64::from_le_bytes)
    }

    /// XDF's variable-length integer: a byte 1, 4 or 8, then that many little-endian bytes.
    fn varlen(&mut self) -> Result<u64, String> {
        let at = self.base + self.pos;
        match self.u8("length-of-length byte")? {
            1 => Ok(u64::from(self.u8("1-byte length")?)),
            4 => self
                .array("4-byte length")
                .map(|b| u64::from(u32::from_le_bytes(b))),
            8 => self.array("8-byte length").map(u64::from_le_bytes),
            other => Err(format!(
                "invalid length-of-length byte {other:#04x} at byte {at} (XDF allows 1, 4 or 8)"
            )),
        }
    }

    fn rest(&mut self) -> &'a [u8] {
        let slice = &self.data[self.pos..];
        self.pos = self.data.len();
        slice
    }

    fn expect_end(&self) -> Result<(), String> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(format!(
                "{n} unexpected bytes at the end of the chunk (from byte {})",
                self.base + self.pos
            )),
        }
    }
}

/// A stream while its chunks are being read.
struct StreamBuilder {
    id: u32,
    info: StreamInfo,
    channels: usize,
    /// Nominal sampling interval for deduced time stamps; 0 for irregular streams, so a
    /// deduced stamp repeats the previous one (as pyxdf does).
    period: f64,
    last_timestamp: f64,
    timestamps: Vec<f64>,
    /// Numeric values, sample-major as stored; transposed once in [`StreamBuilder::finish`].
    values: Vec<f32>,
    /// String samples, channels already joined.
    labels: Vec<String>,
    clock_times: Vec<f64>,
    clock_values: Vec<f64>,
}

impl StreamBuilder {
    /// `channels_left`: what remains of the file's [`channel_budget`].
    fn from_header(id: u32, xml: &[u8], channels_left: usize) -> Result<Self, String> {
        let info = parse_stream_header(xml, channels_left)?;
        let channels = info.channel_count();
        let period = if info.nominal_rate > 0.0 {
            1.0 / info.nominal_rate
        } else {
            0.0
        };
        Ok(StreamBuilder {
            id,
            info,
            channels,
            period,
            last_timestamp: 0.0,
            timestamps: Vec::new(),
            values: Vec::new(),
            labels: Vec::new(),
            clock_times: Vec::new(),
            clock_values: Vec::new(),
        })
    }

    fn read_samples(&mut self, content: &mut Cursor<'_>) -> Result<(), String> {
        let count = content.varlen()?;
        let format = self.info.format;
        // Smallest possible encoding of one sample: the time-stamp byte plus, per channel,
        // the value (strings: 1-byte length-of-length + 1-byte length). Checking the count
        // against it bounds every allocation below by the chunk's real size.
        let min_value = match format {
            ValueFormat::String => 2,
            _ => value_size(format),
        };
        let min_sample = 1 + self.channels as u64 * min_value as u64;
        if count.saturating_mul(min_sample) > content.remaining() as u64 {
            return Err(format!(
                "stream {} claims {count} samples, more than the {} bytes left can hold",
                self.id,
                content.remaining()
            ));
        }
        let count = count as usize;
        self.timestamps.reserve(count);
        if format == ValueFormat::String {
            self.labels.reserve(count);
        } else {
            self.values.reserve(count * self.channels);
        }
        for k in 0..count {
            let stamp = match content.u8("time-stamp byte")? {
                8 => content.f64("time stamp")?,
                0 => self.last_timestamp + self.period,
                other => {
                    return Err(format!(
                        "sample {k} of stream {}: time-stamp byte is {other}, expected 0 or 8",
                        self.id
                    ))
                }
            };
            self.last_timestamp = stamp;
            self.timestamps.push(stamp);
            if format == ValueFormat::String {
                let mut label = String::new();
                for c in 0..self.channels {
                    let len = content.varlen()?;
                    let len = usize::try_from(len)
                        .ok()
                        .filter(|&n| n <= content.remaining())
                        .ok_or_else(|| {
                            format!(
                                "sample {k} channel {c} of stream {}: string of {len} bytes but only {} remain in the chunk",
                                self.id,
                                content.remaining()
                            )
                        })?;
                    if c > 0 {
                        label.push('\t');
                    }
                    label.push_str(&String::from_utf8_lossy(content.take(len, "string")?));
                }
                self.labels.push(label);
            } else {
                let raw = content.take(self.channels * value_size(format), "sample values")?;
                self.values.extend(
                    raw.chunks_exact(value_size(format))
                        .map(|v| decode_value(format, v)),
                );
            }
        }
        content.expect_end()
    }

    fn finish(mut self, options: &ParseOptions) -> RecordedStream {
        if options.synchronize_clocks {
            clock::synchronize(
                &mut self.timestamps,
                &self.clock_times,
                &self.clock_values,
                options,
            );
        }
        if options.dejitter {
            clock::dejitter(&mut self.timestamps, self.info.nominal_rate, options);
        }
        let data = if self.info.format == ValueFormat::String {
            StreamData::Markers(
                self.labels
                    .into_iter()
                    .zip(&self.timestamps)
                    .map(|(label, &onset)| Event::new(label, onset, 0.0))
                    .collect(),
            )
        } else {
            let samples = self.timestamps.len();
            let mut values = vec![0.0; self.values.len()];
            for (s, frame) in self.values.chunks_exact(self.channels.max(1)).enumerate() {
                for (c, &v) in frame.iter().enumerate() {
                    values[c * samples + s] = v;
                }
            }
            StreamData::Signal { samples, values }
        };
        RecordedStream {
            info: self.info,
            timestamps: self.timestamps,
            data,
        }
    }
}

fn value_size(format: ValueFormat) -> usize {
    match format {
        ValueFormat::Int8 => 1,
        ValueFormat::Int16 => 2,
        ValueFormat::Int24 => 3,
        ValueFormat::Float32 | ValueFormat::Int32 => 4,
        ValueFormat::Float64 | ValueFormat::Int64 => 8,
        ValueFormat::String => 0,
    }
}

/// One little-endian value of `format` (`raw.len() == value_size(format)`) as `f32`. Wide
/// integers and doubles lose precision here by design: the pipeline runs on `f32`.
fn decode_value(format: ValueFormat, raw: &[u8]) -> f32 {
    let mut b = [0u8; 8];
    b[..raw.len()].copy_from_slice(raw);
    match format {
        ValueFormat::Int8 => f32::from(raw[0] as i8),
        ValueFormat::Int16 => f32::from(i16::from_le_bytes([b[0], b[1]])),
        ValueFormat::Int24 => (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32,
        ValueFormat::Int32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
        ValueFormat::Int64 => i64::from_le_bytes(b) as f32,
        ValueFormat::Float32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        ValueFormat::Float64 => f64::from_le_bytes(b) as f32,
        ValueFormat::String => f32::NAN,
    }
}

/// The `<info>` document of a StreamHeader chunk → [`StreamInfo`].
fn parse_stream_header(xml: &[u8], channels_left: usize) -> Result<StreamInfo, String> {
    let text = std::str::from_utf8(xml)
        .map_err(|e| format!("stream header XML is not valid UTF-8 ({e})"))?;
    let doc = roxmltree::Document::parse(text)
        .map_err(|e| format!("stream header XML does not parse: {e}"))?;
    let info = doc.root_element();
    if !info.has_tag_name("info") {
        return Err(format!(
            "stream header XML has root <{}>, expected <info>",
            info.tag_name().name()
        ));
    }
    let text_of = |name: &str| child(info, name).map(node_text).unwrap_or_default();
    let required = |name: &str| {
        child(info, name)
            .map(node_text)
            .ok_or_else(|| format!("stream header has no <{name}>"))
    };

    let count_text = required("channel_count")?;
    let channel_count: usize = count_text
        .parse()
        .ok()
        .filter(|&n| n <= MAX_CHANNELS)
        .ok_or_else(|| {
            format!(
                "stream header: channel_count `{count_text}` is not a count up to {MAX_CHANNELS}"
            )
        })?;
    if channel_count > channels_left {
        return Err(format!(
            "stream header: channel_count {channel_count} is more than this file can describe: \
             the stream headers of a file may declare at most 65536 channels plus one per 4 bytes \
             of file, and {channels_left} remain"
        ));
    }
    let rate_text = required("nominal_srate")?;
    let nominal_rate: f64 = rate_text
        .parse()
        .ok()
        .filter(|r: &f64| r.is_finite() && *r >= 0.0)
        .ok_or_else(|| format!("stream header: nominal_srate `{rate_text}` is not a rate in Hz"))?;
    if nominal_rate != 0.0 {
        check_rate(nominal_rate).map_err(|e| {
            format!(
                "stream header: nominal_srate `{rate_text}` is {e} (or 0 for an irregular stream)"
            )
        })?;
    }
    let format_text = required("channel_format")?;
    let format = ValueFormat::from_lsl_name(&format_text)
        // int24 is a BDF width, not an LSL/XDF channel format.
        .filter(|f| *f != ValueFormat::Int24)
        .ok_or_else(|| {
            format!("stream header: channel_format `{format_text}` is not an XDF format")
        })?;

    let described: Vec<roxmltree::Node> = child(info, "desc")
        .and_then(|d| child(d, "channels"))
        .map(|c| c.children().filter(|n| n.has_tag_name("channel")).collect())
        .unwrap_or_default();
    let channels = (0..channel_count)
        .map(|i| {
            let entry = described.get(i);
            let field = |name: &str| {
                entry
                    .and_then(|e| child(*e, name))
                    .map(node_text)
                    .unwrap_or_default()
            };
            let label = normalize_label(&field("label"));
            ChannelInfo {
                label: if label.is_empty() {
                    format!("Ch{}", i + 1)
                } else {
                    label
                },
                unit: field("unit"),
                kind: field("type"),
            }
        })
        .collect();

    Ok(StreamInfo {
        name: text_of("name"),
        stream_type: text_of("type"),
        source_id: text_of("source_id"),
        channels,
        nominal_rate,
        format,
    })
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children().find(|n| n.has_tag_name(name))
}

/// Text content of an element, trimmed (LabRecorder pretty-prints some headers).
fn node_text(node: roxmltree::Node) -> String {
    node.text().unwrap_or_default().trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(tag: u16, content: &[u8]) -> Vec<u8> {
        let mut out = vec![4];
        out.extend_from_slice(&(content.len() as u32 + 2).to_le_bytes());
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(content);
        out
    }

    fn header(id: u32, xml: &str) -> Vec<u8> {
        let mut content = id.to_le_bytes().to_vec();
        content.extend_from_slice(xml.as_bytes());
        chunk(TAG_STREAM_HEADER, &content)
    }

    fn file(chunks: &[Vec<u8>]) -> Vec<u8> {
        let mut out = b"XDF:".to_vec();
        out.extend(chunk(
            TAG_FILE_HEADER,
            b"<?xml version=\"1.0\"?><info><version>1.0</version></info>",
        ));
        for c in chunks {
            out.extend_from_slice(c);
        }
        out
    }

    const EEG: &str = "<info><name>amp</name><type>EEG</type><channel_count>2</channel_count>\
        <nominal_srate>100</nominal_srate><channel_format>float32</channel_format>\
        <desc><channels><channel><label>C3..</label><unit>uV</unit><type>EEG</type></channel>\
        </channels></desc></info>";

    #[test]
    fn header_labels_fall_back_per_channel() {
        let rec = parse(&file(&[header(7, EEG)]), Path::new("t.xdf")).unwrap();
        let info = &rec.streams[0].info;
        assert_eq!(info.labels().collect::<Vec<_>>(), ["C3", "Ch2"]);
        assert_eq!(info.channels[0].unit, "uV");
        assert_eq!(info.format, ValueFormat::Float32);
        assert_eq!(rec.streams[0].sample_count(), 0);
    }

    #[test]
    fn deduced_time_stamps_continue_across_chunks() {
        let mut samples = 7u32.to_le_bytes().to_vec();
        samples.extend([1, 2]);
        for (stamp, values) in [(Some(1.0f64), [1.0f32, 2.0]), (None, [3.0, 4.0])] {
            match stamp {
                Some(t) => {
                    samples.push(8);
                    samples.extend(t.to_le_bytes());
                }
                None => samples.push(0),
            }
            for v in values {
                samples.extend(v.to_le_bytes());
            }
        }
        let mut more = 7u32.to_le_bytes().to_vec();
        more.extend([1, 1, 0]);
        more.extend(5.0f32.to_le_bytes());
        more.extend(6.0f32.to_le_bytes());
        let bytes = file(&[
            header(7, EEG),
            chunk(TAG_SAMPLES, &samples),
            chunk(TAG_SAMPLES, &more),
        ]);
        let rec = parse(&bytes, Path::new("t.xdf")).unwrap();
        let s = &rec.streams[0];
        assert_eq!(s.timestamps, [1.0, 1.01, 1.02]);
        assert_eq!(s.channel(0).unwrap(), [1.0, 3.0, 5.0]);
        assert_eq!(s.channel(1).unwrap(), [2.0, 4.0, 6.0]);
    }

    #[test]
    fn absurd_sample_count_is_rejected_before_allocating() {
        let mut samples = 7u32.to_le_bytes().to_vec();
        samples.push(8);
        samples.extend(u64::MAX.to_le_bytes());
        let bytes = file(&[header(7, EEG), chunk(TAG_SAMPLES, &samples)]);
        let err = parse(&bytes, Path::new("t.xdf")).unwrap_err().to_string();
        assert!(err.contains("claims"), "{err}");
    }

    #[test]
    fn samples_without_header_and_duplicate_headers_are_errors() {
        let samples = chunk(TAG_SAMPLES, &[9, 0, 0, 0, 1, 0]);
        let err = parse(&file(&[samples]), Path::new("t.xdf"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("stream id 9 has no StreamHeader"), "{err}");
        let err = parse(&file(&[header(1, EEG), header(1, EEG)]), Path::new("t.xdf"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("second StreamHeader"), "{err}");
    }

    #[test]
    fn unknown_tags_are_skipped() {
        let bytes = file(&[chunk(99, b"future"), header(7, EEG)]);
        assert_eq!(parse(&bytes, Path::new("t.xdf")).unwrap().streams.len(), 1);
    }

    #[test]
    fn decodes_every_numeric_format() {
        assert_eq!(decode_value(ValueFormat::Int8, &[0xFF]), -1.0);
        assert_eq!(
            decode_value(ValueFormat::Int16, &(-300i16).to_le_bytes()),
            -300.0
        );
        assert_eq!(
            decode_value(ValueFormat::Int32, &(-70000i32).to_le_bytes()),
            -70000.0
        );
        assert_eq!(
            decode_value(ValueFormat::Int64, &(-5i64).to_le_bytes()),
            -5.0
        );
        assert_eq!(
            decode_value(ValueFormat::Float64, &2.5f64.to_le_bytes()),
            2.5
        );
    }
}
