//! EDF, EDF+ and BDF reader on arbitrary bytes: `Ok` or `Err`, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("check.rs");

fuzz_target!(|data: &[u8]| {
    if let Ok(recording) = neurostream::io::edf::parse(data, std::path::Path::new("fuzz.edf")) {
        check_consistent(&recording);
    }
});
