//! Model loader on arbitrary text: `Model::from_json` (which runs `Model::validate`) returns
//! `Ok` or `Err`, never a panic; an `Ok` model survives a save/load round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(model) = neurostream::model::Model::from_json(text, "fuzz.json") {
        let again = serde_json::to_string(&model).expect("a loaded model serializes");
        neurostream::model::Model::from_json(&again, "fuzz.json (round trip)")
            .expect("a model that loaded once loads again");
    }
});
