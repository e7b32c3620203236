// Shared by both targets (included with `include!`, each target being its own crate): what an
// `Ok` recording must satisfy, so the fuzzer finds inconsistent results as well as panics.

fn check_consistent(recording: &neurostream::io::Recording) {
    for stream in &recording.streams {
        if let neurostream::io::StreamData::Signal { samples, values } = &stream.data {
            assert_eq!(*samples, stream.sample_count());
            assert_eq!(values.len(), samples * stream.info.channel_count());
        }
    }
}
