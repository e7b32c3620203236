//! XDF writer: the same chunk framing and tags the reader in [`super`] reads, laid out the way
//! LabRecorder writes a file, so pyxdf, MNE and EEGLAB load what neurostream records.
//!
//! ```text
//! XDF:  FileHeader  StreamHeader×N  (Samples | ClockOffset | Boundary)*  StreamFooter×N
//! ```
//!
//! - Every chunk is `varlen(2 + content) · u16 tag · content`, with the smallest length
//!   width that fits (1, 4 or 8 bytes), as the specification allows.
//! - Samples carry an explicit `f64` time stamp each (time-stamp byte 8). LabRecorder does
//!   the same; deduced stamps would save 8 bytes a sample but make a replay's timing depend
//!   on the reader's floating-point accumulation, and faithful replay needs the exact stamps.
//! - Signal samples are written as `float32` whatever the source declared: the pipeline
//!   works on `f32`, so that is what was actually processed.
//! - String samples (markers, decoded commands) are a varlen byte count and UTF-8 bytes.
//! - Clock offsets are written by the caller (our sources are local, so the offset is 0,
//!   but readers expect periodic measurements); boundary chunks carry the fixed UUID of the
//!   specification so a reader can resynchronise in a damaged file.
//!
//! [`XdfWriter`] only encodes into an in-memory buffer; the caller decides when the bytes go
//! to disk ([`XdfWriter::write_to`]). Writing whole chunks per `write` call is what lets a
//! process killed mid-recording leave a file that ends on a chunk boundary.

use std::fmt::Write as _;
use std::io::Write;

use crate::stream::{Chunk, StreamInfo};

use super::{
    TAG_BOUNDARY, TAG_CLOCK_OFFSET, TAG_FILE_HEADER, TAG_SAMPLES, TAG_STREAM_FOOTER,
    TAG_STREAM_HEADER,
};

/// The boundary chunk's content, fixed by the XDF specification.
pub const BOUNDARY_UUID: [u8; 16] = [
    0x43, 0xA5, 0x46, 0xDC, 0xCB, 0xF5, 0x41, 0x0F, 0xB3, 0x0E, 0xD5, 0x46, 0x73, 0x83, 0xCB, 0xE4,
];

/// Index of a stream added with [`XdfWriter::add_stream`] (its XDF stream id is index + 1,
/// as LabRecorder numbers them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamId(usize);

/// What the footer of one stream reports.
#[derive(Debug, Clone, Default)]
struct StreamStats {
    channels: usize,
    numeric: bool,
    nominal_rate: f64,
    first: Option<f64>,
    last: f64,
    count: u64,
    offsets: Vec<(f64, f64)>,
}

/// Encodes one XDF file into a buffer; see the module doc.
#[derive(Debug)]
pub struct XdfWriter {
    buf: Vec<u8>,
    streams: Vec<StreamStats>,
}

impl XdfWriter {
    /// Start a file: the magic and the FileHeader. `header_xml` is inserted into the header's
    /// `<info>` after `<version>` (e.g. `<datetime>` and application metadata); it must be
    /// well-formed XML, escaped with [`escape`].
    pub fn new(header_xml: &str) -> Self {
        let mut writer = XdfWriter {
            buf: b"XDF:".to_vec(),
            streams: Vec::new(),
        };
        let xml = format!("<?xml version=\"1.0\"?><info><version>1.0</version>{header_xml}</info>");
        writer.chunk(TAG_FILE_HEADER, |out| out.extend_from_slice(xml.as_bytes()));
        writer
    }

    /// Declare a stream: its StreamHeader (LabRecorder's `<info>` document: name, type,
    /// channel_count, channel_format, source_id, nominal_srate, created_at, desc/channels).
    /// `desc_xml` is appended inside `<desc>` after the channels.
    pub fn add_stream(&mut self, info: &StreamInfo, created_at: f64, desc_xml: &str) -> StreamId {
        let numeric = info.format.is_numeric();
        let id = self.streams.len() as u32 + 1;
        let format = if numeric { "float32" } else { "string" };
        let mut xml = String::from("<?xml version=\"1.0\"?><info>");
        let _ = write!(
            xml,
            "<name>{}</name><type>{}</type><channel_count>{}</channel_count>\
             <channel_format>{format}</channel_format><source_id>{}</source_id>\
             <nominal_srate>{}</nominal_srate><version>1.1000000000000001</version>\
             <created_at>{created_at}</created_at><uid>{}</uid><session_id>default</session_id>\
             <desc><channels>",
            escape(&info.name),
            escape(&info.stream_type),
            info.channel_count(),
            escape(&info.source_id),
            info.nominal_rate,
            escape(&format!("{}-{id}", info.source_id)),
        );
        for channel in &info.channels {
            let _ = write!(
                xml,
                "<channel><label>{}</label><unit>{}</unit><type>{}</type></channel>",
                escape(&channel.label),
                escape(&channel.unit),
                escape(&channel.kind)
            );
        }
        let _ = write!(xml, "</channels>{desc_xml}</desc></info>");
        self.chunk(TAG_STREAM_HEADER, |out| {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(xml.as_bytes());
        });
        self.streams.push(StreamStats {
            channels: info.channel_count(),
            numeric,
            nominal_rate: info.nominal_rate,
            ..StreamStats::default()
        });
        StreamId(self.streams.len() - 1)
    }

