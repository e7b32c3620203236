//! The EDF and XDF readers on hostile bytes: random bytes, and mutations (bit flips, byte
//! overwrites, truncation, insertion, deletion, absurd numbers written into header fields) of
//! small valid files generated here and of the real files' headers. Every input must give
//! `Ok` or an `Err` — never a panic, an abort or an unbounded allocation — and whatever is
//! `Ok` must be internally consistent (every channel of a signal stream has one value per
//! timestamp).
//!
//! Case counts are modest so the file runs in seconds in CI; `cargo fuzz` (fuzz/) explores
//! the same readers for as long as one lets it.

mod common;

use std::path::Path;

use neurostream::io::{edf, xdf, Recording, StreamData};
use proptest::prelude::*;
use proptest::sample::Index;

/// Cases per property: enough to hit every header field many times, few enough for CI.
const CASES: u32 = 512;

/// No regression files: a failure prints its minimal input, which goes into a named test.
/// `READERS_PROPTEST_CASES=N` replaces every property's case count, for a longer local hunt.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("READERS_PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Anything that came back `Ok` must hold together.
fn check_consistent(recording: &Recording) {
    for stream in &recording.streams {
        if let StreamData::Signal { samples, values } = &stream.data {
            assert_eq!(*samples, stream.sample_count(), "{}", stream.info.name);
            assert_eq!(
                values.len(),
                samples * stream.info.channel_count(),
                "{}",
                stream.info.name
            );
            for c in 0..stream.info.channel_count() {
                assert_eq!(stream.channel(c).map(<[f32]>::len), Some(*samples));
            }
        }
    }
}

fn parse_edf(bytes: &[u8]) {
    if let Ok(recording) = edf::parse(bytes, Path::new("fuzz.edf")) {
        check_consistent(&recording);
    }
}

fn parse_xdf(bytes: &[u8]) {
    if let Ok(recording) = xdf::parse(bytes, Path::new("fuzz.xdf")) {
        check_consistent(&recording);
    }
}

// ---------------------------------------------------------------------------------------
// Small valid files, written field by field from the format specifications.

/// An ASCII header field, space-padded to `len` bytes.
fn put(out: &mut Vec<u8>, text: &str, len: usize) {
    assert!(text.len() <= len, "{text:?} does not fit {len} bytes");
    out.extend_from_slice(text.as_bytes());
    out.extend(std::iter::repeat_n(b' ', len - text.len()));
}

