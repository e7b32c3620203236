//! XDF reader on arbitrary bytes: `Ok` or `Err`, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("check.rs");

fuzz_target!(|data: &[u8]| {
    if let Ok(recording) = neurostream::io::xdf::parse(data, std::path::Path::new("fuzz.xdf")) {
        check_consistent(&recording);
    }
});