    /// One Samples chunk with every sample of `chunk` (channel-major in, sample-major out).
    /// Panics if `stream` is not a numeric stream of `chunk.channels()` channels: a
    /// programming error, since the caller declared the stream.
    pub fn signal(&mut self, stream: StreamId, chunk: &Chunk) {
        let stats = &self.streams[stream.0];
        assert!(
            stats.numeric && stats.channels == chunk.channels(),
            "signal chunk does not match stream {stream:?}"
        );
        if chunk.is_empty() {
            return;
        }
        let id = stream.0 as u32 + 1;
        let channels = chunk.channels();
        self.chunk(TAG_SAMPLES, |out| {
            out.extend_from_slice(&id.to_le_bytes());
            varlen(out, chunk.samples() as u64);
            for (s, t) in chunk.timestamps().iter().enumerate() {
                out.push(8);
                out.extend_from_slice(&t.to_le_bytes());
                for c in 0..channels {
                    out.extend_from_slice(&chunk.channel(c)[s].to_le_bytes());
                }
            }
        });
        let stats = &mut self.streams[stream.0];
        let timestamps = chunk.timestamps();
        stats.first.get_or_insert(timestamps[0]);
        stats.last = timestamps[timestamps.len() - 1];
        stats.count += timestamps.len() as u64;
    }

    /// One Samples chunk of string samples `(time stamp, text)` on a one-channel string stream.
    pub fn strings<'a>(
        &mut self,
        stream: StreamId,
        samples: impl ExactSizeIterator<Item = (f64, &'a str)> + Clone,
    ) {
        let stats = &self.streams[stream.0];
        assert!(
            !stats.numeric && stats.channels == 1,
            "string samples for stream {stream:?}, which is not a one-channel string stream"
        );
        if samples.len() == 0 {
            return;
        }
        let id = stream.0 as u32 + 1;
        let count = samples.len() as u64;
        let all = samples.clone();
        self.chunk(TAG_SAMPLES, |out| {
            out.extend_from_slice(&id.to_le_bytes());
            varlen(out, count);
            for (t, text) in all {
                out.push(8);
                out.extend_from_slice(&t.to_le_bytes());
                varlen(out, text.len() as u64);
                out.extend_from_slice(text.as_bytes());
            }
        });
        let stats = &mut self.streams[stream.0];
        for (t, _) in samples {
            stats.first.get_or_insert(t);
            stats.last = t;
            stats.count += 1;
        }
    }

    /// A ClockOffset chunk for every stream: measured at `time`, offset `offset` seconds.
    pub fn clock_offsets(&mut self, time: f64, offset: f64) {
        for i in 0..self.streams.len() {
            let id = i as u32 + 1;
            self.chunk(TAG_CLOCK_OFFSET, |out| {
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&time.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
            });
            self.streams[i].offsets.push((time, offset));
        }
    }

    /// A Boundary chunk (resynchronisation point for readers of damaged files).
    pub fn boundary(&mut self) {
        self.chunk(TAG_BOUNDARY, |out| out.extend_from_slice(&BOUNDARY_UUID));
    }

    /// The StreamFooter of every stream (first and last time stamp, sample count, measured
    /// rate, the clock offsets); written once, at the end of the recording.
    pub fn footers(&mut self) {
        for i in 0..self.streams.len() {
            let stats = self.streams[i].clone();
            let first = stats.first.unwrap_or(0.0);
            let last = if stats.count > 0 { stats.last } else { 0.0 };
            // Like LabRecorder: samples per second of stream time; 0 when it cannot be told.
            let measured = if stats.count > 1 && last > first && stats.nominal_rate > 0.0 {
                (stats.count - 1) as f64 / (last - first)
            } else {
                0.0
            };
            let mut xml = format!(
                "<?xml version=\"1.0\"?><info><first_timestamp>{first}</first_timestamp>\
                 <last_timestamp>{last}</last_timestamp><sample_count>{}</sample_count>\
                 <measured_srate>{measured}</measured_srate><clock_offsets>",
                stats.count
            );
            for (time, value) in &stats.offsets {
                let _ = write!(
                    xml,
                    "<offset><time>{time}</time><value>{value}</value></offset>"
                );
            }
            xml.push_str("</clock_offsets></info>");
            let id = i as u32 + 1;
            self.chunk(TAG_STREAM_FOOTER, |out| {
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(xml.as_bytes());
            });
        }
    }