/// An EDF (or EDF+ with an annotation signal carrying a `T1` cue) of `signals` 16-bit signals,
/// `records` one-second data records of `rate` samples each.
fn small_edf(signals: usize, records: usize, rate: usize, annotated: bool) -> Vec<u8> {
    let ns = signals + usize::from(annotated);
    let annotation_samples = 30; // 60 bytes per record: room for the TALs below
    let mut out = Vec::new();
    put(&mut out, "0", 8);
    put(&mut out, "X X X X", 80);
    put(&mut out, "Startdate 01-JAN-2026 X X X", 80);
    put(&mut out, "01.01.26", 8);
    put(&mut out, "00.00.00", 8);
    put(&mut out, &((ns + 1) * 256).to_string(), 8);
    put(&mut out, if annotated { "EDF+C" } else { "" }, 44);
    put(&mut out, &records.to_string(), 8);
    put(&mut out, "1", 8);
    put(&mut out, &ns.to_string(), 4);
    let is_annotation = |i: usize| annotated && i == signals;
    let each = |out: &mut Vec<u8>, len: usize, f: &dyn Fn(usize) -> String| {
        for i in 0..ns {
            put(out, &f(i), len);
        }
    };
    each(&mut out, 16, &|i| {
        if is_annotation(i) {
            "EDF Annotations".into()
        } else {
            format!("C{i}")
        }
    });
    each(&mut out, 80, &|_| String::new());
    each(&mut out, 8, &|i| {
        if is_annotation(i) { "" } else { "uV" }.into()
    });
    each(&mut out, 8, &|i| {
        if is_annotation(i) { "-1" } else { "-3276.8" }.into()
    });
    each(&mut out, 8, &|i| {
        if is_annotation(i) { "1" } else { "3276.7" }.into()
    });
    each(&mut out, 8, &|_| "-32768".into());
    each(&mut out, 8, &|_| "32767".into());
    each(&mut out, 80, &|_| String::new());
    each(&mut out, 8, &|i| {
        if is_annotation(i) {
            annotation_samples
        } else {
            rate
        }
        .to_string()
    });
    each(&mut out, 32, &|_| String::new());
    assert_eq!(out.len(), (ns + 1) * 256);
    for r in 0..records {
        for i in 0..ns {
            if is_annotation(i) {
                let mut tal = format!("+{r}\x14\x14\0").into_bytes();
                if r == 0 {
                    tal.extend_from_slice(b"+0.5\x150.25\x14T1\x14\0");
                }
                tal.resize(annotation_samples * 2, 0);
                out.extend_from_slice(&tal);
            } else {
                for s in 0..rate {
                    let v = ((r * rate + s) as i16)
                        .wrapping_mul(97)
                        .wrapping_add(i as i16);
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    out
}

/// One XDF chunk: variable-length length (1, 4 or 8 bytes, as writers choose), tag, content.
fn xdf_chunk(out: &mut Vec<u8>, tag: u16, content: &[u8]) {
    let length = content.len() + 2;
    if length < 256 {
        out.push(1);
        out.push(length as u8);
    } else {
        out.push(4);
        out.extend_from_slice(&(length as u32).to_le_bytes());
    }
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(content);
}

/// An XDF file with one float32 signal stream (`channels` × `samples`, in two Samples chunks,
/// the second with deduced time stamps), a string marker stream, a clock offset and footers.
fn small_xdf(channels: usize, samples: usize) -> Vec<u8> {
    let mut out = b"XDF:".to_vec();
    xdf_chunk(
        &mut out,
        1,
        br#"<?xml version="1.0"?><info><version>1.0</version></info>"#,
    );
    let header = |id: u32, xml: String| {
        let mut c = id.to_le_bytes().to_vec();
        c.extend_from_slice(xml.as_bytes());
        c
    };
    let labels: String = (0..channels)
        .map(|c| format!("<channel><label>C{c}</label><unit>microvolts</unit></channel>"))
        .collect();
    xdf_chunk(
        &mut out,
        2,
        &header(
            1,
            format!(
                "<?xml version=\"1.0\"?><info><name>EEG</name><type>EEG</type>\
                 <channel_count>{channels}</channel_count><nominal_srate>100</nominal_srate>\
                 <channel_format>float32</channel_format><source_id>gen</source_id>\
                 <desc><channels>{labels}</channels></desc></info>"
            ),
        ),
    );
    xdf_chunk(
        &mut out,
        2,
        &header(
            2,
            "<?xml version=\"1.0\"?><info><name>Cues</name><type>Markers</type>\
             <channel_count>1</channel_count><nominal_srate>0</nominal_srate>\
             <channel_format>string</channel_format></info>"
                .into(),
        ),
    );
    let half = samples / 2;
    for (first, count) in [(0, half), (half, samples - half)] {
        let mut c = 1u32.to_le_bytes().to_vec();
        c.push(1);
        c.push(count as u8);
        for s in first..first + count {
            if first == 0 {
                c.push(8);
                c.extend_from_slice(&(10.0 + s as f64 / 100.0).to_le_bytes());
            } else {
                c.push(0); // time stamp deduced from the previous one and the rate
            }
            for ch in 0..channels {
                c.extend_from_slice(&((s * 10 + ch) as f32).to_le_bytes());
            }
        }
        xdf_chunk(&mut out, 3, &c);
    }
    let mut c = 2u32.to_le_bytes().to_vec();
    c.extend_from_slice(&[1, 1, 8]);
    c.extend_from_slice(&10.2f64.to_le_bytes());
    c.extend_from_slice(&[1, 2]);
    c.extend_from_slice(b"T1");
    xdf_chunk(&mut out, 3, &c);
    let mut c = 1u32.to_le_bytes().to_vec();
    c.extend_from_slice(&11.0f64.to_le_bytes());
    c.extend_from_slice(&(-0.001f64).to_le_bytes());
    xdf_chunk(&mut out, 4, &c);
    for id in [1u32, 2] {
        xdf_chunk(
            &mut out,
            6,
            &header(id, "<?xml version=\"1.0\"?><info></info>".into()),
        );
    }
    out
}

// ---------------------------------------------------------------------------------------
// Mutations.

/// Text that breaks numeric ASCII header fields in every way a parser can trip on.
const ODD_NUMBERS: &[&str] = &[
    "-1",
    "0",
    "99999999",
    "-9999999",
    "1e308",
    "1e-300",
    "nan",
    "inf",
    "-inf",
    "+",
    "-",
    ".",
    "0x10",
    "        ",
    "18446744073709551615",
    "\u{0}",
    "é",
];

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    /// Overwrite bytes at a position inside the first `limit` bytes with odd numeric text.
    Field(Index, &'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<Index>(), 1usize..64).prop_map(|(i, n)| Mutation::Remove(i, n)),
        (any::<Index>(), prop::sample::select(ODD_NUMBERS))
            .prop_map(|(i, t)| Mutation::Field(i, t)),
    ]
}

/// Apply `mutations`; `field_limit` bounds where [`Mutation::Field`] writes (the header).
fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation], field_limit: usize) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        let len = bytes.len();
        match m {
            Mutation::FlipBit(i, bit) => bytes[i.index(len)] ^= 1 << bit,
            Mutation::SetByte(i, b) => bytes[i.index(len)] = *b,
            Mutation::Truncate(i) => bytes.truncate(i.index(len)),
            Mutation::Insert(i, v) => {
                let at = i.index(len + 1);
                bytes.splice(at..at, v.iter().copied());
            }
            Mutation::Remove(i, n) => {
                let at = i.index(len);
                bytes.drain(at..(at + n).min(len));
            }
            Mutation::Field(i, text) => {
                let at = i.index(field_limit.min(len));
                for (k, b) in text.bytes().enumerate() {
                    if let Some(slot) = bytes.get_mut(at + k) {
                        *slot = b;
                    }
                }
            }
        }
    }
    bytes
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..6)
}

/// The first records of a real EEGMMIDB file, with the record count rewritten to match: a
/// real header (64 signals + annotations) over a file small enough to parse thousands of times.
fn real_edf_prefix(records: usize) -> Option<Vec<u8>> {
    let bytes = std::fs::read(common::eegmmidb_file("S001", 4)?).expect("read S001R04.edf");
    let text = |a: usize, b: usize| {
        std::str::from_utf8(&bytes[a..b])
            .expect("ASCII header")
            .trim()
            .parse::<usize>()
            .expect("number")
    };
    let header = text(184, 192);
    let ns = text(252, 256);
    let per_record: usize = (0..ns)
        .map(|i| {
            // label, transducer, dimension, 4 ranges, prefiltering, then samples per record
            let at = 256 + ns * (16 + 80 + 8 * 5 + 80) + i * 8;
            text(at, at + 8)
        })
        .sum();
    let mut out = bytes[..header + records * per_record * 2].to_vec();
    let mut field = records.to_string().into_bytes();
    field.resize(8, b' ');
    out[236..244].copy_from_slice(&field);
    Some(out)
}

fn real_xdf(name: &str) -> Option<Vec<u8>> {
    Some(std::fs::read(common::xdf_file(name)?).expect("read XDF test vector"))
}

// ---------------------------------------------------------------------------------------
// The bases are valid: otherwise the mutations would only ever test the first check.