    /// Bytes encoded and not yet written.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Write everything encoded so far with one `write_all` and forget it. Whole chunks
    /// only, so a reader (or a crash) never sees half a chunk from us.
    pub fn write_to(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Take the encoded bytes (for writers that keep the whole file in memory).
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Append one chunk: length, tag and the content `fill` writes. The length is not known
    /// until the content is written, so room for the widest length is reserved and the
    /// content moved back when a narrower one fits (cheap: chunks are small and it saves
    /// 3–8 bytes on each).
    fn chunk(&mut self, tag: u16, fill: impl FnOnce(&mut Vec<u8>)) {
        const WIDEST: usize = 9;
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; WIDEST]);
        self.buf.extend_from_slice(&tag.to_le_bytes());
        fill(&mut self.buf);
        let length = (self.buf.len() - start - WIDEST) as u64;
        let mut header = Vec::with_capacity(WIDEST);
        varlen(&mut header, length);
        let shift = WIDEST - header.len();
        self.buf[start + shift..start + WIDEST].copy_from_slice(&header);
        if shift > 0 {
            self.buf.copy_within(start + shift.., start);
            self.buf.truncate(self.buf.len() - shift);
        }
    }
}

/// XDF's variable-length integer, in the smallest of its three widths.
fn varlen(out: &mut Vec<u8>, n: u64) {
    if n <= u64::from(u8::MAX) {
        out.extend_from_slice(&[1, n as u8]);
    } else if n <= u64::from(u32::MAX) {
        out.push(4);
        out.extend_from_slice(&(n as u32).to_le_bytes());
    } else {
        out.push(8);
        out.extend_from_slice(&n.to_le_bytes());
    }
}

/// Escape text for an XML element's content.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::StreamData;
    use crate::stream::{ChannelInfo, ValueFormat, IRREGULAR_RATE};
    use std::path::Path;

    fn eeg() -> StreamInfo {
        StreamInfo {
            name: "amp <1>".into(),
            stream_type: "EEG".into(),
            source_id: "a&b".into(),
            channels: vec![ChannelInfo::new("C3", "uV"), ChannelInfo::new("C4", "uV")],
            nominal_rate: 250.0,
            format: ValueFormat::Int16,
        }
    }

    fn markers() -> StreamInfo {
        StreamInfo {
            name: "m".into(),
            stream_type: "Markers".into(),
            source_id: "m".into(),
            channels: vec![ChannelInfo::new("Markers", "")],
            nominal_rate: IRREGULAR_RATE,
            format: ValueFormat::String,
        }
    }

    #[test]
    fn round_trips_through_the_reader() {
        let mut w = XdfWriter::new("<datetime>x</datetime>");
        let s = w.add_stream(&eeg(), 0.0, "");
        let m = w.add_stream(&markers(), 0.0, "<note>&amp;</note>");
        // 300 samples: the chunk length needs the 4-byte width, the count too.
        let n = 300;
        let data: Vec<f32> = (0..2 * n).map(|v| v as f32 * 0.5).collect();
        let stamps: Vec<f64> = (0..n).map(|i| 10.0 + i as f64 / 250.0).collect();
        w.signal(
            s,
            &Chunk::from_channel_major(2, data.clone(), stamps.clone()),
        );
        let long = "x".repeat(300);
        w.strings(m, [(10.5, "T1"), (11.0, long.as_str())].into_iter());
        w.clock_offsets(11.0, 0.0);
        w.boundary();
        w.footers();
        let rec = crate::io::xdf::parse(&w.into_bytes(), Path::new("w.xdf")).unwrap();
        let sig = &rec.streams[0];
        assert_eq!(sig.info.name, "amp <1>");
        assert_eq!(sig.info.source_id, "a&b");
        assert_eq!(sig.info.format, ValueFormat::Float32);
        assert_eq!(sig.info.nominal_rate, 250.0);
        assert_eq!(sig.info.labels().collect::<Vec<_>>(), ["C3", "C4"]);
        assert_eq!(sig.timestamps, stamps);
        assert_eq!(sig.channel(0).unwrap(), &data[..n]);
        assert_eq!(sig.channel(1).unwrap(), &data[n..]);
        let StreamData::Markers(events) = &rec.streams[1].data else {
            panic!("marker stream expected");
        };
        assert_eq!(events.len(), 2);
        assert_eq!((events[0].label.as_str(), events[0].onset), ("T1", 10.5));
        assert_eq!(events[1].label, long);
    }

    #[test]
    fn lengths_use_the_smallest_width() {
        let mut out = Vec::new();
        varlen(&mut out, 255);
        varlen(&mut out, 256);
        varlen(&mut out, 1 << 32);
        assert_eq!(out.len(), 2 + 5 + 9);
        assert_eq!(&out[..2], &[1, 255]);
        assert_eq!(&out[2..7], &[4, 0, 1, 0, 0]);
        assert_eq!(out[7], 8);
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
    }
}