#[test]
fn generated_and_real_bases_parse() {
    for (signals, records, rate, annotated) in [(1, 1, 8, false), (3, 2, 16, true)] {
        let recording = edf::parse(
            &small_edf(signals, records, rate, annotated),
            Path::new("g.edf"),
        )
        .expect("generated EDF parses");
        check_consistent(&recording);
        let signal = recording.primary_signal().expect("signal stream");
        assert_eq!(signal.info.channel_count(), signals);
        assert_eq!(signal.sample_count(), records * rate);
        assert_eq!(
            recording
                .events()
                .iter()
                .map(|e| e.label.as_str())
                .collect::<Vec<_>>(),
            if annotated { vec!["T1"] } else { vec![] }
        );
    }
    let recording =
        xdf::parse(&small_xdf(3, 10), Path::new("g.xdf")).expect("generated XDF parses");
    check_consistent(&recording);
    let signal = recording.primary_signal().expect("signal stream");
    assert_eq!(
        (signal.info.channel_count(), signal.sample_count()),
        (3, 10)
    );
    assert_eq!(signal.channel(2).expect("channel 2")[9], 92.0);

    if let Some(prefix) = real_edf_prefix(2) {
        let recording = edf::parse(&prefix, Path::new("S001R04-prefix.edf")).expect("real prefix");
        let signal = recording.primary_signal().expect("signal stream");
        assert_eq!(
            (signal.info.channel_count(), signal.sample_count()),
            (64, 320)
        );
    }
    for name in ["minimal.xdf", "empty_streams.xdf"] {
        if let Some(bytes) = real_xdf(name) {
            xdf::parse(&bytes, Path::new(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn random_bytes(body in prop::collection::vec(any::<u8>(), 0..2048), magic in 0usize..4) {
        // Behind each reader's magic so the random part reaches past the first check.
        let prefix: &[u8] = [&b""[..], b"0       ", b"\xFFBIOSEMI", b"XDF:"][magic];
        let bytes: Vec<u8> = prefix.iter().chain(&body).copied().collect();
        parse_edf(&bytes);
        parse_xdf(&bytes);
    }

    #[test]
    fn mutated_generated_edf(
        signals in 1usize..4,
        records in 1usize..4,
        annotated in any::<bool>(),
        mutations in mutations(),
    ) {
        let base = small_edf(signals, records, 8, annotated);
        let header = (signals + usize::from(annotated) + 1) * 256;
        parse_edf(&mutate(base, &mutations, header));
    }

    #[test]
    fn mutated_generated_xdf(channels in 1usize..4, samples in 2usize..12, mutations in mutations()) {
        let base = small_xdf(channels, samples);
        let len = base.len();
        parse_xdf(&mutate(base, &mutations, len));
    }
}

proptest! {
    #![proptest_config(config(CASES / 4))]

    /// A torn tail (the file cut anywhere after its FileHeader) keeps a prefix of every
    /// stream: `Ok`, one "torn tail" warning unless the cut is at a chunk boundary, and never
    /// more samples than the whole file, each equal to the whole file's.
    #[test]
    fn torn_xdf_keeps_a_prefix(channels in 1usize..4, samples in 2usize..12, at in any::<Index>()) {
        let base = small_xdf(channels, samples);
        let full = xdf::parse(&base, Path::new("g.xdf")).expect("generated XDF parses");
        // Past the magic and the FileHeader chunk (short: 1 + 1 length bytes, then its length).
        prop_assert_eq!(base[4], 1);
        let header_end = 4 + 2 + base[5] as usize;
        let cut = header_end + at.index(base.len() - header_end);
        let mut warnings = Vec::new();
        let part = xdf::parse_reporting(
            &base[..cut],
            Path::new("g.xdf"),
            &xdf::ParseOptions::default(),
            &mut warnings,
        )
        .expect("a torn XDF keeps its whole chunks");
        check_consistent(&part);
        prop_assert!(warnings.len() <= 1, "{:?}", warnings);
        for (p, f) in part.streams.iter().zip(&full.streams) {
            let n = p.sample_count();
            prop_assert!(n <= f.sample_count());
            for c in 0..p.info.channel_count() {
                if let (Some(pc), Some(fc)) = (p.channel(c), f.channel(c)) {
                    prop_assert_eq!(pc, &fc[..n]);
                }
            }
        }
    }
}

proptest! {
    // Real files are larger (a 64-signal header is 16.6 kB): fewer cases keep this quick.
    #![proptest_config(config(CASES / 2))]

    #[test]
    fn mutated_real_edf_header(mutations in mutations()) {
        if let Some(base) = real_edf_prefix(2) {
            parse_edf(&mutate(base, &mutations, 65 * 256));
        }
    }

    #[test]
    fn mutated_real_xdf(which in any::<bool>(), mutations in mutations()) {
        let name = if which { "minimal.xdf" } else { "empty_streams.xdf" };
        if let Some(base) = real_xdf(name) {
            let len = base.len();
            parse_xdf(&mutate(base, &mutations, len));
        }
    }
}
